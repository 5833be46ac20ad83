--- Fuzz checker for core.validate and core.encode.
--
-- The first byte picks how the input becomes a request table:
--   even: the rest is JSON, decoded with cjson.safe (what a caller that
--         forwards JSON would pass); a non-table result is skipped.
--   odd:  a structured generator starts from a valid request and applies
--         mutations chosen by the following bytes (wrong types, edge numbers,
--         bad UTF-8, RFC 3339 strings, deep / cyclic / sparse custom_data,
--         unknown and misspelt keys ...).
--
-- Invariants (a broken one raises, and the driver aborts):
--  - validate and encode agree: both accept, or both reject with equal lists;
--  - a rejection is a non-empty list of {field, code, message[, suggestion]}
--    with codes from the documented set;
--  - an accepted request encodes to {"payment_info": "<json>", "expired_at": N}
--    exactly; payment_info decodes back to the request minus the expiry
--    (numbers compared as the JSON reader sees them), expired_at is the
--    expiry as integer seconds (RFC 3339 converted) and lies after `now`;
--  - an accepted request obeys the field rules (checked again here in Lua);
--  - encoding twice gives the same bytes (the reused buffers leave no trace).
local core = require "portone.link.core"
local cjson = require "cjson"
local cjson_safe = require "cjson.safe"
local F = require "fuzzlib"

local NOW = 1700000000
-- fuzz/repro.lua sets PLINK_FUZZ_DUMP=1 to see the request of an input
local DUMP = os.getenv("PLINK_FUZZ_DUMP") and dofile("fuzz/dump.lua")

