-- Every rule of the request (DESIGN §1), table-driven: for each rule one
-- request that passes and one that fails with the right field and code.
local link = require "portone.link"
local cjson = require "cjson"
local requests = require "helpers.requests"
local finalized = require("helpers.gc").finalized

local NOW = 1700000000

local function base() return requests.base(NOW) end

-- Each case: description, function that changes the base request.
local passes = {
  { "the base request", function() end },
  { "title of 256 characters", function(r) r.title = ("가"):rep(256) end },
  { "user_code imp + digits", function(r) r.user_code = "imp0" end },
  { "amount 1", function(r) r.amount = 1 end },
  { "amount 2^53-1", function(r) r.amount = 9007199254740991 end },
  { "amount as an integral float", function(r) r.amount = 10000.0 end },
  { "merchant_uid of 1 character", function(r) r.merchant_uid = "x" end },
  { "merchant_uid of 40 characters", function(r) r.merchant_uid = ("주"):rep(40) end },
  { "name of 40 characters", function(r) r.name = ("n"):rep(40) end },
  { "tax_free 0", function(r) r.tax_free = 0 end },
  { "tax_free equal to amount", function(r) r.tax_free = 10000 end },
  { "currency USD", function(r) r.currency = "USD" end },
  { "currency any three upper-case letters", function(r) r.currency = "CNY" end },
  { "language ko", function(r) r.language = "ko" end },
  { "language en", function(r) r.language = "en" end },
  { "buyer_name of 16 characters", function(r) r.buyer_name = ("홍"):rep(16) end },
  { "buyer_tel with + ( ) and spaces", function(r) r.buyer_tel = "+82 (10) 1234-56" end },
  { "buyer_addr of 128 characters", function(r) r.buyer_addr = ("서"):rep(128) end },
  { "buyer_email", function(r) r.buyer_email = "buyer@example.com" end },
  { "buyer_email of 64 characters", function(r) r.buyer_email = ("a"):rep(52) .. "@example.com" end },
  { "buyer_postcode of 8 characters", function(r) r.buyer_postcode = "12345678" end },
  { "optional string empty", function(r) r.buyer_addr = "" end },
  { "custom_data string", function(r) r.custom_data = "memo" end },
  { "custom_data number", function(r) r.custom_data = 1.5 end },
  { "custom_data boolean", function(r) r.custom_data = false end },
  { "custom_data null", function(r) r.custom_data = cjson.null end },
  { "custom_data nested tables", function(r)
      r.custom_data = { items = { 1, "two", { three = 3 } }, ok = true, none = cjson.null, empty = {} }
    end },
  { "custom_data 32 levels deep", function(r)
      local t = {}
      r.custom_data = t
      for _ = 2, 32 do t[1] = {}; t = t[1] end
    end },
  { "custom_data shares a table twice (no cycle)", function(r)
      local s = { 1 }
      r.custom_data = { a = s, b = s }
    end },
  { "notice_url https", function(r) r.notice_url = "https://example.com/portone/webhook?x=1" end },
  { "notice_url http with port", function(r) r.notice_url = "http://127.0.0.1:8080/hook" end },
  { "display_language en", function(r) r.display_language = "en" end },
  { "pay_methods entry with channelKey", function(r)
      r.pay_methods[3] = { channelKey = "channel-key-9d2f7c4e", pay_method = "card", label = "카드" }
    end },
  { "pay_methods label of 64 characters", function(r) r.pay_methods[1].label = ("라"):rep(64) end },
  { "same pg, different pay_method", function(r)
      r.pay_methods[3] = { pg = "INIpayTest", pay_method = "trans", label = "계좌이체" }
    end },
  { "same pay_method, different pg", function(r)
      r.pay_methods[3] = { pg = "html5_inicis.MID", pay_method = "card", label = "카드" }
    end },
  { "direct with pg", function(r) r.direct = { pg = "INIpayTest", pay_method = "card" } end },
  { "direct with channelKey", function(r) r.direct = { channelKey = "ck-1", pay_method = "kakaopay" } end },
  { "expire_at instead of expired_at", function(r) r.expired_at = nil; r.expire_at = NOW + 1 end },
  { "expired_at as RFC 3339 with offset", function(r) r.expired_at = "2026-12-01T00:00:00+09:00" end },
  { "expired_at as RFC 3339 Z", function(r) r.expired_at = "2026-12-01T00:00:00Z" end },
  { "expired_at as an integral float", function(r) r.expired_at = NOW + 60.0 end },
}

