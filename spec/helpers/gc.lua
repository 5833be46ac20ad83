--- Finalizers at chosen moments, for specs of C code that must survive a
-- __gc finalizer running inside it (the collector runs finalizers at the
-- allocations a C function makes).
--
--   local gc = require "helpers.gc"
--   gc.eager_gc(function()
--     local hits, a, b = gc.with_finalizers(on_fin, fn, ...)
--   end)
local M = {}

--- An object whose finalizer calls f (newproxy on 5.1 / LuaJIT, which
-- ignore __gc on tables).
function M.finalized(f)
  if newproxy then -- luacheck: ignore 113
    local u = newproxy(true) -- luacheck: ignore 113
    getmetatable(u).__gc = f
    return u
  end
  return setmetatable({}, { __gc = f })
end

--- Runs call(...) with finalizers pending, and on_fin() in each of those
-- that runs inside it; returns how many did, and call's first five
-- results. A batch of finalizers is armed, then the collector is stepped
-- (outside the call) until the first of them has run: a step finalizes
-- only some, so the rest are pending and run at the allocations inside
-- the call, where the collector (under eager_gc) steps at each one.
-- Arming runs with the collector stopped: a small heap would otherwise
-- finish a cycle, and the whole batch, among the batch's own allocations.
local BATCH = newproxy and 2000 or 100 -- luacheck: ignore 113
local step_until
if newproxy then -- luacheck: ignore 113
  -- 5.1 / LuaJIT: at pause 0 each cycle starts owing the whole heap, and
  -- "step" repeats steps while there is debt, to the cycle's end. An
  -- allocation steps once (~100 finalizers at stepmul 1000) and, with
  -- that debt, so does each allocation after it.
  function step_until(done)
    for _ = 1, 1000000 do
      if done() then return end
      local _ = {}
    end
  end
else
  -- 5.4: a step finalizes ten at a time until its work is done: at stepmul
  -- 1 that is ~20. It then owes 8 KB before the next; at stepmul 1000 and
  -- step size 2 bytes one more step of ten leaves it owing nothing, so
  -- each allocation in the call steps (a number's conversion is enough).
  function step_until(done)
    local stepmul = collectgarbage("setstepmul", 1)
    for _ = 1, 1000000 do
      if done() then break end
      collectgarbage("step", 0)
    end
    collectgarbage("incremental", 0, 1000, 1)
    collectgarbage("step", 0)
    collectgarbage("incremental", 0, stepmul, 13)   -- 13: the default step size
  end
end

function M.with_finalizers(on_fin, call, ...)
  local inside, outside, hits = false, false, 0
  local function fin()
    if not inside then outside = true; return end
    hits = hits + 1
    on_fin()
  end
  local function done() return outside end
  collectgarbage("stop")
  for _ = 1, BATCH do M.finalized(fin) end
  -- no allocation from here to the first step
  collectgarbage("restart")
  step_until(done)
  inside = true
  -- no allocation between the flag and the call, nor after it
  local a, b, c, d, e = call(...)
  inside = false
  return hits, a, b, c, d, e
end
-- LuaJIT never runs finalizers while a trace runs (lj_gc_step), and a
-- trace may sink step_until's allocation altogether
if jit then jit.off(M.with_finalizers, true); jit.off(step_until, true) end -- luacheck: ignore 113

--- Runs fn with the collector as with_finalizers wants it (incremental,
-- stepping at every allocation), then restores the defaults; raises what
-- fn raised.
function M.eager_gc(fn)
  pcall(collectgarbage, "incremental")
  local pause = collectgarbage("setpause", 0)
  local stepmul = collectgarbage("setstepmul", 1000)
  local ok, err = pcall(fn)
  collectgarbage("setpause", pause)
  collectgarbage("setstepmul", stepmul)
  collectgarbage()
  if not ok then error(err, 0) end
end

--- Bytes Lua allocates per call of fn(), over n calls with the collector
-- stopped, after n calls outside the count: LuaJIT compiles a hot loop
-- into the same heap, which a count must not catch.
function M.bytes_per_call(n, fn)
  for _ = 1, n do fn() end
  collectgarbage("collect")
  collectgarbage("stop")
  local before = collectgarbage("count")
  for _ = 1, n do fn() end
  local kb = collectgarbage("count") - before
  collectgarbage("restart")
  return kb * 1024 / n
end

return M