local PAY_METHODS = {}
for m in ([[card trans vbank phone applepay naverpay samsungpay samsung kpay
  kakaopay payco lpay ssgpay tosspay cultureland smartculture culturegift
  booknlife point wechat alipay unionpay pinpay ssgpay_bank skpay naverpay_card
  naverpay_point paypal toss_brandpay tosspay_card tosspay_money]]):gmatch("%S+") do
  PAY_METHODS[#PAY_METHODS + 1] = m
  PAY_METHODS[m] = true
end

local KEYS = { "title", "user_code", "amount", "merchant_uid", "name", "tax_free",
  "currency", "language", "buyer_name", "buyer_tel", "buyer_addr", "buyer_email",
  "buyer_postcode", "custom_data", "notice_url", "display_language", "pay_methods",
  "direct", "expired_at", "expire_at" }
local TYPOS = { "merchant_id", "titel", "amout", "expires_at", "paymethods", "Title",
  "buyer_phone", "", "custom data", "pay_method", "\0", "\255\254", "1" }

-- ------------------------------------------------------------ the generator

local gen_value

local function gen_string(r)
  local kind = r:byte() % 10
  if kind == 0 then return r:bytes(255) end                     -- raw bytes
  if kind == 1 then return ("가"):rep(r:byte() % 64) end         -- 3-byte UTF-8
  if kind == 2 then return ("a"):rep(r:u16() % 300) end
  if kind == 3 then return r:pick({ "", " ", "\0", "\127", "\194\128", "\237\160\128",
    "\192\175", "\244\144\128\128", "\240\159\152\128", "\"\\/", "a\nb" }) end
  if kind == 4 then return r:pick({ "ko", "en", "KRW", "usd", "imp123", "imp", "card",
    "INIpayTest", "https://h/x", "http://[::1]:8080/p", "a@b", "@b", "a@@b" }) end
  return r:bytes(24)
end

local function gen_number(r)
  return r:pick({ 0, 1, -1, 10000, 10000.0, 1.5, -0.0, 0.1, 2^53 - 1, 2^53, 2^53 + 2,
    9007199254740991, 9007199254740992, math.maxinteger, math.mininteger,
    1e300, -1e300, 1 / 0, -1 / 0, 0 / 0, 5e-324, 2^63, -(2^63), 253402300799,
    253402300800, NOW, NOW + 1, NOW + 0.5, r:u16(), r:u16() * 65536 + r:u16(),
    (r:u16() - 32768) / (r:byte() + 1) })
end

local function gen_rfc3339(r)
  local function d2(lo, hi) return ("%02d"):format(lo + r:byte() % (hi - lo + 1)) end
  local s = ("%04d"):format(1969 + r:byte() % 120 + (r:chance(16) and 7900 or 0))
    .. "-" .. d2(0, 13) .. "-" .. d2(0, 32) .. r:pick({ "T", "t", " " })
    .. d2(0, 24) .. ":" .. d2(0, 60) .. ":" .. d2(0, 61)
  if r:chance(4) then s = s .. "." .. ("%d"):format(r:u16()) end
  s = s .. r:pick({ "Z", "z", "+09:00", "-05:30", "+23:59", "+24:00", "-00:60", "", "+0900" })
  if r:chance(16) then s = s:sub(1, r:byte() % (#s + 1)) end
  return s
end

local function gen_table(r, depth, pool)
  local t = {}
  local shape = r:byte() % 8
  local n = r:byte() % 6
  if shape <= 2 then                                   -- array
    for i = 1, n do t[i] = gen_value(r, depth + 1, pool) end
  elseif shape <= 5 then                               -- object
    for _ = 1, n do t[gen_string(r)] = gen_value(r, depth + 1, pool) end
  elseif shape == 6 then                               -- sparse / odd keys
    t[1] = 1; t[r:byte() % 5 + 2] = 2
    if r:chance(2) then t[r:pick({ 1.5, true, 0, -1, "k", 2^53 })] = 3 end
  else                                                 -- deep chain
    local cur = t
    for _ = 1, r:byte() % 40 do cur.x = {}; cur = cur.x end
  end
  pool[#pool + 1] = t
  if r:chance(16) and #pool > 0 then t.back = r:pick(pool) end   -- cycles, sharing
  return t
end

function gen_value(r, depth, pool)
  depth = depth or 0
  pool = pool or {}
  local k = r:byte() % (depth > 4 and 7 or 9)
  if k == 0 then return gen_string(r) end
  if k == 1 then return gen_number(r) end
  if k == 2 then return r:chance(2) end
  if k == 3 then return cjson.null end
  if k == 4 then return gen_rfc3339(r) end
  if k == 5 then return r:pick({ print, io.stdout, coroutine.create(print), cjson.null }) end
  if k == 6 then return gen_string(r) end
  return gen_table(r, depth, pool)
end

local function valid_request(r)
  local req = {
    title = "Order 1042", user_code = "imp68124833", amount = 10000,
    merchant_uid = "order-1042", name = "Blue mug", currency = "KRW",
    buyer_tel = "010-1234-5678", expired_at = NOW + 3600,
    pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "Card" } },
  }
  local opt = r:byte()
  if opt & 1 ~= 0 then req.tax_free = 0; req.language = "ko"; req.display_language = "en" end
  if opt & 2 ~= 0 then
    req.buyer_name = "홍길동"; req.buyer_addr = "서울"; req.buyer_email = "a@b.kr"
    req.buyer_postcode = "04524"; req.notice_url = "https://shop.example/hook"
  end
  if opt & 4 ~= 0 then req.custom_data = gen_value(r) end
  if opt & 8 ~= 0 then req.direct = { channelKey = "channel-key-1", pay_method = "kakaopay" } end
  if opt & 16 ~= 0 then
    req.pay_methods[2] = { channelKey = "ck", pay_method = PAY_METHODS[r:byte() % 31 + 1], label = "두번째" }
  end
  if opt & 32 ~= 0 then req.expired_at = nil; req.expire_at = "2030-01-01T00:00:00+09:00" end
  return req
end

local function mutate(r, req)
  local where = r:byte() % 6
  local target, key = req
  if where == 0 and type(req.pay_methods) == "table" then
    target = req.pay_methods[r:byte() % 3 + 1]
    key = r:pick({ "pg", "channelKey", "pay_method", "label", "pgg", 1 })
  elseif where == 1 and type(req.direct) == "table" then
    target = req.direct
    key = r:pick({ "pg", "channelKey", "pay_method", "label" })
  elseif where == 2 then
    key = r:pick(TYPOS)
  else
    key = r:pick(KEYS)
  end
  if type(target) ~= "table" then return end
  local v
  local how = r:byte() % 8
  if how == 0 then v = nil
  elseif how == 1 then v = gen_number(r)
  elseif how == 2 then v = gen_rfc3339(r)
  elseif how == 3 and type(target[key]) == "table" then
    local t = target[key]
    t[#t + 1] = r:chance(2) and t[1] or gen_value(r)   -- duplicates
    return
  else v = gen_value(r) end
  target[key] = v
end

local function generate(r)
  local req = valid_request(r)
  for _ = 1, r:byte() % 8 do mutate(r, req) end
  return req
end

-- ------------------------------------------------------------- the oracle

local function utf8_clean(s)
  if utf8.len(s) == nil then return false end
  for _, cp in utf8.codes(s) do
    if cp < 0x20 or (cp >= 0x7f and cp <= 0x9f) then return false end
  end
  return true
end

local MAXLEN = { title = 256, merchant_uid = 40, name = 40, buyer_name = 16,
  buyer_tel = 16, buyer_addr = 128, buyer_email = 64, buyer_postcode = 8 }
local REQUIRED = { "title", "user_code", "amount", "merchant_uid", "name", "currency",
  "buyer_tel", "pay_methods" }
local DIM = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * ((m + 9) % 12) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

-- An independent reading of RFC 3339 (with the same documented choices as the
-- core: 'T' or 't', fraction ignored, offset required); nil when invalid.
local function rfc3339(s)
  local Y, M, D, h, m, sec, rest = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt](%d%d):(%d%d):(%d%d)(.*)$")
  if not Y then return nil end
  Y, M, D, h, m, sec = tonumber(Y), tonumber(M), tonumber(D), tonumber(h), tonumber(m), tonumber(sec)
  rest = rest:gsub("^%.%d+", "", 1)
  local off
  if rest == "Z" or rest == "z" then off = 0
  else
    local sg, oh, om = rest:match("^([+-])(%d%d):(%d%d)$")
    if not sg then return nil end
    oh, om = tonumber(oh), tonumber(om)
    if oh > 23 or om > 59 then return nil end
    off = (oh * 3600 + om * 60) * (sg == "-" and -1 or 1)
  end
  if M < 1 or M > 12 or D < 1 then return nil end
  local leap = (Y % 4 == 0 and Y % 100 ~= 0) or Y % 400 == 0
  if D > DIM[M] + ((M == 2 and leap) and 1 or 0) then return nil end
  if h > 23 or m > 59 or sec > 60 then return nil end
  return days_from_civil(Y, M, D) * 86400 + h * 3600 + m * 60 + sec - off
end

local function check_rules(req, now)
  for _, k in ipairs(REQUIRED) do assert(req[k] ~= nil, "accepted without " .. k) end
  assert((req.expired_at == nil) ~= (req.expire_at == nil), "accepted with both or neither expiry")
  for k, v in pairs(req) do
    if k == "custom_data" then  -- may hold control characters, must be UTF-8
      assert(type(v) ~= "string" or utf8.len(v), "accepted custom_data with bad UTF-8")
    elseif type(v) == "string" then
      assert(utf8_clean(v), "accepted " .. k .. " with bad UTF-8 or a control character")
      if MAXLEN[k] then assert(utf8.len(v) <= MAXLEN[k], "accepted an over-long " .. k) end
    end
  end
  local a = req.amount
  assert(type(a) == "number" and a >= 1 and a <= 2^53 - 1 and a == math.floor(a),
    "accepted amount " .. tostring(a))
  if req.tax_free ~= nil then
    local t = req.tax_free
    assert(t == math.floor(t) and t >= 0 and t <= a, "accepted tax_free " .. tostring(t))
  end
  assert(req.user_code:find("^imp%d+$"), "accepted user_code")
  assert(req.currency:find("^%u%u%u$"), "accepted currency")
  assert(req.buyer_tel:find("^[%d+%-() ]+$") and req.buyer_tel:find("%d"), "accepted buyer_tel")
  for _, k in ipairs({ "language", "display_language" }) do
    assert(req[k] == nil or req[k] == "ko" or req[k] == "en", "accepted " .. k)
  end
  if req.buyer_email then
    local e = req.buyer_email
    assert(select(2, e:gsub("@", "")) == 1 and not e:find("[ \t]") and not e:find("^@")
      and not e:find("@$"), "accepted buyer_email " .. e)
  end
  if req.notice_url then
    assert(req.notice_url:lower():find("^https?://[^/?#]"), "accepted notice_url")
  end
  local seen = {}
  assert(type(req.pay_methods) == "table" and #req.pay_methods >= 1, "accepted pay_methods")
  for i, pm in ipairs(req.pay_methods) do
    local id = pm.pg or pm.channelKey
    assert((pm.pg == nil) ~= (pm.channelKey == nil), "pay_methods[" .. i .. "]: pg and channelKey")
    assert(id:find("^[%w_.-]+$") and #id <= 64, "pay_methods[" .. i .. "]: pg format")
    assert(PAY_METHODS[pm.pay_method], "pay_methods[" .. i .. "]: pay_method")
    assert(type(pm.label) == "string" and utf8.len(pm.label) >= 1 and utf8.len(pm.label) <= 64,
      "pay_methods[" .. i .. "]: label")
    local key = (pm.pg and "pg:" .. pm.pg or "ck:" .. pm.channelKey) .. "/" .. pm.pay_method
    assert(not seen[key], "accepted a duplicate pay method")
    seen[key] = true
  end
  if req.direct ~= nil then
    assert(PAY_METHODS[req.direct.pay_method], "direct.pay_method")
    assert((req.direct.pg == nil) ~= (req.direct.channelKey == nil), "direct: pg and channelKey")
  end
  local exp = req.expired_at or req.expire_at
  local secs = type(exp) == "string" and rfc3339(exp) or exp
  assert(secs ~= nil, "accepted an expiry the reference RFC 3339 reader refuses: " .. tostring(exp))
  assert(secs > now and secs <= 253402300799, "accepted an expiry out of range")
  return secs
end

local function same_list(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    local x, y = a[i], b[i]
    if x.field ~= y.field or x.code ~= y.code or x.message ~= y.message
      or x.suggestion ~= y.suggestion then return false end
  end
  return true
end

local function check(req, now)
  if now ~= now then   -- fuzz finding 2: a NaN clock is an argument error
    assert(not pcall(core.validate, req, now) and not pcall(core.encode, req, now),
      "now = NaN did not raise")
    return
  end
  local ok, vlist = core.validate(req, now)
  local body, elist = core.encode(req, now)
  if ok then
    assert(ok == true and vlist == nil, "validate: odd success return")
    assert(type(body) == "string", "validate accepted, encode refused: "
      .. tostring(elist and elist[1] and elist[1].field .. ": " .. elist[1].message))
  else
    assert(ok == false, "validate: odd failure return")
    assert(body == nil, "validate refused, encode accepted")
    F.check_error_list(vlist, nil, "validate")
    F.check_error_list(elist, nil, "encode")
    assert(same_list(vlist, elist), "validate and encode list different errors")
    return
  end

  -- the body, read back
  local secs = check_rules(req, now)
  local top = cjson_safe.decode(body)
  assert(type(top) == "table", "body is not JSON: " .. body:sub(1, 200))
  assert(body:find('^{"payment_info":"') and body:find(',"expired_at":%-?%d+}$'), "body shape")
  local nkeys = 0
  for _ in pairs(top) do nkeys = nkeys + 1 end
  assert(nkeys == 2 and type(top.payment_info) == "string", "body keys")
  assert(F.numeq(top.expired_at, secs),
    ("expired_at %s, expected %s"):format(tostring(top.expired_at), tostring(secs)))
  local info = cjson_safe.decode(top.payment_info)
  assert(type(info) == "table", "payment_info is not JSON: " .. top.payment_info:sub(1, 200))
  local expect = {}
  for k, v in pairs(req) do
    if k ~= "expired_at" and k ~= "expire_at" then expect[k] = v end
  end
  local same, where = F.same(expect, info)
  assert(same, "payment_info differs from the request at " .. tostring(where))
  assert(core.encode(req, now) == body, "encoding twice gives different bytes")
end

return function(data)
  if #data == 0 then return end
  local mode = data:byte(1)
  local now = NOW
  local req
  if mode % 2 == 0 then
    req = cjson_safe.decode(data:sub(2))
    if type(req) ~= "table" then return end
    -- the corpus's requests name real dates; keep them in the future
    if mode % 4 == 2 then now = 0 end
  else
    local r = F.reader(data:sub(2))
    req = generate(r)
    if r:chance(8) then now = gen_number(r) end
  end
  if DUMP then io.stderr:write("now = ", tostring(now), "\nreq = ", DUMP(req), "\n") end
  check(req, now)
end
