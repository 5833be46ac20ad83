--- portone.link.webhook: reads PortOne's V1 webhook (the POST to `notice_url`).
--
-- PortOne sends `imp_uid`, `merchant_uid`, `status` and sometimes
-- `cancellation_id`, as JSON or as a form. The webhook is not signed: anyone
-- can post one. So `parse` only checks the shape and hands back the known
-- fields; trust comes from looking the payment up (`portone.link.rest`,
-- `rest:verify`), never from the notice itself. A notice may arrive twice and
-- in any order, so handlers must be idempotent.
--
--     local notice, err = link.webhook.parse(body, content_type)
--     --> {imp_uid =, merchant_uid =, status =, cancellation_id = (or nil)}
--     --> nil, err  (err.kind == "decode" or "validation")
--
-- @module portone.link.webhook
local errors = require "portone.link.errors"

local M = {}

--- Default cap on the body, in bytes. A real notice is ~150 bytes.
M.MAX_BYTES = 16 * 1024

--- The statuses V1 sends.
M.STATUSES = { paid = true, ready = true, cancelled = true, failed = true }

-- field -> {max bytes, required, pattern (anchored) or nil}. imp_uid goes into
-- a REST path later, so it gets the same character rule as link ids.
local FIELDS = {
  imp_uid = { max = 64, required = true, pattern = "^[%w_%-]+$" },
  merchant_uid = { max = 256, required = true },
  status = { max = 16, required = true },
  cancellation_id = { max = 128, required = false },
}
local ORDER = { "imp_uid", "merchant_uid", "status", "cancellation_id" }

-- True when s is valid UTF-8 with no control characters (C0, DEL, C1).
-- Written with string.byte so it runs the same on 5.1/LuaJIT and 5.4.
local function clean_utf8(s)
  local i, n = 1, #s
  local byte = string.byte
  while i <= n do
    local c = byte(s, i)
    if c < 0x80 then
      if c < 0x20 or c == 0x7f then return false end
      i = i + 1
    else
      local len, min
      if c >= 0xc2 and c <= 0xdf then len, min = 2, 0x80
      elseif c >= 0xe0 and c <= 0xef then len, min = 3, 0x800
      elseif c >= 0xf0 and c <= 0xf4 then len, min = 4, 0x10000
      else return false end
      if i + len - 1 > n then return false end
      local cp = c % (2 ^ (7 - len))
      for j = i + 1, i + len - 1 do
        local cc = byte(s, j)
        if cc < 0x80 or cc > 0xbf then return false end
        cp = cp * 64 + (cc - 0x80)
      end
      if cp < min or cp > 0x10ffff or (cp >= 0xd800 and cp <= 0xdfff) then return false end
      if cp >= 0x80 and cp <= 0x9f then return false end
      i = i + len
    end
  end
  return true
end
M._clean_utf8 = clean_utf8

local function unescape(s)
  s = s:gsub("+", " ")
  local bad = false
  s = s:gsub("%%(..?)", function(h)
    if #h == 2 and h:match("^%x%x$") then return string.char(tonumber(h, 16)) end
    bad = true
    return ""
  end)
  if bad then return nil end
  return s
end

-- Parses a form body into {name = value}; nil, message on malformed input.
-- A repeated known field is refused: two different imp_uids in one notice
-- would let whichever the handler reads first win.
local function parse_form(body)
  local out = {}
  if body == "" then return out end
  for pair in (body .. "&"):gmatch("([^&]*)&") do
    if pair ~= "" then
      local k, v = pair:match("^([^=]*)=(.*)$")
      if not k then k, v = pair, "" end
      k, v = unescape(k), unescape(v)
      if not k or not v then return nil, "malformed percent-encoding" end
      if FIELDS[k] and out[k] ~= nil then return nil, "field '" .. k .. "' appears twice" end
      out[k] = v
    end
  end
  return out
end

local cjson

