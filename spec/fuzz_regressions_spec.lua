-- What the fuzzers (fuzz/, make fuzz) found, one spec each, so that a fix
-- stays fixed. Each names the harness and the input that showed it.
local link = require "portone.link"
local core = require "portone.link.core"

local function request(over)
  local req = {
    title = "Order 1042", user_code = "imp68124833", amount = 10000,
    merchant_uid = "order-1042", name = "Blue mug", currency = "KRW",
    buyer_tel = "010-1234-5678", expired_at = 1700003600,
    pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "Card" } },
  }
  for k, v in pairs(over or {}) do req[k] = v end
  return req
end

describe("fuzz regressions", function()
  -- fuzz/codec, input "\1\255\7\1\2\3\4\5\6\7\8" (any request with a pay
  -- method): codec_list computed db->p + 0 with db->p == NULL before the first
  -- entry was recorded, "applying zero offset to null pointer" under UBSan
  -- (src/codec.c, codec_list). The asan suite runs this with UBSan on.
  it("codec: the duplicate check of the first pay method reads no NULL buffer", function()
    local req = request()
    assert.is_true(core.validate(req, 1700000000))
    assert.is_string(core.encode(req, 1700000000))
    req.pay_methods[2] = { pg = "INIpayTest", pay_method = "card", label = "Again" }
    local ok, list = core.validate(req, 1700000000)
    assert.is_false(ok)
    assert.equal("duplicate", list[1].code)
    assert.equal("pay_methods[2]", list[1].field)
  end)

  -- fuzz/codec, structured input whose clock byte chose now = 0/0: every
  -- comparison with NaN is false, so "expiry <= now" never held and any
  -- expiry - a past one too - was accepted. NaN is now an argument error.
  it("codec: now = NaN raises instead of accepting any expiry", function()
    local nan = 0 / 0
    local past = request({ expired_at = 1 })
    assert.has_error(function() core.validate(past, nan) end)
    assert.has_error(function() core.encode(past, nan) end)
    assert.has_error(function() link.validate(past, { now = nan }) end)
    assert.has_error(function() link.encode(past, { now = nan }) end)
    -- as link's own argument error, at the caller (not core.encode's, in init.lua)
    for _, f in ipairs({ "validate", "encode" }) do
      local ok, msg = pcall(function() local v = link[f](past, { now = nan }); return v end)
      assert.is_false(ok)
      assert.matches("^spec/fuzz_regressions_spec%.lua:%d+: bad argument #2 to '" .. f
        .. "' %(opts%.now must not be NaN%)$", msg)
    end
    -- infinities stay numbers with a meaning: nothing is after +inf
    local ok, err = link.validate(request(), { now = 1 / 0 })
    assert.is_nil(ok)
    assert.equal("expired", err.errors[1].code)
    -- the message said "now, 0"
    assert.matches("is not after now, inf%)$", err.errors[1].message)
  end)

  -- fuzz/codec, base64 P+dn5+fn5xMTExMTExMTExMTExPuExMTExMTExPuExMTExMTExMliuco52/6
  -- gADHVQAA5+fn5+fn5+fn5+fn5+dn5+fn52xvYXQ= : expire_at = math.mininteger with
  -- now = -2^63. The out-of-range expiry was clamped to -2^53, found to be
  -- "after now", and sent as -9007199254740992. Out of range is now an error
  -- on either side.
  it("codec: an expiry below -(2^53) is a range error, never a clamped value", function()
    local tiny = { -2 ^ 63, -2 ^ 60 }
    if math.mininteger then tiny[#tiny + 1] = math.mininteger end -- luacheck: ignore 143
    for _, v in ipairs(tiny) do
      for _, name in ipairs({ "expired_at", "expire_at" }) do
        local req = request()
        req.expired_at = nil
        req[name] = v
        local ok, list = core.validate(req, -2 ^ 63)
        assert.is_false(ok)
        assert.equal(name, list[1].field)
        assert.equal("range", list[1].code)
        assert.is_nil((core.encode(req, -2 ^ 63)))
      end
    end
  end)
end)
