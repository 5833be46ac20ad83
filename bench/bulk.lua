-- bench/bulk.lua - client:create_many against the sandbox with latency, and
-- the sequential loop (client:create one after another) for comparison.
-- A benchmark, not a test: it prints numbers and a verdict, exits 0.
--
--   make bench-bulk       (or: lua5.4 bench/bulk.lua [N [concurrency [latency_ms [seq_n]]]])
--
-- Defaults: 10,000 creates at concurrency 64 against 20 ms of latency per
-- answer; the ideal wall time is N x latency / concurrency (3.125 s). The
-- target is <= 1.25x the ideal, and a peak RSS growth (VmHWM at the end minus
-- VmRSS before the requests were built) under 64 MB. The sequential loop is
-- bounded (500 creates by default) and extrapolated to N; the output says so.
-- BENCH_SANDBOX_WORKERS sets the sandbox's nginx workers (default 2).
local link = require "portone.link"
local sandbox = require "portone.sandbox"
local core = require "portone.link.core"

local N = tonumber(arg and arg[1]) or 10000
local CONC = tonumber(arg and arg[2]) or 64
local LATENCY = tonumber(arg and arg[3]) or 20
local SEQ_N = math.min(N, tonumber(arg and arg[4]) or 500)
-- Two sandbox workers: with one, 64 answers due at the same moment queue
-- behind each other's ~70 us of Lua work, and the bench measures the
-- sandbox instead of the client (wrk shows the same ceiling).
local WORKERS = tonumber(os.getenv("BENCH_SANDBOX_WORKERS")) or 2

local function status_kb(field)
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  local v = s:match(field .. ":%s*(%d+) kB")
  return v and tonumber(v)
end

local function mb(kb) return kb and ("%.1f MB"):format(kb / 1024) or "?" end

local function request(i, now)
  return {
    title = "Bench order " .. i, user_code = "imp12345678", amount = 1000 + i % 9000,
    merchant_uid = ("bench-%d-%d"):format(now, i), name = "Item", currency = "KRW",
    buyer_tel = "010-1234-5678", expired_at = now + 3600,
    pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "Card" } },
  }
end

local sb = assert(sandbox.start({ port = 0, latency_ms = LATENCY, workers = WORKERS }))
local ok, err = pcall(function()
  sb:latency(LATENCY)
  local client = link.new({ base_url = sb.url, timeout = 30 })
  collectgarbage()
  collectgarbage()
  local rss0 = status_kb("VmRSS")
  local now = os.time()

  -- bulk
  local reqs = {}
  for i = 1, N do reqs[i] = request(i, now) end
  local t0 = core.monotonic()
  local results = client:create_many(reqs, { concurrency = CONC })
  local wall = core.monotonic() - t0
  local hwm = status_kb("VmHWM")
  local failed = 0
  for i = 1, N do if not results[i].res then failed = failed + 1 end end
  local stats = sb:stats() or {}
  local ideal = N * LATENCY / 1000 / CONC
  local ratio = wall / ideal
  local growth = hwm and rss0 and (hwm - rss0)

  print(("bulk:       %d creates, concurrency %d, sandbox latency %d ms"):format(N, CONC, LATENCY))
  print(("  wall      %.3f s   (ideal %d x %d ms / %d = %.3f s; ratio %.2fx, target <= 1.25x: %s)")
    :format(wall, N, LATENCY, CONC, ideal, ratio, ratio <= 1.25 and "met" or "MISSED"))
  print(("  rate      %.0f creates/s; %d failed; %s connections opened (sandbox count)")
    :format(N / wall, failed, tostring(stats.connections)))
  print(("  memory    VmRSS before %s, peak VmHWM %s: growth %s (target < 64 MB: %s)")
    :format(mb(rss0), mb(hwm), mb(growth), growth and growth < 64 * 1024 and "met" or "MISSED"))
  results, reqs = nil, nil -- luacheck: ignore results reqs

  -- What the sandbox itself can serve at this concurrency, measured with wrk
  -- (a lean C client) when it is installed: the ceiling any client can reach.
  local wrk = io.popen("command -v wrk 2>/dev/null"):read("*l")
  if wrk and wrk ~= "" then
    local body = ('{"payment_info":%q,"expired_at":%d}'):format(
      '{"title":"wrk","user_code":"imp12345678","amount":1000,"merchant_uid":"wrk-1",'
      .. '"name":"Item","currency":"KRW","buyer_tel":"010-1234-5678","pay_methods":'
      .. '[{"pg":"INIpayTest","pay_method":"card","label":"Card"}]}', now + 3600)
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json;charset=UTF-8"\n'
      .. 'wrk.body = %q\n'):format(body))
    f:close()
    local p = io.popen(("wrk -t1 -c%d -d3s -s %s %s/api/supplements/v1/link/payment 2>&1")
      :format(CONC, script, sb.url))
    local out = p:read("*a")
    p:close()
    os.remove(script)
    local rps = tonumber(out:match("Requests/sec:%s*([%d.]+)"))
    if rps then
      local floor = N / rps
      print(("  sandbox   wrk -c%d reaches %.0f req/s: no client can beat %.3f s (%.2fx ideal);"
        .. " this client reaches %.0f%% of that"):format(CONC, rps, floor, floor / ideal,
        100 * (N / wall) / rps))
    end
  end
  collectgarbage()

  -- sequential, bounded and extrapolated
  sb:reset()
  sb:latency(LATENCY)
  local seq = {}
  for i = 1, SEQ_N do seq[i] = request(N + i, now) end
  local sfail = 0
  t0 = core.monotonic()
  for i = 1, SEQ_N do
    if not client:create(seq[i]) then sfail = sfail + 1 end
  end
  local swall = core.monotonic() - t0
  local extrapolated = swall / SEQ_N * N
  print(("sequential: %d creates one after another with client:create (%d failed)"):format(SEQ_N, sfail))
  print(("  wall      %.3f s measured, %.1f ms each; EXTRAPOLATED to %d: %.1f s")
    :format(swall, swall / SEQ_N * 1000, N, extrapolated))
  print(("speed-up:   bulk is %.1fx faster than the (extrapolated) sequential loop")
    :format(extrapolated / wall))
  client:close()
end)
sb:stop()
if not ok then
  io.stderr:write("bench-bulk failed: ", tostring(err), "\n")
  os.exit(1)
end