-- Each case: description, change, expected field, expected code.
local fails = {
  { "title missing", function(r) r.title = nil end, "title", "required" },
  { "title not a string", function(r) r.title = 42 end, "title", "type" },
  { "title empty", function(r) r.title = "" end, "title", "empty" },
  { "title of 257 characters", function(r) r.title = ("가"):rep(257) end, "title", "too_long" },
  { "title with a newline", function(r) r.title = "a\nb" end, "title", "format" },
  { "user_code missing", function(r) r.user_code = nil end, "user_code", "required" },
  { "user_code without imp", function(r) r.user_code = "68124833" end, "user_code", "format" },
  { "user_code imp + letters", function(r) r.user_code = "impabc" end, "user_code", "format" },
  { "amount missing", function(r) r.amount = nil end, "amount", "required" },
  { "amount as a string", function(r) r.amount = "10000" end, "amount", "type" },
  { "amount with a fraction", function(r) r.amount = 10.5 end, "amount", "type" },
  { "amount 0", function(r) r.amount = 0 end, "amount", "range" },
  { "amount negative", function(r) r.amount = -5 end, "amount", "range" },
  { "amount 2^53", function(r) r.amount = 2^53 end, "amount", "range" },
  { "amount NaN", function(r) r.amount = 0/0 end, "amount", "type" },
  { "amount infinity", function(r) r.amount = math.huge end, "amount", "range" },
  { "merchant_uid missing", function(r) r.merchant_uid = nil end, "merchant_uid", "required" },
  { "merchant_uid empty", function(r) r.merchant_uid = "" end, "merchant_uid", "empty" },
  { "merchant_uid of 41 characters", function(r) r.merchant_uid = ("x"):rep(41) end,
    "merchant_uid", "too_long" },
  { "name missing", function(r) r.name = nil end, "name", "required" },
  { "name empty", function(r) r.name = "" end, "name", "empty" },
  { "name of 41 characters", function(r) r.name = ("n"):rep(41) end, "name", "too_long" },
  { "tax_free above amount", function(r) r.tax_free = 10001 end, "tax_free", "range" },
  { "tax_free negative", function(r) r.tax_free = -1 end, "tax_free", "range" },
  { "tax_free with a fraction", function(r) r.tax_free = 0.5 end, "tax_free", "type" },
  { "tax_free as a string", function(r) r.tax_free = "0" end, "tax_free", "type" },
  { "currency missing", function(r) r.currency = nil end, "currency", "required" },
  { "currency lower case", function(r) r.currency = "krw" end, "currency", "format" },
  { "currency of four letters", function(r) r.currency = "KRWW" end, "currency", "format" },
  { "language fr", function(r) r.language = "fr" end, "language", "enum" },
  { "buyer_name of 17 characters", function(r) r.buyer_name = ("홍"):rep(17) end, "buyer_name", "too_long" },
  { "buyer_tel missing", function(r) r.buyer_tel = nil end, "buyer_tel", "required" },
  { "buyer_tel empty", function(r) r.buyer_tel = "" end, "buyer_tel", "empty" },
  { "buyer_tel with letters", function(r) r.buyer_tel = "010-CALL-ME" end, "buyer_tel", "format" },
  { "buyer_tel of 17 characters", function(r) r.buyer_tel = ("1"):rep(17) end, "buyer_tel", "too_long" },
  { "buyer_addr of 129 characters", function(r) r.buyer_addr = ("서"):rep(129) end, "buyer_addr", "too_long" },
  { "buyer_email without @", function(r) r.buyer_email = "buyer.example.com" end, "buyer_email", "format" },
  { "buyer_email with two @", function(r) r.buyer_email = "a@b@example.com" end, "buyer_email", "format" },
  { "buyer_email with a space", function(r) r.buyer_email = "a b@example.com" end, "buyer_email", "format" },
  { "buyer_email nothing before @", function(r) r.buyer_email = "@example.com" end, "buyer_email", "format" },
  { "buyer_email nothing after @", function(r) r.buyer_email = "buyer@" end, "buyer_email", "format" },
  { "buyer_email with a tab after @", function(r) r.buyer_email = "a@exa\tmple.com" end,
    "buyer_email", "format" },
  { "buyer_email of 65 characters", function(r)
      r.buyer_email = ("a"):rep(53) .. "@example.com"
    end, "buyer_email", "too_long" },
  { "buyer_postcode of 9 characters", function(r) r.buyer_postcode = "123456789" end,
    "buyer_postcode", "too_long" },
  { "custom_data function", function(r) r.custom_data = print end, "custom_data", "type" },
  { "custom_data userdata", function(r) r.custom_data = { f = io.stdout } end, "custom_data.f", "type" },
  { "custom_data NaN", function(r) r.custom_data = { items = { 1, 2, 0/0 } } end,
    "custom_data.items[3]", "range" },
  { "custom_data infinity", function(r) r.custom_data = -math.huge end, "custom_data", "range" },
  { "custom_data sparse array", function(r) r.custom_data = { a = { 1, nil, 3 } } end,
    "custom_data.a", "type" },
  -- a hole where the table's length (a border) is still its count of keys:
  -- on 5.4 # gives 3 here, so the walk read a[2] and blamed that nil
  { "custom_data array with a hole, # equal to its count", function(r)
      r.custom_data = { a = { 1, nil, 3, [5] = 5 } }
    end, "custom_data.a", "type" },
  { "custom_data mixed keys", function(r) r.custom_data = { 1, 2, x = 3 } end, "custom_data", "type" },
  { "custom_data boolean key", function(r) r.custom_data = { [true] = 1 } end, "custom_data", "type" },
  { "custom_data cycle", function(r)
      local t = { name = "loop" }
      t.self = t
      r.custom_data = { t }
    end, "custom_data[1].self", "range" },
  { "custom_data 33 levels deep", function(r)
      local t = {}
      r.custom_data = t
      for _ = 2, 33 do t[1] = {}; t = t[1] end
    end, "custom_data" .. ("[1]"):rep(32), "range" },
  { "custom_data odd key path", function(r) r.custom_data = { ["odd key"] = { 0/0 } } end,
    'custom_data["odd key"][1]', "range" },
  { "notice_url ftp", function(r) r.notice_url = "ftp://example.com/hook" end, "notice_url", "format" },
  { "notice_url relative", function(r) r.notice_url = "/hook" end, "notice_url", "format" },
  { "notice_url without host", function(r) r.notice_url = "https:///hook" end, "notice_url", "format" },
  { "notice_url with a space", function(r) r.notice_url = "https://example.com/a b" end,
    "notice_url", "format" },
  { "notice_url bad port", function(r) r.notice_url = "https://example.com:99999/" end,
    "notice_url", "format" },
  { "display_language KO", function(r) r.display_language = "KO" end, "display_language", "enum" },
  { "pay_methods missing", function(r) r.pay_methods = nil end, "pay_methods", "required" },
  { "pay_methods empty", function(r) r.pay_methods = {} end, "pay_methods", "empty" },
  { "pay_methods not a table", function(r) r.pay_methods = "card" end, "pay_methods", "type" },
  { "pay_methods with a hole", function(r) r.pay_methods[4] = r.pay_methods[1] end, "pay_methods", "type" },
  { "pay_methods with a hole, # equal to its count", function(r)
      local function pm(m) return { pg = "INIpayTest", pay_method = m, label = m } end
      r.pay_methods = { pm("card"), nil, pm("trans"), [5] = pm("vbank") }
    end, "pay_methods", "type" },
  { "pay_methods entry not a table", function(r) r.pay_methods[2] = "card" end, "pay_methods[2]", "type" },
  { "pay_methods entry without pg or channelKey", function(r) r.pay_methods[2].pg = nil end,
    "pay_methods[2].pg", "required" },
  { "pay_methods entry with pg and channelKey", function(r) r.pay_methods[2].channelKey = "ck" end,
    "pay_methods[2].channelKey", "conflict" },
  { "pay_methods pg with a space", function(r) r.pay_methods[1].pg = "INI pay" end,
    "pay_methods[1].pg", "format" },
  { "pay_methods pg empty", function(r) r.pay_methods[1].pg = "" end, "pay_methods[1].pg", "empty" },
  { "pay_methods pay_method unknown", function(r) r.pay_methods[2].pay_method = "bitcoin" end,
    "pay_methods[2].pay_method", "enum" },
  { "pay_methods pay_method missing", function(r) r.pay_methods[2].pay_method = nil end,
    "pay_methods[2].pay_method", "required" },
  { "pay_methods label missing", function(r) r.pay_methods[2].label = nil end,
    "pay_methods[2].label", "required" },
  { "pay_methods label empty", function(r) r.pay_methods[2].label = "" end, "pay_methods[2].label", "empty" },
  { "pay_methods label of 65 characters", function(r) r.pay_methods[2].label = ("라"):rep(65) end,
    "pay_methods[2].label", "too_long" },
  { "pay_methods label a number", function(r) r.pay_methods[2].label = 7 end,
    "pay_methods[2].label", "type" },
  { "pay_methods duplicate pair", function(r)
      r.pay_methods[3] = { pg = "INIpayTest", pay_method = "card", label = "또 카드" }
    end, "pay_methods[3]", "duplicate" },
  { "pay_methods duplicate pair before the last entry", function(r)
      r.pay_methods[3] = { pg = "INIpayTest", pay_method = "card", label = "또 카드" }
      r.pay_methods[4] = { pg = "INIpayTest", pay_method = "phone", label = "휴대폰" }
    end, "pay_methods[3]", "duplicate" },
  { "pay_methods duplicate pair, the last entry of four", function(r)
      r.pay_methods[3] = { pg = "INIpayTest", pay_method = "phone", label = "휴대폰" }
      r.pay_methods[4] = { pg = "INIpayTest", pay_method = "phone", label = "또 휴대폰" }
    end, "pay_methods[4]", "duplicate" },
  { "pay_methods duplicate channelKey pair", function(r)
      r.pay_methods[1] = { channelKey = "ck-1", pay_method = "card", label = "a" }
      r.pay_methods[2] = { channelKey = "ck-1", pay_method = "card", label = "b" }
    end, "pay_methods[2]", "duplicate" },
  { "pay_methods unknown key in an entry", function(r) r.pay_methods[1].lable = "x" end,
    "pay_methods[1].lable", "unknown_field" },
  { "direct not a table", function(r) r.direct = "card" end, "direct", "type" },
  { "direct without pg or channelKey", function(r) r.direct = { pay_method = "card" } end,
    "direct.pg", "required" },
  { "direct with both", function(r) r.direct = { pg = "a", channelKey = "b", pay_method = "card" } end,
    "direct.channelKey", "conflict" },
  { "direct pay_method unknown", function(r) r.direct = { pg = "a", pay_method = "cash" } end,
    "direct.pay_method", "enum" },
  { "direct unknown key", function(r) r.direct = { pg = "a", pay_method = "card", label = "x" } end,
    "direct.label", "unknown_field" },
  { "expiry missing", function(r) r.expired_at = nil end, "expired_at", "required" },
  { "expired_at and expire_at", function(r) r.expire_at = NOW + 60 end, "expire_at", "conflict" },
  { "expired_at in the past", function(r) r.expired_at = NOW - 1 end, "expired_at", "expired" },
  { "expired_at equal to now", function(r) r.expired_at = NOW end, "expired_at", "expired" },
  { "expire_at in the past", function(r) r.expired_at = nil; r.expire_at = 1634324016 end,
    "expire_at", "expired" },
  { "expired_at RFC 3339 in the past", function(r) r.expired_at = "2021-10-16T04:13:36+09:00" end,
    "expired_at", "expired" },
  { "expired_at RFC 3339 without offset", function(r) r.expired_at = "2026-12-01T00:00:00" end,
    "expired_at", "format" },
  { "expired_at date only", function(r) r.expired_at = "2026-12-01" end, "expired_at", "format" },
  { "expired_at Feb 30", function(r) r.expired_at = "2026-02-30T00:00:00Z" end, "expired_at", "format" },
  { "expired_at hour 24", function(r) r.expired_at = "2026-12-01T24:00:00Z" end, "expired_at", "format" },
  { "expired_at with a fraction of a second", function(r) r.expired_at = NOW + 0.5 end,
    "expired_at", "type" },
  { "expired_at a boolean", function(r) r.expired_at = true end, "expired_at", "type" },
  { "expired_at after year 9999", function(r) r.expired_at = 2^52 end, "expired_at", "range" },
  { "unknown top-level key", function(r) r.merchant_id = "x" end, "merchant_id", "unknown_field" },
  { "non-string top-level key", function(r) r[1] = "x" end, "[1]", "unknown_field" },
}

