-- UTF-8: Korean text and 4-byte sequences survive byte for byte; lengths
-- count code points; invalid UTF-8 and control characters are rejected with
-- the path of the field that holds them.
local link = require "portone.link"
local cjson = require "cjson"
local requests = require "helpers.requests"

local NOW = 1700000000

local function base()
  local r = requests.base(NOW)
  r.pay_methods[2] = { pg = "INIpayTest", pay_method = "trans", label = "계좌이체" }
  return r
end

local function info_of(r)
  local body, err = link.encode(r, { now = NOW })
  assert.is_nil(err and tostring(err))
  return cjson.decode(cjson.decode(body).payment_info), body
end

local function one_error(r)
  local body, err = link.encode(r, { now = NOW })
  assert.is_nil(body)
  assert.equal("validation", err.kind)
  assert.equal(1, #err.errors, tostring(err))
  return err.errors[1]
end

describe("UTF-8 text", function()
  it("keeps Korean text byte for byte", function()
    local r = base()
    r.buyer_name = "홍길동"
    r.buyer_addr = "서울특별시 강남구 테헤란로 1, 101동 1001호"
    r.custom_data = { memo = "빠른 배송 부탁드립니다", ["주문"] = { "첫째", "둘째" } }
    local info, body = info_of(r)
    assert.truthy(body:find("테스트가맹점", 1, true))
    assert.truthy(body:find("\\\"주문\\\":[\\\"첫째\\\",\\\"둘째\\\"]", 1, true))
    assert.equal("홍길동", info.buyer_name)
    assert.equal(r.buyer_addr, info.buyer_addr)
    assert.same(r.custom_data, info.custom_data)
    assert.equal("계좌이체", info.pay_methods[2].label)
  end)

  it("keeps 4-byte sequences (emoji) byte for byte", function()
    local r = base()
    r.title = "🎉 오픈 기념 😀 𝄞"
    r.name = "\240\159\152\128"
    r.custom_data = { ["😀"] = "\244\143\191\191" }      -- U+10FFFF, the last code point
    local info, body = info_of(r)
    assert.truthy(body:find("🎉 오픈 기념 😀 𝄞", 1, true))
    assert.equal(r.title, info.title)
    assert.equal("😀", info.name)
    assert.equal("\244\143\191\191", info.custom_data["😀"])
  end)

  it("counts code points, not bytes", function()
    local r = base()
    r.merchant_uid = ("😀"):rep(40)        -- 160 bytes, 40 characters
    r.buyer_name = ("홍"):rep(16)
    r.title = ("가"):rep(256)
    assert.is_true(link.validate(r, { now = NOW }))
    r.merchant_uid = ("😀"):rep(41)
    local e = one_error(r)
    assert.equal("merchant_uid", e.field)
    assert.equal("too_long", e.code)
    assert.equal("must be at most 40 characters, got 41", e.message)
  end)

  it("accepts the boundaries of each sequence length", function()
    local r = base()
    -- U+00A0 U+07FF U+0800 U+D7FF U+E000 U+FFFF U+10000 U+10FFFF
    r.title = "\194\160 \223\191 \224\160\128 \237\159\191 \238\128\128 \239\191\191 "
      .. "\240\144\128\128 \244\143\191\191"
    assert.is_true(link.validate(r, { now = NOW }))
  end)
end)

local INVALID = {
  { "overlong 2-byte /", "\192\175" },
  { "overlong 2-byte C1", "\193\191" },
  { "overlong 3-byte", "\224\128\175" },
  { "overlong 4-byte", "\240\128\128\175" },
  { "surrogate high", "\237\160\128" },
  { "surrogate low", "\237\191\191" },
  { "above U+10FFFF", "\244\144\128\128" },
  { "lead byte F5", "\245\128\128\128" },
  { "byte FF", "\255" },
  { "truncated 2-byte", "\195" },
  { "truncated 3-byte", "\226\130" },
  { "truncated 4-byte", "\240\159\152" },
  { "truncated by ASCII", "\226\130a" },
  { "stray continuation byte", "\128" },
  { "continuation after a full sequence", "가\128" },
}

describe("invalid UTF-8", function()
  for _, c in ipairs(INVALID) do
    local what, bytes = c[1], c[2]

    it("is rejected in a top-level field: " .. what, function()
      local r = base()
      r.title = "제목 " .. bytes .. " 끝"
      local e = one_error(r)
      assert.equal("title", e.field)
      assert.equal("format", e.code)
      assert.truthy(e.message:find("UTF-8", 1, true))
    end)

    it("is rejected in a pay_methods entry: " .. what, function()
      local r = base()
      r.pay_methods[2].label = bytes
      local e = one_error(r)
      assert.equal("pay_methods[2].label", e.field)
      assert.equal("format", e.code)
    end)

    it("is rejected deep in custom_data: " .. what, function()
      local r = base()
      r.custom_data = { items = { "a", "b", bytes } }
      local e = one_error(r)
      assert.equal("custom_data.items[3]", e.field)
      assert.equal("format", e.code)
    end)
  end

  it("is rejected in a custom_data key, with the key escaped in the path", function()
    local r = base()
    r.custom_data = { ["k\192\175"] = 1 }
    local e = one_error(r)
    assert.equal('custom_data["k\\192\\175"]', e.field)
    assert.equal("format", e.code)
  end)

  it("names the byte where it goes wrong", function()
    local r = base()
    r.name = "ab\237\160\128"
    local e = one_error(r)
    assert.equal("is not valid UTF-8 (UTF-16 surrogate at byte 3)", e.message)
  end)

  -- Hangul from U+D000 leads with ED, as surrogates do: the fast path that
  -- takes two 3-byte characters at once must tell them apart by the next byte
  it("tells Hangul led by ED from a surrogate, first or second of a pair", function()
    local r = base()
    r.name = "\237\149\156\237\149\156\237\158\163ab"   -- 한한힣ab
    assert.is_string((link.encode(r, { now = NOW })))
    r.name = "\237\149\156\237\160\128abcd"
    assert.equal("is not valid UTF-8 (UTF-16 surrogate at byte 4)", one_error(r).message)
    r.name = "\237\191\191\237\149\156abcd"
    assert.equal("is not valid UTF-8 (UTF-16 surrogate at byte 1)", one_error(r).message)
  end)
end)

describe("control characters", function()
  local CONTROLS = { "\0", "\1", "\t", "\n", "\r", "\27", "\31", "\127", "\194\128", "\194\133", "\194\159" }
  for _, ch in ipairs(CONTROLS) do
    local shown = ch:gsub(".", function(b) return "\\" .. b:byte() end)
    it("are rejected in request fields: " .. shown, function()
      local r = base()
      r.pay_methods[1].label = "a" .. ch .. "b"
      local e = one_error(r)
      assert.equal("pay_methods[1].label", e.field)
      assert.equal("format", e.code)
      assert.truthy(e.message:find("control character", 1, true))
    end)

    it("are kept (escaped) in custom_data: " .. shown, function()
      local r = base()
      r.custom_data = { note = "a" .. ch .. "b" }
      local info, body = info_of(r)
      assert.equal("a" .. ch .. "b", info.custom_data.note)
      if ch:byte() < 32 then assert.is_nil(body:find(ch, 1, true)) end
    end)
  end

  it("accepts U+00A0 and later (not Cc)", function()
    local r = base()
    r.title = "a\194\160b\226\128\168c"       -- NBSP, LINE SEPARATOR
    assert.is_true(link.validate(r, { now = NOW }))
  end)
end)
