-- Round trips through lua-cjson: the docs' example request, and 2,000
-- requests from a seeded generator (valid ones and broken ones). Each result
-- is either the expected validation error or a body that decodes back to
-- exactly the request minus the expiry. lua-cjson on 5.4 reads every number
-- as a float (DESIGN §6), so numbers are compared with ==, not math.type.
local link = require "portone.link"
local cjson = require "cjson"
local requests = require "helpers.requests"

-- deep equality; numbers by value
local function deq(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do
    if not deq(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

local function without_expiry(req)
  local t = {}
  for k, v in pairs(req) do
    if k ~= "expired_at" and k ~= "expire_at" then t[k] = v end
  end
  return t
end

-- decodes a body; returns payment_info (decoded) and expired_at
local function open_body(body)
  local outer = cjson.decode(body)
  local n = 0
  for _ in pairs(outer) do n = n + 1 end
  assert.equal(2, n)
  assert.is_string(outer.payment_info)
  assert.is_number(outer.expired_at)
  return cjson.decode(outer.payment_info), outer.expired_at
end

describe("the docs' example request", function()
  local req = requests.docs_example()
  local opts = { now = requests.DOCS_NOW }

  it("validates", function()
    assert.is_true(link.validate(req, opts))
  end)

  it("encodes to the double-encoded body and round-trips", function()
    local body = assert(link.encode(req, opts))
    assert.equal('{"payment_info":"{\\"title\\":\\"테스트가맹점\\",\\"user_code\\":\\"imp68124833\\",',
      body:sub(1, #'{"payment_info":"{\\"title\\":\\"테스트가맹점\\",\\"user_code\\":\\"imp68124833\\",'))
    assert.truthy(body:find('","expired_at":1634324016}$'))
    local info, expired_at = open_body(body)
    assert.equal(1634324016, expired_at)
    assert.is_nil(info.expired_at)
    assert.is_true(deq(without_expiry(req), info))
    assert.equal(6, #info.pay_methods)
    assert.equal("핸드폰 소액결제", info.pay_methods[4].label)
    assert.equal(10000, info.amount)
  end)

  it("is the same body every time", function()
    assert.equal(link.encode(req, opts), link.encode(req, opts))
  end)
end)

-- Park-Miller minimal standard generator: the products stay below 2^53, so
-- Lua 5.4 and LuaJIT draw the same sequence.
local function prng(seed)
  local s = seed
  return function(n)
    s = (s * 16807) % 2147483647
    if n then return 1 + s % n end
    return s
  end
end

local PIECES = {
  "a", "Z", "0", "9", " ", "-", "_", ".", "/", '"', "\\", "'", "<", ">", "&", ":",
  "가", "한", "글", "결", "제", "테", "스", "트", "é", "ß", "中", "文", "😀", "🎉", "𝄞", "ｱ",
}
local ASCII = { "a", "b", "Z", "0", "7", "_", "-", "." }
local PGS = { "INIpayTest", "html5_inicis", "kcp.A52CY", "nice", "tosspayments" }
local METHODS = {
  "card", "trans", "vbank", "phone", "naverpay", "kakaopay", "payco", "tosspay", "applepay",
}
local CUSTOM_EXTRA = { "\n", "\t", "\1", "\31", "\127", "\194\133" }  -- fine in custom_data

local function gen(rnd)
  local function pick(t) return t[rnd(#t)] end
  local function text(lo, hi, set)
    local n = lo + rnd(hi - lo + 1) - 1
    local t = {}
    for i = 1, n do t[i] = pick(set or PIECES) end
    return table.concat(t)
  end
  local function json(depth)
    local k = rnd(depth > 3 and 6 or 8)
    if k == 1 then return text(0, 12) .. (rnd(4) == 1 and pick(CUSTOM_EXTRA) or "") end
    if k == 2 then return rnd(2) == 1 end
    if k == 3 then return cjson.null end
    if k == 4 then return rnd(2000000) - 1000000 end
    if k == 5 then return (rnd() - 1073741824) / (rnd(1000) + 0.5) end
    if k == 6 then return rnd(2) == 1 and 9007199254740991 or -rnd() * 4194304 end
    if k == 7 then
      local a = {}
      for i = 1, rnd(5) - 1 do a[i] = json(depth + 1) end
      return a
    end
    local o = {}
    for _ = 1, rnd(5) - 1 do o[text(1, 6)] = json(depth + 1) end
    return o
  end

  local amount = rnd(3) == 1 and 9007199254740991 or rnd(100000000)
  local r = {
    title = text(1, 40),
    user_code = "imp" .. rnd(99999999),
    amount = amount,
    merchant_uid = text(1, 40, ASCII),
    name = text(1, 40),
    currency = pick({ "KRW", "USD", "EUR", "JPY" }),
    buyer_tel = pick({ "010-1234-5678", "+82 10 1234 5678", "(02) 123-4567" }),
  }
  if rnd(2) == 1 then r.tax_free = rnd(amount + 1) - 1 end
  if rnd(2) == 1 then r.language = pick({ "ko", "en" }) end
  if rnd(2) == 1 then r.buyer_name = text(0, 16) end
  if rnd(2) == 1 then r.buyer_addr = text(0, 128) end
  if rnd(2) == 1 then r.buyer_email = text(1, 20, ASCII) .. "@" .. text(1, 20, ASCII) end
  if rnd(2) == 1 then r.buyer_postcode = text(0, 8, ASCII) end
  if rnd(2) == 1 then r.custom_data = json(1) end
  if rnd(2) == 1 then
    r.notice_url = "https://example.com/hook/" .. rnd(1000) .. "?a=" .. text(0, 5, ASCII)
  end
  if rnd(2) == 1 then r.display_language = pick({ "ko", "en" }) end
  r.pay_methods = {}
  local seen = {}
  for _ = 1, rnd(6) do
    local keyname = rnd(4) == 1 and "channelKey" or "pg"
    local key, method = pick(PGS), pick(METHODS)
    local id = keyname .. key .. method
    if not seen[id] then
      seen[id] = true
      r.pay_methods[#r.pay_methods + 1] = { [keyname] = key, pay_method = method, label = text(1, 64) }
    end
  end
  if rnd(3) == 1 then r.direct = { pg = pick(PGS), pay_method = pick(METHODS) } end

  -- expiry, and the integer the body must carry
  local now = 1700000000 + rnd(100000000)
  local at = now + rnd(86400 * 365)
  local expiry = at
  if rnd(3) == 1 then
    local off = (rnd(27) - 13) * 3600 + (rnd(2) - 1) * 1800
    local d = os.date("!*t", at + off)
    local sign = off < 0 and "-" or "+"
    local a = math.abs(off)
    expiry = ("%04d-%02d-%02dT%02d:%02d:%02d%s%02d:%02d"):format(d.year, d.month, d.day,
      d.hour, d.min, d.sec, sign, math.floor(a / 3600), math.floor(a % 3600 / 60))
    if off == 0 and rnd(2) == 1 then expiry = expiry:sub(1, 19) .. "Z" end
  end
  if rnd(2) == 1 then r.expired_at = expiry else r.expire_at = expiry end
  return r, now, at
end

-- Each mutation breaks a valid request in one place and says where.
local BAD_UTF8 = {
  "\192\175", "\224\128\175", "\237\160\128", "\226\130", "\128", "\244\144\128\128", "\255",
}
local function mutations(rnd)
  local function pick(t) return t[rnd(#t)] end
  return {
    function(r) r.title = nil; return "title", "required" end,
    function(r) r.pay_methods = nil; return "pay_methods", "required" end,
    function(r) r.amount = tostring(r.amount); return "amount", "type" end,
    function(r) r.amount = 0; r.tax_free = nil; return "amount", "range" end,
    function(r) r.amount = rnd(1000) + 0.5; r.tax_free = nil; return "amount", "type" end,
    function(r) r.title = ("가"):rep(257); return "title", "too_long" end,
    function(r) r.name = ""; return "name", "empty" end,
    function(r) r.currency = "krw"; return "currency", "format" end,
    function(r) r.language = "jp"; return "language", "enum" end,
    function(r) r.buyer_tel = "call me"; return "buyer_tel", "format" end,
    function(r) r.buyer_email = "nobody"; return "buyer_email", "format" end,
    function(r) r.tax_free = r.amount + 1; return "tax_free", "range" end,
    function(r) r.notice_url = "mailto:x@example.com"; return "notice_url", "format" end,
    function(r) r.merchant_id = "x"; return "merchant_id", "unknown_field" end,
    function(r)
      r.name = "x" .. pick(BAD_UTF8)
      return "name", "format"
    end,
    function(r)
      local i = rnd(#r.pay_methods)
      r.pay_methods[i].label = pick(BAD_UTF8) .. "x"
      return ("pay_methods[%d].label"):format(i), "format"
    end,
    function(r)
      local i = rnd(#r.pay_methods)
      r.pay_methods[i].pay_method = "cash"
      return ("pay_methods[%d].pay_method"):format(i), "enum"
    end,
    function(r)
      local n = #r.pay_methods
      local e = r.pay_methods[rnd(n)]
      r.pay_methods[n + 1] = {
        pg = e.pg, channelKey = e.channelKey, pay_method = e.pay_method, label = "dup",
      }
      return ("pay_methods[%d]"):format(n + 1), "duplicate"
    end,
    function(r)
      local e = r.pay_methods[1]
      if e.pg then e.channelKey = "ck" else e.pg = "pg" end
      return "pay_methods[1].channelKey", "conflict"
    end,
    function(r)
      r.custom_data = { broken = { 1, 2, 0/0 } }
      return "custom_data.broken[3]", "range"
    end,
    function(r)
      r.custom_data = { list = { [1] = 1, [3] = 3 } }
      return "custom_data.list", "type"
    end,
    function(r)
      local key = "key " .. rnd(9)
      r.custom_data = { [key] = { pick(BAD_UTF8) } }
      return ('custom_data["%s"][1]'):format(key), "format"
    end,
    function(r)
      local e = r.expired_at and "expired_at" or "expire_at"
      r[e] = 1600000000
      return e, "expired"
    end,
    function(r)
      r.expired_at, r.expire_at = r.expired_at or r.expire_at, r.expired_at or r.expire_at
      return "expire_at", "conflict"
    end,
    function(r)
      r.expired_at, r.expire_at = nil, nil
      return "expired_at", "required"
    end,
  }
end

describe("2,000 seeded random requests", function()
  it("each encodes and round-trips, or fails with the expected error", function()
    local rnd = prng(20240601)
    local muts = mutations(rnd)
    local valid, broken = 0, 0
    for case = 1, 2000 do
      local r, now, at = gen(rnd)
      local field, code
      if rnd(2) == 1 then
        local m = rnd(#muts)
        field, code = muts[m](r)
        if os.getenv("PLINK_DEBUG") then print(case, m, field, code) end
      end
      local body, err = link.encode(r, { now = now })
      local ok, verr = link.validate(r, { now = now })
      if field then
        broken = broken + 1
        assert.is_nil(body, "case " .. case)
        assert.is_nil(ok)
        assert.equal("validation", err.kind)
        assert.equal(1, #err.errors, "case " .. case .. ": " .. tostring(err))
        assert.equal(field, err.errors[1].field, "case " .. case)
        assert.equal(code, err.errors[1].code, "case " .. case)
        assert.same(err.errors, verr.errors)
      else
        valid = valid + 1
        assert.is_string(body, "case " .. case .. ": " .. tostring(err))
        assert.is_true(ok)
        local info, expired_at = open_body(body)
        assert.equal(at, expired_at, "case " .. case)
        assert.is_true(deq(without_expiry(r), info), "case " .. case .. ": " .. body)
        assert.equal(body, link.encode(r, { now = now }))
      end
    end
    assert.is_true(valid > 800 and broken > 800)
  end)
end)
