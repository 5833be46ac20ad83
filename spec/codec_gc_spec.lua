-- The codec under hostile __gc finalizers: the collector runs while the
-- codec allocates (each error entry), and a finalizer may clear, replace or
-- grow the very tables being validated. Every pointer the codec keeps into
-- a Lua string must stay anchored: run under ASan (build/sanlua) and
-- valgrind this spec shows a use-after-free as a crash; on a plain build,
-- as keys and paths that were never in the request.
local core = require "portone.link.core"
local requests = require "helpers.requests"

local NOW = requests.DOCS_NOW

local gc = require "helpers.gc"
local finalized = gc.finalized

-- Every key the spec puts in a request has this shape (and nothing else
-- keeps the strings alive): an unknown_field error must name such a key,
-- byte for byte.
local TAIL = ("x"):rep(48)                  -- > 40 bytes: not interned on 5.4
local function key(prefix, i)
  return ("%s_%05d_%s"):format(prefix, i, TAIL)
end
local function known(k)
  return k:match("^%l+%d*_%d%d%d%d%d_(x+)$") == TAIL
end

-- A request with many errors (so the codec allocates, and the collector
-- runs, all through the walk): 300 unknown keys at the top; when n is even
-- also the bench request's fields, 10 unknown keys in each pay method, a
-- duplicate, and an object custom_data with 100 keys each holding an
-- error (NaN); long strings everywhere.
local function hostile_request(n)
  local req = n % 2 == 0 and requests.bench() or {}
  for i = 1, 300 do req[key("top" .. n, i)] = ("v"):rep(50) .. i end
  if n % 2 == 1 then return req end
  for _, pm in ipairs(req.pay_methods) do
    pm.pg = ("PG_" .. n .. "_"):rep(4)           -- a long, non-interned pg
    for i = 1, 10 do pm[key("pm" .. n, i)] = i end
  end
  req.pay_methods[4] = { pg = req.pay_methods[1].pg, pay_method = "card", label = "dup" }
  local cd = {}
  for i = 1, 100 do cd[key("cd" .. n, i)] = { ("w"):rep(45) .. i, i, false, 0 / 0 } end
  req.custom_data = cd
  return req
end

