-- The codec's size cap, its teaching errors (the nearest enum value, an
-- expiry in milliseconds) and the order of unknown keys of any type.
local link = require "portone.link"
local core = require "portone.link.core"
local cjson = require "cjson"
local requests = require "helpers.requests"

local NOW = 1700000000
local MiB = 1024 * 1024

local function base() return requests.base(NOW) end

local function only_error(r, opts)
  local ok, err = link.validate(r, opts or { now = NOW })
  assert.is_nil(ok)
  local body, err2 = link.encode(r, opts or { now = NOW })
  assert.is_nil(body)
  assert.same(err.errors, err2.errors)            -- validate and encode agree
  return err.errors
end

describe("the body size cap (max_body_bytes)", function()
  it("refuses a body over 1 MiB by default, naming the field, as too_large", function()
    local r = base()
    r.custom_data = { blob = ("x"):rep(MiB) }
    local errs = only_error(r)
    assert.equal(1, #errs)
    assert.equal("custom_data.blob", errs[1].field)
    assert.equal("too_large", errs[1].code)
    assert.equal("makes the body longer than 1048576 bytes (max_body_bytes)", errs[1].message)
  end)

  it("accepts a body of exactly the cap, and refuses one byte more", function()
    local r = base()
    r.custom_data = "x"
    local len = #assert(link.encode(r, { now = NOW }))
    local pad = 4096
    r.custom_data = ("x"):rep(1 + pad)
    local body = assert(link.encode(r, { now = NOW, max_body_bytes = len + pad }))
    assert.equal(len + pad, #body)
    assert.is_true(link.validate(r, { now = NOW, max_body_bytes = len + pad }))
    -- the field being written when the body passed the cap: the tail's
    -- expired_at for one byte more, custom_data for a cap well inside it
    local errs = only_error(r, { now = NOW, max_body_bytes = len + pad - 1 })
    assert.same({ "expired_at", "too_large" }, { errs[1].field, errs[1].code })
    errs = only_error(r, { now = NOW, max_body_bytes = len + pad - 2000 })
    assert.same({ "custom_data", "too_large" }, { errs[1].field, errs[1].code })
  end)

  it("stops a table reachable twice at each of 24 levels without building it", function()
    local t = { "leaf" }
    for _ = 1, 24 do t = { a = t, b = t } end     -- 2^24 leaves: a 167 MB body
    local r = base()
    r.custom_data = t
    -- CPU seconds: the capped walk takes ~0.04 s (~1.1 s under valgrind's
    -- memcheck), the whole 167 MB one some 160 times as long
    local limit = os.getenv("PLINK_VALGRIND") and 30 or 2
    local t0 = os.clock()
    local errs = only_error(r)
    assert.is_true(os.clock() - t0 < limit, "the walk went on past the cap")
    assert.equal(1, #errs)
    assert.equal("too_large", errs[1].code)
    assert.truthy(errs[1].field:find("^custom_data%.a%.a"), errs[1].field)
  end)

  it("names a top-level string that passes the cap, and still reports the other errors", function()
    local r = base()
    r.user_code = "imp" .. ("1"):rep(2 * MiB)
    r.amount = 0
    local errs = only_error(r)
    assert.equal(2, #errs)
    assert.same({ "user_code", "too_large" }, { errs[1].field, errs[1].code })
    assert.same({ "amount", "range" }, { errs[2].field, errs[2].code })
  end)

  it("counts the tail: a body the expiry pushes over the cap names expired_at", function()
    local r = base()
    r.custom_data = "x"
    local len = #assert(link.encode(r, { now = NOW }))
    local errs = only_error(r, { now = NOW, max_body_bytes = len - 1 })
    assert.same({ "expired_at", "too_large" }, { errs[1].field, errs[1].code })
  end)

  it("checks the option (a programmer error raises)", function()
    assert.has_error(function() link.encode(base(), { now = NOW, max_body_bytes = "big" }) end)
    assert.has_error(function() link.validate(base(), { now = NOW, max_body_bytes = 10 }) end)
    assert.has_error(function() core.encode(base(), NOW, 0) end)
    -- the in-line checks of encode's common call raise as check_args does
    assert.has_error(function() link.encode(nil, { now = NOW }) end,
      "bad argument #1 to 'encode' (table expected, got nil)")
    assert.has_error(function() link.encode(base(), 5) end,
      "bad argument #2 to 'encode' (table expected, got number)")
    assert.has_error(function() link.encode(base(), { now = "1700000000" }) end,
      "bad argument #2 to 'encode' (opts.now must be a number)")
    assert.is_string(link.encode(base(), { now = NOW, max_body_bytes = 4096 }))
    assert.is_string(link.encode(requests.base(os.time())))
  end)

  -- link.encode is a C function (core.bind_encode) that hands every call
  -- but the common one to a Lua function: both must behave as one wrapper
  it("link.encode: the C common path and its Lua fallback agree", function()
    local body = assert(link.encode(base(), { now = NOW }))
    -- opts with a metatable: read through __index, by the Lua fallback
    local proxied = setmetatable({}, { __index = { now = NOW } })
    assert.equal(body, link.encode(base(), proxied))
    -- max_body_bytes goes the Lua way too, with the same body
    assert.equal(body, link.encode(base(), { now = NOW, max_body_bytes = MiB }))
    -- extra arguments are ignored, as by a Lua function of two
    assert.equal(body, link.encode(base(), { now = NOW }, "extra"))
    -- errors: the same error object either way
    local r = base()
    r.amount = -1
    local b1, e1 = link.encode(r, { now = NOW })
    local b2, e2 = link.encode(r, proxied)
    assert.is_nil(b1)
    assert.is_nil(b2)
    assert.equal("validation", e1.kind)
    assert.same(e1.errors, e2.errors)
    assert.equal(tostring(e1), tostring(e2))
    -- NaN now raises (through the Lua fallback and core.encode)
    assert.has_error(function() link.encode(base(), { now = 0 / 0 }) end)
    -- a bad argument points at the caller of link.encode, like error(msg, 3)
    -- (not a tail call: that frame would be gone, for either)
    local ok, msg = pcall(function() local b = link.encode(nil); return b end)
    assert.is_false(ok)
    assert.matches("^spec/codec_limits_spec%.lua:%d+: bad argument #1 to 'encode'", msg)
    ok, msg = pcall(function() local v = link.validate(nil); return v end)
    assert.is_false(ok)
    assert.matches("^spec/codec_limits_spec%.lua:%d+: bad argument #1 to 'validate'", msg)
  end)

  it("link.encode without opts reads the clock through os.time", function()
    local r = base()
    r.expired_at = os.time() - 1       -- past for the real clock
    local body, err = link.encode(r)
    assert.is_nil(body)
    assert.equal("expired", err.errors[1].code)
    r.expired_at = os.time() + 3600
    assert.is_string(link.encode(r))
    assert.has_error(function() core.bind_encode(nil, print, os.time) end)
    -- a clock that gives no number: core.encode's own argument checks
    local fallback = function() error("not reached") end
    local enc = core.bind_encode(fallback, print, function() return 0 / 0 end)
    assert.has_error(function() enc(base()) end, "bad argument #2 to 'enc' (now must not be NaN)")
    enc = core.bind_encode(fallback, print, function() return "soon" end)
    assert.has_error(function() enc(base()) end)
    enc = core.bind_encode(fallback, print, function() return NOW end)
    assert.equal(link.encode(base(), { now = NOW }), enc(base()))
  end)
end)

describe("an unknown enum value", function()
  it("suggests the nearest value instead of listing all 31", function()
    local r = base()
    r.pay_methods[2].pay_method = "crad"
    local errs = only_error(r)
    assert.equal("pay_methods[2].pay_method", errs[1].field)
    assert.equal("enum", errs[1].code)
    assert.equal("card", errs[1].suggestion)
    assert.equal("unknown value 'crad', did you mean 'card'?", errs[1].message)
  end)

  it("suggests the value that differs only in case", function()
    local r = base()
    r.display_language = "KO"
    r.direct = { pg = "INIpayTest", pay_method = "KakaoPay" }
    local errs = only_error(r)
    assert.same({ "display_language", "ko" }, { errs[1].field, errs[1].suggestion })
    assert.same({ "direct.pay_method", "kakaopay" }, { errs[2].field, errs[2].suggestion })
  end)

  it("lists the values when none is near", function()
    local r = base()
    r.language = "fr"
    r.pay_methods[1].pay_method = "bitcoin"
    local errs = only_error(r)
    assert.equal("must be one of: ko, en", errs[1].message)
    assert.is_nil(errs[1].suggestion)
    assert.truthy(errs[2].message:find("^must be one of: card, trans, "))
    assert.is_nil(errs[2].suggestion)
  end)
end)

describe("an expiry that looks like milliseconds", function()
  it("says so, with the value in seconds", function()
    local r = base()
    r.expired_at = (NOW + 3600) * 1000
    local errs = only_error(r)
    assert.equal("expired_at", errs[1].field)
    assert.equal("range", errs[1].code)
    assert.equal(("looks like milliseconds: must be unix seconds (%d / 1000 = %d)")
      :format((NOW + 3600) * 1000, NOW + 3600), errs[1].message)
  end)

  it("is not claimed for a value that is no date in milliseconds either", function()
    local r = base()
    r.expire_at, r.expired_at = 2 ^ 52, nil
    local errs = only_error(r)
    assert.equal("must be at most 253402300799 (year 9999)", errs[1].message)
  end)
end)

describe("unknown keys that are neither strings nor numbers", function()
  it("come out in one order whatever the table's traversal order", function()
    local lists = {}
    for n = 1, 20 do
      local r = base()
      -- a different insertion history each time
      for i = 1, n do r["tmp" .. i] = true end
      for i = 1, n do r["tmp" .. i] = nil end
      r[true] = 1
      r[print] = 1
      r[false] = 1
      r[{}] = 1
      r[2] = 1
      r.zz = 1
      local errs = only_error(r)
      local fields = {}
      for _, e in ipairs(errs) do fields[#fields + 1] = e.field end
      lists[#lists + 1] = table.concat(fields, " ")
    end
    for i = 2, #lists do assert.equal(lists[1], lists[i]) end
    assert.equal("zz [2] [false] [true] [table] [function]", lists[1])
  end)
end)

describe("the single walk", function()
  it("gives the same body whatever order the keys went in", function()
    local want = assert(link.encode(requests.bench(), { now = requests.DOCS_NOW }))
    for n = 1, 10 do
      local src = requests.bench()
      local r = {}
      local keys = {}
      for k in pairs(src) do keys[#keys + 1] = k end
      table.sort(keys)
      for i = 1, #keys do
        local k = keys[(i * n) % #keys + 1]
        r[k] = src[k]
      end
      assert.equal(want, link.encode(r, { now = requests.DOCS_NOW }))
    end
    assert.equal(1087, #want)
    assert.is_table(cjson.decode(cjson.decode(want).payment_info))
  end)
end)
