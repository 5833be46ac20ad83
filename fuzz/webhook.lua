--- Fuzz checker for webhook.parse(body, content_type): a notice or an error
-- object (decode / validation), never a raise; a notice holds only clean,
-- capped fields.
--
-- Input: byte 1 picks the content type (none, JSON, form, odd ones, or the
-- next bytes), byte 2 the body form (raw, or a JSON / form template around
-- the bytes); the rest is the body.
local webhook = require "portone.link.webhook"
local F = require "fuzzlib"

local TYPES = { false, "application/json", "application/x-www-form-urlencoded",
  "application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.api+json",
  "text/plain", "multipart/form-data; boundary=x", "", ";", " application/json" }
local KINDS = { decode = true, validation = true }
local CODES = { missing = true, type = true, too_long = true, encoding = true, format = true, enum = true }

local function json_str(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return ("\\u%04x"):format(c:byte()) end) .. '"'
end

local function body_from(r, rest)
  local form = r:byte() % 8
  local status = r:pick({ "paid", "ready", "cancelled", "failed", "PAID", "", rest })
  if form == 0 then
    return '{"imp_uid":' .. json_str(rest) .. ',"merchant_uid":"m-1","status":' .. json_str(status) .. "}"
  elseif form == 1 then
    return "imp_uid=imp_1&merchant_uid=" .. rest .. "&status=" .. status
  elseif form == 2 then
    return '{"imp_uid":' .. r:pick({ "123", "1.5", "-1", "1e300", "null", "[]", "{}", "true" })
      .. ',"merchant_uid":' .. json_str(rest) .. ',"status":"paid","cancellation_id":'
      .. r:pick({ "null", '""', '"c1"', "7" }) .. "}"
  elseif form == 3 then
    return "imp_uid=" .. rest .. "&imp_uid=" .. rest .. "&status=paid&merchant_uid=m"
  end
  return rest
end

return function(data)
  local r = F.reader(data)
  local ct = TYPES[r:byte() % (#TYPES + 1) + 1]
  if ct == nil then ct = r:bytes(40) end
  if ct == false then ct = nil end
  local rest = data:sub(r.i + 1)
  local body = body_from(r, rest)
  -- max_bytes below 1 is a programmer error (raises), not a case to fuzz
  local opts = r:chance(8) and { max_bytes = r:u16() + 1 } or nil

  local ok, notice, err = pcall(webhook.parse, body, ct, opts)
  assert(ok, "webhook.parse raised: " .. tostring(notice))
  if notice then
    assert(err == nil, "notice and error")
    for k, v in pairs(notice) do
      assert(k == "imp_uid" or k == "merchant_uid" or k == "status" or k == "cancellation_id",
        "notice has an extra key " .. tostring(k))
      assert(type(v) == "string" and #v > 0 and webhook._clean_utf8(v),
        "notice." .. k .. " is not clean text")
      assert(utf8.len(v), "notice." .. k .. " is not UTF-8")
    end
    assert(notice.imp_uid and #notice.imp_uid <= 64 and notice.imp_uid:find("^[%w_-]+$"), "notice.imp_uid")
    assert(notice.merchant_uid and #notice.merchant_uid <= 256, "notice.merchant_uid")
    assert(webhook.STATUSES[notice.status], "notice.status")
    assert(notice.cancellation_id == nil or #notice.cancellation_id <= 128, "notice.cancellation_id")
    assert(#body <= (opts and opts.max_bytes or webhook.MAX_BYTES), "a body over the cap was read")
  else
    F.check_error_object(err, KINDS, "webhook.parse")
    if err.kind == "validation" then F.check_error_list(err.errors, CODES, "webhook.parse") end
  end
  -- a nil body is an error, not a raise
  local ok2, n2, e2 = pcall(webhook.parse, nil, ct)
  assert(ok2 and n2 == nil and e2 and e2.kind == "decode", "parse(nil) must return a decode error")
end
