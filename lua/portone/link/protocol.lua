--- Request building and response decoding for the PortOne link API.
-- Pure functions shared by every transport (curl easy, curl multi, ngx
-- cosockets): no I/O here, so the transports never duplicate any of it.
--
-- `cfg` is the client's checked configuration:
-- `{base_url = "https://api.iamport.co", user_agent = "portone-link/...", token = "..."|nil}`
-- (`token` is the already-resolved string for this call, never a function).
-- @module portone.link.protocol
local cjson = require "cjson"
local errors = require "portone.link.errors"

local M = {}

--- Path of the link API under the base URL.
M.PATH = "/api/supplements/v1/link/payment"
--- Largest response body kept in an error (bytes).
M.BODY_LIMIT = 512

local decode = cjson.decode

-- Header values must not carry CR, LF or any other control character: a CR/LF
-- would let a value start a header of its own (header injection).
local function bad_header_value(v)
  return type(v) ~= "string" or v:find("[%c\127]") ~= nil
end
--- True when `v` cannot be a header value: not a string, or it holds CR,
-- LF or another control character (header injection).
-- @function bad_header_value
-- @param v any value
-- @treturn boolean
M.bad_header_value = bad_header_value

--- True when `s` is a valid link id: `[A-Za-z0-9_-]{1,64}`.
-- @param s any value
-- @treturn boolean
function M.valid_id(s)
  return type(s) == "string" and #s >= 1 and #s <= 64 and s:find("^[%w_-]+$") ~= nil
    -- %w is locale-dependent in C; also refuse bytes >= 0x80 explicitly.
    and s:find("[\128-\255]") == nil
end

--- The host of PortOne's short links.
M.LINK_HOST = "impay.link"

--- The hosts whose URLs `deactivate` accepts for a client on `base_url`:
-- `impay.link`, and the base URL's own host (with its port) unless it is
-- PortOne's API, for a sandbox that serves its links itself.
-- @tparam string base_url the client's checked base URL
-- @treturn table a set of lower-case `host[:port]` names
function M.link_hosts(base_url)
  local hosts = { [M.LINK_HOST] = true }
  local auth = type(base_url) == "string" and base_url:match("^[Hh][Tt][Tt][Pp][Ss]?://([^/?#]+)")
  if auth then
    auth = auth:lower()
    if auth ~= "api.iamport.co" and auth ~= "api.iamport.co:443" then hosts[auth] = true end
  end
  return hosts
end

local function bad_id()
  return nil, errors.validation({ {
    field = "id", code = "bad_id",
    message = "link id must match [A-Za-z0-9_-]{1,64}, or be a link URL on "
      .. M.LINK_HOST .. " (https://" .. M.LINK_HOST .. "/ID)",
  } })
end

--- The id of a link given as a URL (`https://impay.link/4bdf239e`) or an id.
-- A URL must be exactly `http(s)://HOST/ID` (one trailing `/` allowed; no
-- user info, query, fragment, dot segments or escapes) on one of `hosts`
-- (`link_hosts`; default: `impay.link` only). Anything else is `bad_id`:
-- taking the last segment of any URL would deactivate links named in URLs
-- that point somewhere else.
-- @tparam string url_or_id the URL or the id
-- @tparam[opt] table hosts allowed lower-case `host[:port]` names
-- @return the id, or `nil, err` (kind `validation`, field `id`)
function M.link_id(url_or_id, hosts)
  local id = url_or_id
  if type(id) ~= "string" then return bad_id() end
  if id:find("://", 1, true) then
    local scheme, auth, rest = id:match("^([Hh][Tt][Tt][Pp][Ss]?)://([%w%.%-:%[%]]+)/(.*)$")
    if not auth then return bad_id() end
    hosts = hosts or { [M.LINK_HOST] = true }
    local low = auth:lower()
    if not hosts[low] then
      -- the scheme's default port spelled out is the same host (https on
      -- 80, or a port after a host that has one, is not)
      local h, port = low:match("^(.-):(%d+)$")
      local default = #scheme == 5 and "443" or "80"
      local one_host = h and (h:find("^%[[^%]]*%]$") or not h:find(":", 1, true))
      if not (one_host and port == default and hosts[h]) then return bad_id() end
    end
    id = rest:match("^([^/]*)/?$")
    if not id then return bad_id() end
  end
  if not M.valid_id(id) then return bad_id() end
  return id