describe("portone.link.validate / encode rules", function()
  for _, c in ipairs(passes) do
    it("passes: " .. c[1], function()
      local r = base()
      c[2](r)
      local ok, err = link.validate(r, { now = NOW })
      assert.is_nil(err and tostring(err))
      assert.is_true(ok)
      local body, err2 = link.encode(r, { now = NOW })
      assert.is_nil(err2 and tostring(err2))
      assert.is_string(body)
      local outer = cjson.decode(body)
      assert.is_string(outer.payment_info)
      assert.is_table(cjson.decode(outer.payment_info))
    end)
  end

  for _, c in ipairs(fails) do
    it("fails: " .. c[1] .. " -> " .. c[3] .. " " .. c[4], function()
      local r = base()
      c[2](r)
      local ok, err = link.validate(r, { now = NOW })
      assert.is_nil(ok)
      assert.equal("validation", err.kind)
      assert.equal(1, #err.errors, tostring(err))
      assert.equal(c[3], err.errors[1].field)
      assert.equal(c[4], err.errors[1].code)
      assert.is_string(err.errors[1].message)
      local body, err2 = link.encode(r, { now = NOW })
      assert.is_nil(body)
      assert.same(err.errors, err2.errors)
    end)
  end
end)

describe("portone.link errors", function()
  it("lists every problem, in descriptor order, unknown keys last and sorted", function()
    local r = base()
    r.title, r.amount, r.currency = nil, "1", "won"
    r.zzz, r.merchant_id, r.ttile = 1, 2, 3
    r.pay_methods[2].label = nil
    local _, err = link.validate(r, { now = NOW })
    local got = {}
    for i, e in ipairs(err.errors) do got[i] = e.field .. ":" .. e.code end
    assert.same({
      "title:required", "amount:type", "currency:format", "pay_methods[2].label:required",
      "merchant_id:unknown_field", "ttile:unknown_field", "zzz:unknown_field",
    }, got)
  end)

  it("gives the same list every time", function()
    local r = base()
    for i = 1, 50 do r["unknown" .. i] = i end
    local _, e1 = link.validate(r, { now = NOW })
    local _, e2 = link.encode(r, { now = NOW })
    assert.equal(50, #e1.errors)
    assert.same(e1.errors, e2.errors)
    assert.equal("unknown1", e1.errors[1].field)
    assert.equal("unknown10", e1.errors[2].field)
  end)

  it("suggests the nearest known key", function()
    local cases = {
      merchant_id = "merchant_uid", ttle = "title", amout = "amount", buyer_phone = nil,
      expires_at = "expired_at", channel_key = nil, paymethods = "pay_methods", xyz = nil,
      Title = "title", notice_uri = "notice_url",
    }
    for key, want in pairs(cases) do
      local r = base()
      r[key] = 1
      local _, err = link.validate(r, { now = NOW })
      local e = err.errors[1]
      assert.equal(key, e.field)
      assert.equal("unknown_field", e.code)
      assert.equal(want, e.suggestion, key)
    end
    local r = base()
    r.merchant_id = "x"
    local _, err = link.validate(r, { now = NOW })
    assert.equal("unknown field 'merchant_id', did you mean 'merchant_uid'?", err.errors[1].message)
    r = base()
    r.pay_methods[1].channel_key = "x"
    _, err = link.validate(r, { now = NOW })
    assert.equal("pay_methods[1].channel_key", err.errors[1].field)
    assert.equal("channelKey", err.errors[1].suggestion)
  end)

  it("quotes keys that are not identifiers in the path", function()
    local r = base()
    r["bad key"] = 1
    r.custom_data = { ['a"b'] = { f = print } }
    local _, err = link.validate(r, { now = NOW })
    assert.equal('custom_data["a\\"b"].f', err.errors[1].field)
    assert.equal('["bad key"]', err.errors[2].field)
  end)

  it("reads well through tostring", function()
    local r = base()
    r.amount = 0
    r.pay_methods[2].label = nil
    local _, err = link.encode(r, { now = NOW })
    assert.equal("portone.link validation error: 2 problems in the request, first: "
      .. "amount: must be greater than 0\n"
      .. "  amount: must be greater than 0 [range]\n"
      .. "  pay_methods[2].label: is required [required]", tostring(err))
    r = base()
    r.title = nil
    _, err = link.encode(r, { now = NOW })
    assert.equal("portone.link validation error: title: is required\n  title: is required [required]",
      tostring(err))
  end)

  it("raises for a non-table request", function()
    assert.has_error(function() link.encode("req") end)
    assert.has_error(function() link.validate(nil) end)
    assert.has_error(function() link.encode(base(), "opts") end)
    assert.has_error(function() link.core.encode(42, NOW) end)
    assert.has_error(function() link.core.validate({}, {}) end)
  end)

  it("core returns false/nil and the list", function()
    local ok, list = link.core.validate({}, NOW)
    assert.is_false(ok)
    assert.is_table(list)
    local body, list2 = link.core.encode({}, NOW)
    assert.is_nil(body)
    assert.same(list, list2)
    assert.is_true(link.core.validate(base(), NOW))
  end)

  it("uses opts.now for the expiry, os.time() by default", function()
    local r = base()
    r.expired_at = 2000
    assert.is_true(link.validate(r, { now = 1999 }))
    assert.is_nil(link.validate(r, { now = 2000 }))
    assert.is_nil(link.validate(r))
    r.expired_at = os.time() + 60
    assert.is_true(link.validate(r))
  end)

  it("ignores metatables (reads the table raw)", function()
    local r = setmetatable({}, { __index = base() })
    local _, err = link.validate(r, { now = NOW })
    assert.equal("title", err.errors[1].field)
    assert.equal("required", err.errors[1].code)
  end)
end)

describe("portone.link.encode body", function()
  it("is the double-encoded form with a stable key order", function()
    local r = base()
    r.pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "카드" } }
    r.tax_free, r.language, r.buyer_email = 0, "ko", "a@b.co"
    r.direct = { pay_method = "card", pg = "INIpayTest" }
    r.custom_data = { b = 1, a = { 3, "x" }, ["가"] = false, A = cjson.null }
    local body = assert(link.encode(r, { now = NOW }))
    local info = '{"title":"테스트가맹점","user_code":"imp68124833","amount":10000,'
      .. '"merchant_uid":"order_1042","name":"주문명:결제테스트","tax_free":0,"currency":"KRW",'
      .. '"language":"ko","buyer_tel":"010-1234-5678","buyer_email":"a@b.co",'
      .. '"custom_data":{"A":null,"a":[3,"x"],"b":1,"가":false},'
      .. '"pay_methods":[{"pg":"INIpayTest","pay_method":"card","label":"카드"}],'
      .. '"direct":{"pg":"INIpayTest","pay_method":"card"}}'
    local want = '{"payment_info":"' .. info:gsub('"', '\\"') .. '","expired_at":' .. (NOW + 3600) .. '}'
    assert.equal(want, body)
    assert.equal(info, cjson.decode(body).payment_info)
  end)

  it("prints integers exactly", function()
    local r = base()
    r.amount = 9007199254740991
    r.tax_free = 1e15
    r.custom_data = { 1e16, -9007199254740991, 0.1, 1e300, -0.0, 2.5e-7 }
    local body = assert(link.encode(r, { now = NOW }))
    local info = cjson.decode(body).payment_info
    assert.truthy(info:find('"amount":9007199254740991,', 1, true))
    assert.truthy(info:find('"tax_free":1000000000000000,', 1, true))
    local want = '"custom_data":[10000000000000000,-9007199254740991,0.1,1e+300,0,2.5e-07]'
    assert.truthy(info:find(want, 1, true))
    assert.is_nil(body:find("e+16", 1, true))
    local back = cjson.decode(info).custom_data
    for i, v in ipairs(r.custom_data) do assert.equal(v, back[i]) end
  end)

  it("sends expire_at and RFC 3339 as an integer expired_at", function()
    local r = base()
    r.expired_at = nil
    r.expire_at = "2026-12-01T00:00:00+09:00"
    local body = assert(link.encode(r, { now = NOW }))
    assert.truthy(body:find(',"expired_at":1796050800}$'))
    r.expire_at = "2026-11-30T15:00:00.999Z"
    assert.equal(body, link.encode(r, { now = NOW }))
    r.expire_at = "2026-11-30t15:00:00z"
    assert.equal(body, link.encode(r, { now = NOW }))
  end)

  -- RFC 3339 5.7: a leap second is 23:59:60 UTC, so its local minute is
  -- 59 only under a whole-hour offset (1990-12-31T15:59:60-08:00)
  it("takes a leap second at UTC minute 59 under any offset", function()
    local r = base()
    r.expired_at = "2016-12-31T23:59:60Z"
    local want = assert(link.encode(r, { now = NOW - 3e8 }))
    assert.truthy(want:find(',"expired_at":1483228800}$'))
    for _, s in ipairs({ "2016-12-31T15:59:60-08:00", "2017-01-01T05:29:60+05:30",
        "2017-01-01T05:44:60+05:45", "2016-12-31T20:29:60-03:30" }) do
      r.expired_at = s
      assert.equal(want, link.encode(r, { now = NOW - 3e8 }), s)
    end
    for _, s in ipairs({ "2017-01-01T05:59:60+05:30", "2016-12-31T23:29:60Z" }) do
      r.expired_at = s
      local _, err = link.encode(r, { now = NOW - 3e8 })
      assert.equal("format", err.errors[1].code, s)
    end
  end)

  it("escapes per RFC 8259, leaves / and UTF-8 alone", function()
    local r = base()
    r.custom_data = 'q" b\\ s/ \1\b\f\n\r\t\127 한글 😀'
    local body = assert(link.encode(r, { now = NOW }))
    local info = cjson.decode(body).payment_info
    assert.truthy(info:find('"custom_data":"q\\" b\\\\ s/ \\u0001\\b\\f\\n\\r\\t\127 한글 😀"', 1, true))
    assert.equal(r.custom_data, cjson.decode(info).custom_data)
  end)

  it("writes an empty table as an empty object", function()
    local r = base()
    r.custom_data = { list = {} }
    local body = assert(link.encode(r, { now = NOW }))
    local info = cjson.decode(body).payment_info
    assert.truthy(info:find('"custom_data":{"list":{}}', 1, true))
  end)

  -- the codec keeps an object's first 32 keys and values on the Lua stack
  -- and the rest in its anchor table: both ways, the same sorted object
  it("writes objects of up to and past 32 keys sorted, nested too", function()
    for _, count in ipairs({ 1, 31, 32, 33, 40, 100 }) do
      local obj, names = {}, {}
      for i = count, 1, -1 do
        local k = ("k%03d"):format(i)
        obj[k] = i % 2 == 0 and { [k] = i, z = "s" .. i } or "v" .. i
        names[#names + 1] = k
      end
      table.sort(names)
      local r = base()
      r.custom_data = obj
      local body = assert(link.encode(r, { now = NOW }))
      local info = cjson.decode(cjson.decode(body).payment_info)
      assert.same(obj, info.custom_data)
      local text = cjson.decode(body).payment_info
      local at, pos = {}, 0
      for _, k in ipairs(names) do
        pos = assert(text:find('"' .. k .. '":', pos + 1, true))
        at[#at + 1] = pos
      end
      assert.equal(count, #at)
      -- an error past the 32nd key still names its path
      r.custom_data[names[#names]] = print
      local _, err = link.encode(r, { now = NOW })
      assert.equal("custom_data." .. names[#names], err.errors[1].field)
    end
  end)
end)

describe("portone.link.encode buffers", function()
  it("handles large bodies and stays right after them", function()
    local r = base()
    r.custom_data = { blob = ("가나다\"\\\n"):rep(40000), list = {} }
    for i = 1, 5000 do r.custom_data.list[i] = { i = i, s = "항목 " .. i } end
    local body = assert(link.encode(r, { now = NOW }))
    local info = cjson.decode(cjson.decode(body).payment_info)
    assert.equal(r.custom_data.blob, info.custom_data.blob)
    assert.equal(5000, #info.custom_data.list)
    assert.equal("항목 5000", info.custom_data.list[5000].s)
    local small = base()
    local b2 = assert(link.encode(small, { now = NOW }))
    assert.is_true(#b2 < 1000)
    assert.equal("테스트가맹점", cjson.decode(cjson.decode(b2).payment_info).title)
  end)

  it("works when a finalizer calls encode while encode runs", function()
    local inside, ran_inside, results = false, 0, {}
    local function finalizer()
      local b = link.encode(base(), { now = NOW })
      results[#results + 1] = b
      if inside then ran_inside = ran_inside + 1 end
    end
    local want = assert(link.encode(base(), { now = NOW }))
    local r = base()
    for i = 1, 300 do r["unknown_" .. i] = i end     -- many errors: many allocations
    pcall(collectgarbage, "incremental")            -- 5.4; LuaJIT has one mode
    local pause = collectgarbage("setpause", 50)      -- frequent cycles
    for _ = 1, 200 do
      if ran_inside > 0 and #results > 500 then break end
      for _ = 1, 200 do finalized(finalizer) end
      inside = true
      local body, err = link.encode(r, { now = NOW })
      inside = false
      assert.is_nil(body)
      assert.equal(300, #err.errors)
      assert.equal("unknown_1", err.errors[1].field)
    end
    collectgarbage("setpause", pause)
    collectgarbage()
    collectgarbage()
    assert.is_true(#results > 0)
    for _, b in ipairs(results) do assert.equal(want, b) end
    -- finalizers ran inside encode (GC steps happen in its allocations); the
    -- nested calls used buffers of their own and gave the right body
    assert.is_true(ran_inside > 0)
  end)
end)
