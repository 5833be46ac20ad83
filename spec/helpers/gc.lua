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
-- only some, so the rest are pending and run at the next allocations the
-- collector steps at, inside the call. Best under eager_gc; a call that
-- allocates little may still see none (LuaJIT steps once a KB).
-- (5.1 and LuaJIT finalize ~100 objects a step at the eager_gc settings,
-- 5.4 ~10; and on 5.4 each setmetatable with __gc walks the object list)
local BATCH = newproxy and 2000 or 100 -- luacheck: ignore 113
function M.with_finalizers(on_fin, call, ...)
  local inside, outside, hits = false, false, 0
  local function fin()
    if not inside then outside = true; return end
    hits = hits + 1
    on_fin()
  end
  for _ = 1, BATCH do M.finalized(fin) end
  for _ = 1, 100000 do
    if outside then break end
    collectgarbage("step", 0)
  end
  inside = true
  -- no allocation between the flag and the call, nor after it
  local a, b, c, d, e = call(...)
  inside = false
  return hits, a, b, c, d, e
end
-- LuaJIT never runs finalizers while a trace runs (lj_gc_step)
if jit then jit.off(M.with_finalizers, true) end -- luacheck: ignore 113

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