end

--- The request headers, as `"Name: value"` strings.
-- No Accept: the API's spec names only Content-Type, the published PortOne
-- clients send none or `*/*` (libcurl's default), and each header line is
-- work for libcurl on every request (README "Performance").
-- @tparam table cfg the client configuration
-- @tparam boolean with_body add Content-Type (create; a deactivate has no body)
-- @return the list, or `nil, err` when a value carries CR/LF
function M.headers(cfg, with_body)
  local h = {}
  if with_body then
    h[1] = "Content-Type: application/json;charset=UTF-8"
  end
  if cfg.user_agent then
    if bad_header_value(cfg.user_agent) then
      return nil, errors.validation({ { field = "user_agent", code = "header_injection",
        message = "user agent must not contain CR, LF or control characters" } })
    end
    h[#h + 1] = "User-Agent: " .. cfg.user_agent
  end
  if cfg.token ~= nil then
    if bad_header_value(cfg.token) or cfg.token == "" then
      -- the message never quotes the token
      return nil, errors.validation({ { field = "token", code = "header_injection",
        message = "token must be a non-empty string without CR, LF or control characters" } })
    end
    h[#h + 1] = "Authorization: Bearer " .. cfg.token
  end
  return h
end

local function encode_body(cfg, req, now)
  local enc = cfg.encode
  if not enc then
    local core = require "portone.link.core"
    enc = core.encode
  end
  local body, list = enc(req, now)
  if body then return body end
  return nil, errors.validation(list)
end

--- The create request: `{method = "POST", url =, headers =, body =}`.
-- @tparam table cfg the client configuration (`cfg.encode` may replace `core.encode`)
-- @tparam table req the request table (see `link.validate`)
-- @tparam number now unix seconds, for the expiry rule
-- @return the request, or `nil, err` (validation)
function M.create_request(cfg, req, now)
  local body, err = encode_body(cfg, req, now)
  if not body then return nil, err end
  local headers, herr = M.headers(cfg, true)
  if not headers then return nil, herr end
  return { method = "POST", url = cfg.base_url .. M.PATH, headers = headers, body = body }
end

--- The deactivate request: `{method = "PUT", url =, headers =}` (no body).
-- @tparam table cfg the client configuration
-- @tparam string url_or_id the link's URL or id (see `link_id`)
-- @return the request, or `nil, err` (validation: a bad id or header value)
function M.deactivate_request(cfg, url_or_id)
  local id, err = M.link_id(url_or_id, cfg.link_hosts or M.link_hosts(cfg.base_url))
  if not id then return nil, err end
  local headers, herr = M.headers(cfg, false)
  if not headers then return nil, herr end
  return { method = "PUT", url = cfg.base_url .. M.PATH .. "/" .. id, headers = headers }
end

-- Days from 1970-01-01 to a civil date (proleptic Gregorian; H. Hinnant's
-- algorithm), with math.floor so that it runs on 5.1 as well.
local function days_from_civil(y, m, d)
  local fl = math.floor
  if m <= 2 then y = y - 1 end
  local era = fl(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = fl((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + fl(yoe / 4) - fl(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local MONTHS = { jan = 1, feb = 2, mar = 3, apr = 4, may = 5, jun = 6,
                 jul = 7, aug = 8, sep = 9, oct = 10, nov = 11, dec = 12 }

local WEEKDAYS = { Mon = true, Tue = true, Wed = true, Thu = true, Fri = true, Sat = true, Sun = true }
local MONTH_DAYS = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

--- Longest `Retry-After` value read (bytes); a longer one is ignored. An
-- IMF-fixdate is 29 bytes; this leaves room for spaces and long numbers.
M.RETRY_AFTER_MAX_BYTES = 64

--- Seconds to wait from a `Retry-After` value: delta-seconds or an IMF-fixdate
-- (`Wed, 21 Oct 2015 07:28:00 GMT`, RFC 9110 §10.2.3). Strict and linear:
-- values over `RETRY_AFTER_MAX_BYTES` and dates that do not exist
-- (`99 Oct`, `31 Feb`, `25:00:00`) are refused.
-- @tparam string v the header value
-- @tparam number now unix seconds (for the date form)
-- @return seconds (>= 0), or nil when `v` is neither form
function M.parse_retry_after(v, now)
  if type(v) ~= "string" or #v > M.RETRY_AFTER_MAX_BYTES then return nil end
  local a = v:find("[^ \t]")
  if not a then return nil end
  local b = #v
  while b > a and (v:byte(b) == 32 or v:byte(b) == 9) do b = b - 1 end
  v = v:sub(a, b)
  if v:find("^%d+$") then
    return tonumber(v)
  end
  local wd, d, mon, y, hh, mm, ss = v:match("^(%a%a%a), (%d%d) (%a%a%a) (%d%d%d%d) (%d%d):(%d%d):(%d%d) GMT$")
  local m = mon and MONTHS[mon:lower()]
  if not m or not WEEKDAYS[wd] then return nil end
  d, y, hh, mm, ss = tonumber(d), tonumber(y), tonumber(hh), tonumber(mm), tonumber(ss)
  local leap = (y % 4 == 0 and y % 100 ~= 0) or y % 400 == 0
  local mdays = (m == 2 and leap) and 29 or MONTH_DAYS[m]
  if d < 1 or d > mdays or hh > 23 or mm > 59 or ss > 60 then return nil end
  local t = days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss
  local delta = t - (now or os.time())
  return delta > 0 and delta or 0
end

-- Decodes a JSON body; nil when it is not JSON or not an object.
local function json_object(body)
  if type(body) ~= "string" or body == "" then return nil end
  local ok, v = pcall(decode, body)
  if ok and type(v) == "table" then return v end
  return nil
end

-- A non-zero `code` in the JSON (a number, or a numeric string): the PortOne
-- envelope's way to fail with HTTP 200.
local function api_code(obj)
  local c = obj.code
  if c == nil or c == cjson.null then return nil end
  local n = tonumber(c)
  if n == 0 then return nil end
  -- lua-cjson on 5.4 decodes -1 as -1.0; keep integral codes integers.
  if type(c) == "number" and math.tointeger then c = math.tointeger(c) or c end
  return c
end

local function api_message(obj)
  local msg = obj.message
  if type(msg) == "string" and msg ~= "" then return msg end
  return nil
end

local function http_error(status, body, headers, now)
  local obj = json_object(body)
  local msg = "HTTP " .. tostring(status)
  local fields = { status = status, body = errors.cut(body, M.BODY_LIMIT) }
  if obj then
    local am = api_message(obj)
    if am then msg = msg .. ": " .. am end
    local c = api_code(obj)
    if c ~= nil then fields.code = c end
  end
  local ra = headers and headers["retry-after"]
  if ra then fields.retry_after = M.parse_retry_after(ra, now) end
  return errors.new("http", msg, fields)
end

local function is_2xx(status)
  return type(status) == "number" and status >= 200 and status < 300
end

-- The JSON object of a 2xx answer, or nil, err: `decode` when the body is
-- not a JSON object, `api` when it carries a non-zero `code`.
local function api_object(op, status, body)
  local obj = json_object(body)
  if not obj then
    return nil, errors.new("decode", op .. ": response is not a JSON object",
      { status = status, body = errors.cut(body, M.BODY_LIMIT) })
  end
  local c = api_code(obj)
  if c ~= nil then
    return nil, errors.new("api", api_message(obj) or ("API error code " .. tostring(c)),
      { status = status, code = c, body = errors.cut(body, M.BODY_LIMIT) })
  end
  return obj
end

--- Decodes a create response.
-- @tparam number status the HTTP status
-- @tparam string body the response body
-- @tparam table headers lower-case name -> value
-- @tparam[opt] number now unix seconds, to turn a `Retry-After` date into
--   seconds (`os.time()` when nil)
-- @return `{url =, id =, status =}`, or `nil, err` (kind `http`, `api` or `decode`)
function M.create_result(status, body, headers, now)
  if not is_2xx(status) then return nil, http_error(status, body, headers, now) end
  local obj, err = api_object("create", status, body)
  if not obj then return nil, err end
  local url = obj.shortenedUrl
  if type(url) ~= "string" or not url:find("^[Hh][Tt][Tt][Pp][Ss]?://[^%s%c]+$") then
    return nil, errors.new("decode", "create: response has no shortenedUrl",
      { status = status, body = errors.cut(body, M.BODY_LIMIT) })
  end
  -- the server names the link: its last path segment is the id, whatever
  -- the host (deactivate is the strict one); a URL with no host or no path
  -- has none (the host of "https://sandbox" is no id)
  local path = url:match("^[^:]+://[^/?#]+(/[^?#]*)")
  local id = path and path:match("/([^/]+)/?$")
  if not M.valid_id(id) then
    return nil, errors.new("decode", "create: shortenedUrl has no valid link id",
      { status = status, body = errors.cut(body, M.BODY_LIMIT) })
  end
  return { url = url, id = id, status = status }
end

--- Decodes a deactivate response. Success answers `{}`; an empty 2xx body is
-- success too, and so is a second deactivate of the same link.
-- @tparam number status the HTTP status
-- @tparam string body the response body
-- @tparam table headers lower-case name -> value
-- @tparam[opt] number now unix seconds, as for `create_result`
-- @return `true`, or `nil, err` (kind `http`, `api` or `decode`)
function M.deactivate_result(status, body, headers, now)
  if not is_2xx(status) then return nil, http_error(status, body, headers, now) end
  if type(body) ~= "string" or not body:find("%S") then return true end
  local obj, err = api_object("deactivate", status, body)
  if not obj then return nil, err end
  return true
end

--- How many times one transport call sent the request: what the transport
-- says, else (a transport without the count) once when it got an answer or
-- did not say it sent nothing.
function M.sends_of(status, info, n)
  if status then return type(n) == "number" and n or 1 end
  if type(info) == "table" and type(info.sends) == "number" then return info.sends end
  if type(info) == "table" and info.sent == false then return 0 end
  return 1
end

--- How many of a transport call's k sends got no answer: all of them after
-- a failure, all but the answered last one after an answer.
function M.unanswered_of(status, k)
  if status then return math.max(k - 1, 0) end   -- a transport may say 0 sends
  return k
end

--- An error object from a transport failure.
-- @param info what the transport returned after `nil`: a table
--   `{kind = "transport"|"timeout", message =, curl_code =, sent =, too_large =, permanent =}`
--   or a message
-- @return the error (kind `timeout` or `transport`; `sent` is true unless
--   the transport said `sent = false`)
function M.transport_error(info)
  info = type(info) == "table" and info or { message = tostring(info) }
  local kind = info.kind == "timeout" and "timeout" or "transport"
  return errors.new(kind, info.message or kind, {
    curl_code = info.curl_code,
    sent = info.sent ~= false,
    too_large = info.too_large or nil,
    -- a transport's word that retrying cannot help (say, no cosockets in
    -- this nginx phase)
    permanent = info.permanent or nil,
  })
end

return M
