--- Runs one fuzz checker on saved inputs outside libFuzzer, with the
-- ordinary build (make): prints each input's verdict.
--
--   LUA_PATH='lua/?.lua;lua/?/init.lua;fuzz/?.lua;;' LUA_CPATH='build/5.4/?.so;;' \
--     lua5.4 fuzz/repro.lua codec build/fuzz/crashes/codec/crash-*
--
-- PLINK_FUZZ_DUMP=1 also prints the request table the codec checker built.
local harness = assert(arg[1], "usage: repro.lua HARNESS FILE...")
local check = dofile("fuzz/" .. harness .. ".lua")
local bad = 0
for i = 2, #arg do
  local f = assert(io.open(arg[i], "rb"))
  local data = f:read("a")
  f:close()
  local ok, err = xpcall(check, debug.traceback, data)
  print(("%s: %s"):format(arg[i], ok and "ok" or ("BROKEN\n" .. tostring(err))))
  if not ok then bad = bad + 1 end
end
os.exit(bad == 0 and 0 or 1)
