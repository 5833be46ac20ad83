-- REST V1 tokens against evictions: a shared dict written with set, add or
-- incr drops its least recently used keys when it is full, whichever they
-- are. A revoke must refuse every token issued before it whatever was
-- dropped; a dropped token may answer 401 (the client gets a new one), but
-- what the stats dict (counters, webhook logs) loses must not touch tokens.
-- Which key goes first depends on the traffic, so these cases run the module
-- outside nginx with dict doubles and drop each key in turn (a full dict in
-- a real sandbox: spec/sandbox_v1_spec.lua, "keys and auth").
local fake_dict = require "helpers.fake_dict"

local MODULES = { "portone.sandbox.state", "portone.sandbox.tokens" }
-- every dict the sandbox declares; the payment store and the settings are
-- written only with safe_set and safe_add, which never evict
local DICTS = { "portone_links", "portone_faults", "portone_payments", "portone_settings",
                "portone_stats", "portone_tokens", "portone_log" }
local EVICTING = { "portone_links", "portone_faults", "portone_stats", "portone_tokens", "portone_log" }

describe("sandbox tokens", function()
  local saved, shared, tokens
  local clock = 1000000   -- ngx.time()

  -- a fresh sandbox: empty dicts, modules loaded anew
  local function fresh()
    shared = {}
    for _, name in ipairs(DICTS) do shared[name] = fake_dict.new() end
    clock = 1000000
    rawset(_G, "ngx", { shared = shared, update_time = function() end, time = function() return clock end })
    for _, m in ipairs(MODULES) do package.loaded[m] = nil end
    tokens = require "portone.sandbox.tokens"
  end

  -- A token issued before a revoke (a) and one issued after it, in use (b).
  local function setup()
    local a = tokens.issue()
    tokens.revoke_all()
    local b = tokens.issue()
    assert.is_false(tokens.valid(a))
    assert.is_true(tokens.valid(b))
    return a, b
  end

  before_each(function() saved = rawget(_G, "ngx") end)
  after_each(function()
    rawset(_G, "ngx", saved)
    for _, m in ipairs(MODULES) do package.loaded[m] = nil end
  end)

  it("a revoke after any one key was evicted still refuses every token issued before it", function()
    -- the keys each dict holds once a and b are issued
    fresh()
    setup()
    local cases = {}
    for _, name in ipairs(EVICTING) do
      for _, key in ipairs(shared[name]:keys()) do cases[#cases + 1] = { name, key } end
    end
    assert.is_true(#cases > 0, "the tokens are in no dict")
    for _, c in ipairs(cases) do
      fresh()
      local a, b = setup()
      shared[c[1]].data[c[2]] = nil   -- evicted
      tokens.revoke_all()
      local what = c[1] .. " lost " .. c[2]
      assert.is_false(tokens.valid(a), what)
      assert.is_false(tokens.valid(b), what)   -- was live, revoked now: stays refused
      local n = tokens.issue()
      assert.is_true(tokens.valid(n), what)
      assert.is_false(n == a or n == b, what)
      assert.is_false(tokens.valid(b), what)
    end
  end)

  it("a live token stays live and a revoked one revoked when the stats dict loses everything", function()
    fresh()
    local a, b = setup()
    shared.portone_stats:flush_all()
    assert.is_true(tokens.valid(b))
    assert.is_false(tokens.valid(a))
    assert.equal(b, (tokens.issue()))   -- still the current token
    shared.portone_stats:flush_all()
    tokens.revoke_all()
    assert.is_false(tokens.valid(b))
    assert.is_false(tokens.valid(a))
  end)

  it("a revoke between reading the current token and extending it is not undone", function()
    fresh()
    local t, exp, now = tokens.issue()
    assert.equal(now + tokens.TTL, exp)
    -- in its last minute, the current token gets 5 more minutes
    clock = 1000000 + tokens.TTL - 30
    local t2, exp2 = tokens.issue()
    assert.equal(t, t2)
    assert.equal(exp + tokens.EXTEND_BY, exp2)
    -- another worker revokes right after this one read the token's expiry
    -- (every dict: wherever the tokens are kept)
    local armed = true
    for _, name in ipairs(DICTS) do
      local d = shared[name]
      local get = d.get
      d.get = function(self, k)
        local v = get(self, k)
        if armed and v ~= nil and k:find(t, 1, true) then
          armed = false
          tokens.revoke_all()
        end
        return v
      end
    end
    clock = clock + tokens.EXTEND_BY
    local t3 = tokens.issue()
    assert.is_false(armed, "issue never read the token")
    assert.not_equal(t, t3)
    assert.is_false(tokens.valid(t))
    assert.is_true(tokens.valid(t3))
  end)
end)