-- The keys of the top-level object of a JSON text that cjson accepted, in
-- one linear pass (cjson keeps only the last of repeated keys, so a repeat
-- is only visible here).
local function top_keys(body)
  local keys, depth, i, want_key = {}, 0, 1, false
  while true do
    i = body:find('[{}%[%],"]', i)
    if not i then return keys end
    local c = body:byte(i)
    if c == 34 then                        -- a string: find its end
      local j = i + 1
      while true do
        local q = body:find('["\\]', j)
        if not q then return keys end
        if body:byte(q) == 92 then j = q + 2 else j = q; break end
      end
      if depth == 1 and want_key then
        keys[#keys + 1] = cjson.decode(body:sub(i, j))
        want_key = false
      end
      i = j + 1
    else
      if c == 123 or c == 91 then
        depth = depth + 1
        want_key = depth == 1 and c == 123
      elseif c == 125 or c == 93 then
        depth = depth - 1
      elseif depth == 1 then               -- a comma between members
        want_key = true
      end
      i = i + 1
    end
  end
end

local function parse_json(body)
  cjson = cjson or require "cjson.safe"
  local t, err = cjson.decode(body)
  if t == nil then return nil, "invalid JSON: " .. tostring(err) end
  if type(t) ~= "table" then return nil, "JSON body is not an object" end
  if t[1] ~= nil or (next(t) == nil and body:match("^%s*%[")) then
    return nil, "JSON body is not an object"
  end
  -- A repeated known field is refused, as in a form body.
  local seen = {}
  for _, k in ipairs(top_keys(body)) do
    if FIELDS[k] then
      if seen[k] then return nil, "field '" .. k .. "' appears twice" end
      seen[k] = true
    end
  end
  return t
end

-- opts.max_bytes: a positive number (NaN, zero or a negative cap would
-- disable the cap or refuse everything: a programmer error).
local function max_bytes(opts, fname)
  local max = opts and opts.max_bytes
  if max == nil then return M.MAX_BYTES end
  if type(max) ~= "number" or max ~= max or max < 1 then
    error(("bad argument to '%s' (max_bytes must be a number >= 1)"):format(fname), 3)
  end
  return max
end

-- "application/json; charset=utf-8" -> "application/json"
local function media_type(ct)
  return (ct:match("^%s*([^;%s]+)") or ""):lower()
end

local function decode_error(message)
  return nil, errors.new("decode", "webhook: " .. message)
end

--- Parses a webhook body.
-- @tparam string body the raw request body (nil, e.g. a body nginx buffered to
--   a file, is an error, not a raise)
-- @tparam[opt] string content_type the request's Content-Type; JSON and
--   `application/x-www-form-urlencoded` are read, any other type is an
--   error; without one the body's first character decides.
-- @tparam[opt] table opts `{max_bytes = n}` (default `MAX_BYTES`)
-- @return notice table, or `nil, err` (`decode`: unreadable body;
--   `validation`: a missing or malformed field, listed in `err.errors`)
function M.parse(body, content_type, opts)
  if body ~= nil and type(body) ~= "string" then
    error(("bad argument #1 to 'parse' (string expected, got %s)"):format(type(body)), 2)
  end
  if content_type ~= nil and type(content_type) ~= "string" then
    error(("bad argument #2 to 'parse' (string expected, got %s)"):format(type(content_type)), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("bad argument #3 to 'parse' (table expected, got %s)"):format(type(opts)), 2)
  end
  local max = max_bytes(opts, "parse")
  if body == nil then return decode_error("no body") end
  if #body > max then
    return nil, errors.new("decode", ("webhook: body of %d bytes is over the %d-byte cap"):format(#body, max),
      { too_large = true })
  end

  local kind
  local mt = content_type and media_type(content_type)
  if mt == nil or mt == "" then
    kind = body:match("^%s*{") and "json" or "form"
  elseif mt == "application/json" or mt:match("^application/[%w.-]+%+json$") then
    kind = "json"
  elseif mt == "application/x-www-form-urlencoded" then
    kind = "form"
  else
    return decode_error("unsupported content type '" .. mt:sub(1, 64) .. "'")
  end

  local raw, perr
  if kind == "json" then raw, perr = parse_json(body) else raw, perr = parse_form(body) end
  if not raw then return decode_error(perr) end

  local notice, problems = {}, {}
  local function bad(field, code, message)
    problems[#problems + 1] = { field = field, code = code, message = message }
  end
  for _, name in ipairs(ORDER) do
    local rule, v = FIELDS[name], raw[name]
    if v == nil or v == "" or (cjson and v == cjson.null) then
      if rule.required then bad(name, "missing", "is required") end
    elseif type(v) == "number" and name ~= "status" and v == math.floor(v) and v >= 0 and v < 2^53 then
      -- a numeric id in JSON: keep it as its decimal string
      notice[name] = ("%.0f"):format(v)
    elseif type(v) ~= "string" then
      bad(name, "type", "must be a string")
    elseif #v > rule.max then
      bad(name, "too_long", ("is longer than %d bytes"):format(rule.max))
    elseif not clean_utf8(v) then
      bad(name, "encoding", "must be UTF-8 text without control characters")
    elseif rule.pattern and not v:match(rule.pattern) then
      bad(name, "format", "has characters outside [A-Za-z0-9_-]")
    elseif name == "status" and not M.STATUSES[v] then
      bad(name, "enum", "must be one of paid, ready, cancelled, failed")
    else
      notice[name] = v
    end
  end
  if #problems > 0 then
    local e = errors.validation(problems)
    e.message = "webhook: " .. e.message
    return nil, e
  end
  return notice
end

--- Reads the current request's body and Content-Type inside OpenResty and
-- parses it (`ngx.req.read_body` first; a body nginx spilled to a file is
-- read back only when it is under the cap).
-- @tparam[opt] table opts as for `parse`
function M.parse_ngx(opts)
  local ngx = _G.ngx
  assert(ngx and ngx.req, "parse_ngx needs OpenResty")
  local max = max_bytes(opts, "parse_ngx")
  local clen = tonumber(ngx.var.http_content_length or "")
  if clen and clen > max then
    return nil, errors.new("decode", ("webhook: body of %d bytes is over the %d-byte cap"):format(clen, max),
      { too_large = true })
  end
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if body == nil then
    local path = ngx.req.get_body_file()
    if path then
      local f = io.open(path, "rb")
      if f then body = f:read(max + 1); f:close() end
    end
  end
  return M.parse(body or "", ngx.var.content_type, opts)
end

return M
