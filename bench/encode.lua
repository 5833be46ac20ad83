-- bench/encode.lua - link.encode (validate + double-encode in C) against
-- the other ways to get the same body, in one process, in alternating
-- rounds (each contender keeps its best round, so a busy machine slows them
-- alike instead of skewing the ratios):
--   link.encode        the module's encode (the figure the targets name)
--   core.encode        the C core alone, without the Lua wrapper
--   cjson.encode(req)  lua-cjson encoding the table once, no checks at all
--   Lua rules + cjson  bench/lua_codec.lua: every rule of the C core in
--                      plain Lua, then two cjson.encode calls
--   C-API walk floor   bench/walkfloor.c: lua_next/lua_type/lua_tolstring
--                      over every key and value once, nothing else
--   invalid (3 errors) link.encode of a request with three errors
-- Set BASELINE=path/to/older/build (an older checkout's build/ directory)
-- to race that core.encode (valid and invalid) in the same rounds.
--
--   make bench-encode            (Lua 5.4, then LuaJIT)
--   LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;bench/?.lua;;" \
--   LUA_CPATH="build/5.4/?.so;build/5.4/bench/?.so;;" lua5.4 bench/encode.lua [seconds]
local link = require "portone.link"
local cjson = require "cjson"
local walkfloor = require "walkfloor"
local lua_codec = require "lua_codec"
local requests = require "helpers.requests" -- spec/ is on LUA_PATH (make bench-encode)

local SECONDS = tonumber(arg and arg[1]) or 5.0
local NOW = requests.DOCS_NOW
local req = requests.bench()
local bad = requests.bench_invalid()
local opts = { now = NOW }

-- The contenders must agree before they race.
local body = assert(link.encode(req, opts), "the bench request must be valid")
local a, b = cjson.decode(body), cjson.decode(assert(lua_codec.encode(req, NOW)))
assert(a.expired_at == b.expired_at and cjson.decode(a.payment_info).title
  == cjson.decode(b.payment_info).title)
local _, err = link.encode(bad, opts)
assert(err and #err.errors == 3, "the invalid request must have three errors")
local _, lerr = lua_codec.validate(bad, NOW)
assert(#lerr == 3, "the Lua contender finds the same three errors")

local baseline
-- (Lua 5.4 only: two copies of the core share the registry's metatable
-- names, which LuaJIT's collector does not survive.)
if os.getenv("BASELINE") and os.getenv("BASELINE") ~= "" and not jit then
  local so = ("%s/%s/portone/link/core.so"):format(os.getenv("BASELINE"), jit and "5.1" or "5.4")
  baseline = assert(package.loadlib(so, "luaopen_portone_link_core"))()
end

-- ops/s of f over about `secs` of CPU time
local function rate(f, secs)
  local n, batch = 0, 200
  local t0 = os.clock()
  local el
  repeat
    for _ = 1, batch do f() end
    n = n + batch
    el = os.clock() - t0
  until el >= secs
  return n / el
end

local contenders = {
  { "link.encode", function() link.encode(req, opts) end },
  { "core.encode", function() link.core.encode(req, NOW) end },
  { "cjson.encode(req)", function() cjson.encode(req) end },
  { "Lua rules + cjson x2", function() lua_codec.encode(req, NOW) end },
  { "C-API walk floor", function() walkfloor.walk(req) end },
  { "invalid (3 errors)", function() link.encode(bad, opts) end },
}
if baseline then
  contenders[#contenders + 1] = { "BASELINE core.encode", function() baseline.encode(req, NOW) end }
  contenders[#contenders + 1] = { "BASELINE invalid", function() baseline.encode(bad, NOW) end }
  -- like with like: the baseline is a bare core, so race this build's core
  contenders[#contenders + 1] = { "core invalid", function() link.core.encode(bad, NOW) end }
end

-- more, shorter rounds: more chances at a quiet slice on a shared host
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS")) or 30
local best = {}
for _, c in ipairs(contenders) do
  for _ = 1, 2000 do c[2]() end           -- warm up (and let LuaJIT trace)
end
for _ = 1, ROUNDS do
  for i, c in ipairs(contenders) do
    -- each round starts from a clean heap: else a contender pays for
    -- sweeping the garbage the one before it left (link.encode, first of a
    -- round, measured 0.5-0.7 us slower than core.encode on 5.4 that way)
    collectgarbage()
    local r = rate(c[2], SECONDS / ROUNDS / #contenders)
    if not best[i] or r > best[i] then best[i] = r end
  end
end

local us = {}
for i, c in ipairs(contenders) do us[c[1]] = 1e6 / best[i] end
local enc = us["link.encode"]

local f = io.popen("cat /proc/loadavg 2>/dev/null")
local load = f and f:read("l") or "?"
if f then f:close() end
print(("%s: %d-byte body; best of %d alternating rounds, %.1f s in all; load %s")
  :format(jit and jit.version or _VERSION, #body, ROUNDS, SECONDS, load))
for _, c in ipairs(contenders) do
  print(("  %-22s %7.3f us/op  %9.0f ops/s"):format(c[1], us[c[1]], 1e6 / us[c[1]]))
end
local function verdict(ok) return ok and "met" or "NOT MET" end
print(("  link.encode %.3f us                     target <= 1.6 us      %s")
  :format(enc, verdict(enc <= 1.6)))
-- The 1.6 us of the [codec-v2] issue was set on a machine whose C-API walk
-- floor for this request was 0.76 us (Lua 5.4) and 0.88 us (LuaJIT): the
-- same target in floors, for a machine that walks the table slower or faster.
local issue_floor = jit and 0.88 or 0.76
local scaled = 1.6 * us["C-API walk floor"] / issue_floor
print(("  link.encode %.3f us  target scaled by the floor (%.2f / %.2f us) <= %.2f us  %s")
  :format(enc, us["C-API walk floor"], issue_floor, scaled, verdict(enc <= scaled)))
print(("  cjson.encode(req) / link.encode = %.2fx   target >= 1.2x        %s")
  :format(us["cjson.encode(req)"] / enc, verdict(us["cjson.encode(req)"] / enc >= 1.2)))
print(("  Lua rules + cjson x2 / link.encode = %.2fx target >= 6x          %s")
  :format(us["Lua rules + cjson x2"] / enc, verdict(us["Lua rules + cjson x2"] / enc >= 6)))
print(("  link.encode / C-API walk floor = %.2fx    (the gap to the physical limit)")
  :format(enc / us["C-API walk floor"]))
if baseline then
  print(("  invalid (core.encode): %.3f us, baseline %.3f us  target: not slower   %s")
    :format(us["core invalid"], us["BASELINE invalid"],
      verdict(us["core invalid"] <= us["BASELINE invalid"] * 1.02)))
else
  print(("  invalid: %.3f us (set BASELINE=older/build to compare)"):format(us["invalid (3 errors)"]))
end