local edits = {
  clear = function(req)
    for k in pairs(req) do req[k] = nil end
    if type(req.custom_data) == "table" then
      for k in pairs(req.custom_data) do req.custom_data[k] = nil end
    end
  end,
  replace = function(req)
    for k, v in pairs(req) do
      if type(v) == "string" then req[k] = v .. "!" end
    end
    req.custom_data = { replaced = ("r"):rep(100) }
    if type(req.pay_methods) == "table" then
      for i in ipairs(req.pay_methods) do
        req.pay_methods[i] = { pg = ("Q"):rep(50), pay_method = "card", label = "new" }
      end
    end
  end,
  grow = function(req, i)
    for j = 1, 3 do req[key("grow" .. i, j)] = j end
    if type(req.custom_data) == "table" then
      for j = 1, 3 do req.custom_data[key("cdgrow" .. i, j)] = j end
    end
    if type(req.pay_methods) == "table" and #req.pay_methods < 20 then
      req.pay_methods[#req.pay_methods + 1] = { pg = "X", pay_method = "card", label = "more" }
    end
  end,
}

-- Runs fn(req) with finalizers queued that each apply edit to req (all but
-- the first `after` of them, so the edits land at different points of the
-- walk), and the collector stepping as often as it can; returns fn's
-- results and how many finalizers ran inside fn.
local sink -- luacheck: ignore 241 (the garbage the finalizers make, never read)
local function under_attack(req, edit, fn, after)
  local inside, during = false, 0
  collectgarbage("collect")
  local mode
  if _VERSION == "Lua 5.4" then
    -- lua5.4 runs the generational collector; incremental with no pause
    -- steps (and finalizes) on nearly every allocation
    mode = collectgarbage("incremental", 1, 1000)
    collectgarbage("step", 0)   -- the debt the full collection left is paid
  else
    collectgarbage("setpause", 1)
    collectgarbage("setstepmul", 1000)
    collectgarbage("step", 0)
  end
  -- 50 finalizers become garbage just before the call; each one that runs
  -- inside the call arms another, so with no pause and a high step
  -- multiplier some are pending at every cycle the collector finishes
  -- during the codec's allocations.
  local armed = 0
  local function arm()
    armed = armed + 1
    if armed > 150 then return end
    local i = armed
    finalized(function()
      if inside then
        during = during + 1
        if during > (after or 0) then edit(req, i) end
        arm()
        -- debt for the collector: it runs on (and frees what the edit
        -- dropped) at the codec's next allocations
        sink = {}
        for j = 1, 16 do sink[j] = ("j"):rep(1000) .. j end
      end
    end)
  end
  for _ = 1, 50 do arm() end
  inside = true
  local r = table.pack and table.pack(fn(req)) or { n = 2, fn(req) }
  inside = false
  if mode then
    collectgarbage(mode)
    collectgarbage("incremental", 200, 100)
    collectgarbage(mode)
  else
    collectgarbage("setpause", 200)
    collectgarbage("setstepmul", 200)
  end
  collectgarbage("collect")
  return r, during
end

-- (finalizers skipped before the edits start) per request; odd runs use
-- the unknown-keys-only request. Fewer under ASan and valgrind, which are
-- slow and need only one bad read.
-- valgrind, ~50x slower than a plain run, gets one run per case: memcheck
-- flags the first read of freed memory as ASan does.
local RUNS = os.getenv("PLINK_VALGRIND") and { 10 }
  or os.getenv("PLINK_SANITIZED") and { 0, 0, 10, 10 } or { 0, 0, 10, 10, 30, 30 }

local PATH = "^[%w_%[%]%.\"]*$"

local function check_list(list)
  assert.is_table(list)
  assert.is_true(#list > 0)
  for _, e in ipairs(list) do
    assert.is_string(e.field)
    assert.is_string(e.code)
    assert.is_string(e.message)
    assert.truthy(e.field:find(PATH), e.field)
    if e.code == "unknown_field" then
      local last = e.field:match("([%w_]+)$")
      assert.is_true(known(last), "an unknown key that was never in the request: " .. e.field)
      assert.truthy(e.message:find(last, 1, true), e.message)
    end
  end
end

-- #lua54: the schedule that makes finalizers run inside the codec call is
-- tuned to 5.4's collector (and runs under ASan and valgrind, which use 5.4);
-- under LuaJIT it depends on the heap the earlier spec files left, so it
-- could pass without testing anything. The C code is the same for both.
describe("the codec under finalizers that edit the request #lua54", function()
  for _, fname in ipairs { "validate", "encode" } do
    for _, ename in ipairs { "clear", "replace", "grow" } do
      it(("%s survives finalizers that %s the request's tables"):format(fname, ename), function()
        local total = 0
        for n, after in ipairs(RUNS) do
          local r, during = under_attack(hostile_request(n), edits[ename], function(req)
            return core[fname](req, NOW)
          end, after)
          total = total + during
          assert.is_falsy(r[1])
          check_list(r[2])
        end
        -- the spec is only worth something when finalizers ran mid-call
        assert.is_true(total > 0, "no finalizer ran during the codec call")
      end)
    end
  end

  it("a finalizer that calls encode itself gets its own buffers and anchors", function()
    local inner = {}
    local r, during = under_attack(hostile_request(9), function(req, i)
      edits.grow(req, i)
      local body, list = core.encode(requests.bench(), NOW)
      inner[#inner + 1] = body ~= nil and #body or list
    end, function(req) return core.validate(req, NOW) end)
    assert.is_true(during > 0)
    assert.is_false(r[1])
    check_list(r[2])
    for _, v in ipairs(inner) do assert.equal(1087, v) end
  end)

  it("the same request untouched still encodes to the same bytes afterwards", function()
    local a = core.encode(requests.bench(), NOW)
    under_attack(hostile_request(10), edits.grow, function(req) return core.encode(req, NOW) end)
    assert.equal(a, core.encode(requests.bench(), NOW))
  end)
end)

-- A raise inside the walk (a finalizer's error, which LuaJIT and 5.1 pass
-- on to the call that ran the collector; or out of memory) must not leave
-- the shared buffers marked busy: every later call would then make its own
-- buffers and anchor table (291 bytes a call against 43, measured).
-- 5.4 turns finalizer errors into warnings, so this runs where they raise.
if newproxy then -- luacheck: ignore 113
  describe("the codec after a raise inside its walk", function()
    local function bytes_per_encode(n)
      local req = requests.bench()
      return gc.bytes_per_call(n, function() core.encode(req, NOW) end)
    end

    it("takes its shared buffers back: later calls allocate no more than before", function()
      local base = bytes_per_encode(100)
      local inside, raised = false, nil
      for _ = 1, 50 do
        local req = {}
        for i = 1, 2000 do req["unknown_" .. i] = i end   -- the codec allocates all through
        collectgarbage("setpause", 1)
        collectgarbage("setstepmul", 1000)
        for _ = 1, 20 do
          finalized(function() if inside then error("finalizer failed") end end)
        end
        inside = true
        local ok, e = pcall(core.encode, req, NOW)
        inside = false
        collectgarbage("setpause", 200)
        collectgarbage("setstepmul", 200)
        if not ok then raised = e; break end
      end
      assert.truthy(raised and tostring(raised):find("finalizer failed", 1, true),
        "no finalizer raised inside encode: " .. tostring(raised))
      local after = bytes_per_encode(100)
      assert.is_true(after <= base * 1.5 + 16, ("%.0f bytes a call after, %.0f before"):format(after, base))
      assert.equal(1087, #assert(core.encode(requests.bench(), NOW)))
    end)
  end)
end
