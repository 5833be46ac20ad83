--- What the portone-link commands share: argument parsing, reading JSON,
-- the client options, output and exit codes.
--
-- Exit codes: 0 everything succeeded, 1 some request failed, 2 usage or
-- input error (bad flag, unreadable file, unparsable JSON).
-- The API token comes from the environment (PORTONE_LINK_TOKEN; the older
-- name PORTONE_TOKEN still works, with a warning) and never from a flag:
-- command lines end up in shell history and `ps`.
local cjson = require "cjson.safe"

local M = {}

M.OK, M.FAILED, M.USAGE = 0, 1, 2

--- Flags every networked command takes, for --help texts.
M.CLIENT_HELP = [[
  --base-url URL   API base URL (default https://api.iamport.co, or
                   $PORTONE_LINK_BASE_URL); plain http only to loopback
  --timeout S      seconds per request (default 10)
  --cainfo FILE    CA bundle (PEM) to trust for https, instead of the system one
  --insecure-http  allow plain http to a host that is not loopback (payment
                   data then travels unencrypted)
  --json           machine-readable output on stdout
  --help           this text

The bearer token, if any, is read from $PORTONE_LINK_TOKEN (never a flag):
a PortOne REST V1 access token, for accounts where the link API asks for one.
]]

--- Client flags: name -> kind.
M.CLIENT_FLAGS = {
  ["--base-url"] = "string", ["--timeout"] = "number", ["--cainfo"] = "string",
  ["--json"] = "bool", ["--insecure-http"] = "bool",
}

