--- Fuzz checker for response handling: status, headers and body bytes go
-- through protocol.create_result / deactivate_result (and the Retry-After
-- reader and retry policy behind them). They must return a result or an error
-- object of a known kind and never raise.
--
-- Input: byte 1 picks the status, byte 2 the body form (raw bytes, or a
-- JSON template around the bytes: shortenedUrl, code/message envelope ...),
-- byte 3 how many headers; then header values and the body take the rest.
local protocol = require "portone.link.protocol"
local retry = require "portone.link.retry"
local F = require "fuzzlib"

local NOW = 1700000000
local STATUSES = { 200, 201, 204, 299, 300, 302, 400, 401, 404, 409, 429, 500, 502, 503, 504,
  100, 0, -1, 999, 200.5, 1e300, 2^63, math.mininteger, 0 / 0 }
local RESULT_KINDS = { http = true, api = true, decode = true }
local HEADER_NAMES = { "retry-after", "content-type", "retry-after", "x-other" }
local RETRY_AFTERS = { "0", "1", "30", "31", " 2 ", "-1", "1.5", "99999999999999999999999",
  "Wed, 21 Oct 2015 07:28:00 GMT", "Sun, 06 Nov 2094 08:49:37 GMT", "Mon, 99 Foo 2015 99:99:99 GMT",
  "Thu, 01 Jan 1970 00:00:00 GMT", "" }

local function json_str(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return ("\\u%04x"):format(c:byte()) end) .. '"'
end

local function body_from(r, rest)
  local form = r:byte() % 10
  if form == 0 then return '{"shortenedUrl":' .. json_str("https://impay.link/" .. rest) .. "}" end
  if form == 1 then return '{"shortenedUrl":' .. json_str(rest) .. "}" end
  if form == 2 then return '{"code":' .. r:pick({ "0", "-1", "1", '"0"', '"-1"', "null", "1e400",
    "[]", '"x"', "0.5" }) .. ',"message":' .. json_str(rest) .. "}" end
  if form == 3 then
    return '{"code":0,"message":null,"response":{"shortenedUrl":' .. json_str(rest) .. "}}"
  end
  if form == 4 then return ("["):rep(r:byte() * 8) .. rest end
  if form == 5 then return "{}" end
  if form == 6 then return "" end
  return rest
end

local function check_result_err(err, status, where)
  F.check_error_object(err, RESULT_KINDS, where)
  local is2xx = type(status) == "number" and status >= 200 and status < 300
  if not is2xx then
    assert(err.kind == "http" and err.status == status or (status ~= status and err.kind == "http"),
      where .. ": a non-2xx status must give an http error with that status")
  end
  if err.retry_after ~= nil then
    assert(type(err.retry_after) == "number" and err.retry_after >= 0, where .. ": bad retry_after")
  end
  -- the policy must cope with whatever the decoder produced
  for _, op in ipairs({ "create", "deactivate" }) do
    local d = retry.delay(op, err, 1, { retries = 2, base = 0.25, cap = 8, retry_after_max = 30,
      random = function() return 0.5 end })
    assert(d == nil or (type(d) == "number" and d == d and d >= 0 and d <= 30),
      where .. ": retry.delay gave " .. tostring(d))
  end
end

return function(data)
  local r = F.reader(data)
  local status = STATUSES[r:byte() % #STATUSES + 1]
  if r:chance(4) then status = r:u16() % 700 end
  local bodyform = r
  local headers = {}
  for _ = 1, r:byte() % 4 do
    local name = r:pick(HEADER_NAMES)
    headers[name] = r:chance(2) and r:pick(RETRY_AFTERS) or r:bytes(40)
  end
  local rest = data:sub(r.i)
  local body = body_from(bodyform, rest)
  if r:chance(16) then body = nil end

  local ok, res, err = pcall(protocol.create_result, status, body, headers, NOW)
  assert(ok, "create_result raised: " .. tostring(res))
  if res then
    assert(err == nil, "create_result: result and error")
    assert(type(status) == "number" and status >= 200 and status < 300, "create_result: success on non-2xx")
    assert(type(res.url) == "string" and res.url:find("^[Hh][Tt][Tt][Pp][Ss]?://"), "create_result: url")
    assert(protocol.valid_id(res.id), "create_result: invalid id " .. tostring(res.id))
    assert(res.url:sub(-#res.id) == res.id or res.url:find(res.id, 1, true), "create_result: id not in url")
    assert(res.status == status, "create_result: status")
  else
    check_result_err(err, status, "create_result")
  end

  ok, res, err = pcall(protocol.deactivate_result, status, body, headers, NOW)
  assert(ok, "deactivate_result raised: " .. tostring(res))
  if res then
    assert(res == true and err == nil, "deactivate_result: odd success")
    assert(type(status) == "number" and status >= 200 and status < 300,
      "deactivate_result: success on non-2xx")
  else
    check_result_err(err, status, "deactivate_result")
  end

  -- the smaller readers on the same bytes
  for _, v in pairs(headers) do
    local ok2, secs = pcall(protocol.parse_retry_after, v, NOW)
    assert(ok2, "parse_retry_after raised: " .. tostring(secs))
    assert(secs == nil or (type(secs) == "number" and secs == secs and secs >= 0),
      "parse_retry_after gave " .. tostring(secs))
  end
  local ok3, id, ierr = pcall(protocol.link_id, rest)
  assert(ok3, "link_id raised: " .. tostring(id))
  if id then
    assert(protocol.valid_id(id), "link_id: invalid id")
  else
    F.check_error_object(ierr, { validation = true }, "link_id")
  end
  local info = { kind = r:pick({ "timeout", "transport", nil }), message = r:chance(2) and rest or nil,
    curl_code = r:byte(), sent = r:chance(2), too_large = r:chance(8) or nil }
  local ok4, terr = pcall(protocol.transport_error, r:chance(8) and rest or info)
  assert(ok4, "transport_error raised: " .. tostring(terr))
  F.check_error_object(terr, { transport = true, timeout = true }, "transport_error")
end