--- Parses args against `flags` (name -> "string" | "number" | "int" |
-- "bool"). Accepts `--name value` and `--name=value`; `-` alone and words
-- not starting with `--` are positional; `--` ends the flags.
-- @return opts (keys without dashes, `-` as `_`), positional list; or nil, message
function M.parse(args, flags)
  local o, pos = {}, {}
  local i, only_pos = 1, false
  while i <= #args do
    local a = args[i]
    if only_pos or a == "-" or a:sub(1, 1) ~= "-" then
      pos[#pos + 1] = a
    elseif a == "--" then
      only_pos = true
    elseif a == "--help" or a == "-h" then
      o.help = true
    else
      local name, value = a:match("^(%-%-[%w-]+)=(.*)$")
      name = name or a
      if name == "--token" then
        return nil, "there is no --token flag (it would show in ps and shell history):"
          .. " set PORTONE_LINK_TOKEN in the environment"
      end
      local kind = flags[name]
      if not kind then return nil, "unknown option " .. name end
      local key = name:sub(3):gsub("-", "_")
      if kind == "bool" then
        if value ~= nil then return nil, name .. " takes no value" end
        o[key] = true
      else
        if value == nil then
          i = i + 1
          value = args[i]
          if value == nil then return nil, name .. " needs a value" end
        end
        if kind == "number" or kind == "int" then
          local n = tonumber(value)
          if not n or n <= 0 or n ~= n or n == math.huge or (kind == "int" and n % 1 ~= 0) then
            return nil, name .. " needs a positive " .. (kind == "int" and "integer" or "number")
              .. ", got '" .. value .. "'"
          end
          value = kind == "int" and math.floor(n) or n
        end
        o[key] = value
      end
    end
    i = i + 1
  end
  return o, pos
end

--- Reads a whole file, or stdin for "-", without the UTF-8 byte order
-- mark some editors put first (JSON parsers may ignore it, RFC 8259 §8.1;
-- lua-cjson calls it an invalid token).
-- @return the text, or nil, message
function M.read_all(path)
  local s
  if path == "-" then
    s = io.stdin:read("*a")
  else
    local f, err = io.open(path, "rb")
    if not f then return nil, "cannot read " .. tostring(err) end
    s = f:read("*a")
    f:close()
  end
  s = s or ""
  if s:sub(1, 3) == "\239\187\191" then s = s:sub(4) end
  return s
end

--- Decodes one JSON object.
-- @return the table, or nil, message
function M.decode_object(text)
  local v, err = cjson.decode(text)
  if v == nil then return nil, "invalid JSON: " .. tostring(err) end
  if type(v) ~= "table" then return nil, "a JSON object is expected, got " .. type(v) end
  return v
end

--- Makes the client from the parsed flags and the environment.
-- @return client, or nil, message (a bad option)
function M.client(o, extra)
  local link = require "portone.link"
  local token = M.token()
  local base = o.base_url or os.getenv("PORTONE_LINK_BASE_URL")
  if base == "" then base = nil end
  local opts = {
    base_url = base, token = token, timeout = o.timeout, cainfo = o.cainfo,
    insecure_http = o.insecure_http or nil,
  }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local ok, c = pcall(link.new, opts)
  if not ok then
    local msg = tostring(c):gsub("^[^:]*:%d+: ", ""):gsub("^portone%.link%.new: ", "")
    -- the library's hint names its option; the CLI's is a flag
    msg = msg:gsub("set insecure_http = true", "pass --insecure-http"):gsub("option 'base_url'", "--base-url")
    return nil, msg
  end
  return c
end

--- The API token from the environment: $PORTONE_LINK_TOKEN, or the
-- deprecated $PORTONE_TOKEN (with a warning on stderr); nil when unset.
function M.token()
  local token = os.getenv("PORTONE_LINK_TOKEN")
  if token == nil or token == "" then
    token = os.getenv("PORTONE_TOKEN")
    if token == "" then token = nil end
    if token then
      io.stderr:write("portone-link: PORTONE_TOKEN is deprecated, set PORTONE_LINK_TOKEN instead\n")
    end
  end
  return token
end

--- One error for a person: each fact once (`HTTP 404: no such link: x
-- (code -1)`), a validation error as its list of problems.
function M.describe_error(err)
  if type(err) ~= "table" then return tostring(err) end
  if err.kind == "validation" and type(err.errors) == "table" and #err.errors > 0 then
    local lines = { ("the request has %d problem%s:"):format(#err.errors, #err.errors == 1 and "" or "s") }
    for _, e in ipairs(err.errors) do
      local field = e.field ~= "" and e.field or "(request)"
      lines[#lines + 1] = ("  %s: %s [%s]"):format(field, e.message, e.code)
    end
    return table.concat(lines, "\n")
  end
  local msg = tostring(err.message or err.kind)
  if err.status and not msg:find("HTTP " .. tostring(err.status), 1, true) then
    msg = msg .. " (HTTP " .. tostring(err.status) .. ")"
  end
  if err.code ~= nil and not msg:find("code " .. tostring(err.code), 1, true) then
    msg = msg .. " (code " .. tostring(err.code) .. ")"
  end
  if err.kind and err.kind ~= "http" and err.kind ~= "api" then msg = err.kind .. ": " .. msg end
  return msg
end

--- True when a failed create may still have made a link
-- (`portone.link.errors.may_exist`).
M.may_exist = require("portone.link.errors").may_exist

--- The fields of an error object that go into JSON output (no secrets:
-- errors never carry request headers).
function M.error_table(err)
  if type(err) ~= "table" then return { kind = "error", message = tostring(err) } end
  local t = {}
  for _, k in ipairs({ "kind", "message", "status", "code", "curl_code", "retryable", "sent",
                       "attempts", "unanswered", "errors", "retry_after" }) do
    t[k] = err[k]
  end
  return t
end

-- The encoder of the output: a number JSON cannot hold (an error code of
-- 1e999 from a server reads back as inf) is written null, not a raise that
-- would lose the line's record.
local enc = cjson.new()
enc.encode_invalid_numbers("null")
enc.encode_sparse_array(true)

--- Encodes a value as JSON without lua-cjson's `\/` escape (URLs stay
-- readable and greppable). Every `/` that lua-cjson writes is escaped by its
-- own backslash (a literal backslash is written `\\`), so each `\/` in
-- its output is exactly one escaped slash. What cannot be encoded at all
-- (nesting too deep) becomes {"unencodable": reason}.
function M.json_encode(v)
  local s, err = enc.encode(v)
  if not s then s = enc.encode({ unencodable = tostring(err) }) end
  return (s:gsub("\\/", "/"))
end

--- Encodes a table as a JSON object with the keys in `order` first (in
-- that order; absent ones left out), then any others: records a person reads
-- start with what identifies them.
function M.json_object(t, order)
  local parts, seen = {}, {}
  for _, k in ipairs(order) do
    if t[k] ~= nil then
      parts[#parts + 1] = enc.encode(k) .. ":" .. M.json_encode(t[k])
      seen[k] = true
    end
  end
  local rest = {}
  for k in pairs(t) do if not seen[k] then rest[#rest + 1] = k end end
  table.sort(rest)
  for _, k in ipairs(rest) do parts[#parts + 1] = enc.encode(k) .. ":" .. M.json_encode(t[k]) end
  return "{" .. table.concat(parts, ",") .. "}"
end

--- Writes one JSON value and a newline to `out` (default stdout).
function M.json_line(v, out)
  return M.write_line(M.json_encode(v), out)
end

--- Writes one line to `out` (default stdout) and flushes it: true, or nil
-- and the reason (a closed pipe, a full disk), for callers that must not
-- lose what they print.
function M.write_line(text, out)
  out = out or io.stdout
  local ok, err = out:write(text, "\n")
  if ok then ok, err = out:flush() end
  return ok and true or nil, err
end

--- Prints a usage error and returns the usage exit code.
function M.usage_error(cmd, msg, usage)
  io.stderr:write("portone-link ", cmd, ": ", msg, "\n")
  if usage then io.stderr:write(usage) end
  return M.USAGE
end

--- True when stderr is a terminal ($PORTONE_LINK_PROGRESS=1/0 overrides).
function M.stderr_is_tty()
  local force = os.getenv("PORTONE_LINK_PROGRESS")
  if force == "1" then return true end
  if force == "0" then return false end
  local r = os.execute("test -t 2")
  return r == true or r == 0
end

return M
