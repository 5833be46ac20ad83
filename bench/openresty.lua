--- make bench-openresty: the cosocket transport against the blocking curl
-- transport, in the same nginx, in one run (not a test; prints numbers).
--
-- One nginx worker (spec/nginx/harness.lua) serves /bench/ngx and
-- /bench/curl; each request creates one link through a sandbox that answers
-- after 20 ms. wrk drives each location with 50 connections for a fixed time.
-- Ideal throughput is connections / latency = 50 / 0.020 s = 2,500 req/s: a
-- non-blocking client reaches it, a blocking one serialises the worker
-- (about 1 / 20 ms = 50 req/s).
--
-- Environment: BENCH_SECONDS (default 5), BENCH_CONNECTIONS (50),
-- BENCH_LATENCY_MS (20).
local harness = require "nginx.harness"
local sandbox = require "portone.sandbox"

local SECONDS = tonumber(os.getenv("BENCH_SECONDS") or "5")
local CONNS = tonumber(os.getenv("BENCH_CONNECTIONS") or "50")
local LATENCY = tonumber(os.getenv("BENCH_LATENCY_MS") or "20")
local THREADS = tonumber(os.getenv("BENCH_THREADS") or "1")
local IDEAL = CONNS / (LATENCY / 1000)

local function sh_out(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

local function wrk(url, seconds)
  -- --timeout above the blocking transport's queueing delay (conns x latency)
  local out = sh_out(("env -u LD_PRELOAD wrk -t%d -c%d -d%ds --timeout 10s %s 2>&1"):format(THREADS,
    CONNS, seconds, url))
  local rps = tonumber(out:match("Requests/sec:%s*([%d.]+)"))
  local non2xx = tonumber(out:match("Non%-2xx or 3xx responses:%s*(%d+)")) or 0
  local total = tonumber(out:match("(%d+) requests in")) or 0
  local errs = out:match("Socket errors:[^\n]*")
  local lat = out:match("Latency%s+(%S+)")
  if not rps then error("wrk failed:\n" .. out) end
  return { rps = rps, non2xx = non2xx, total = total, errors = errs, latency = lat, raw = out }
end

local function check_once(url)
  local http = require "socket.http"
  local body, code = http.request(url)
  if code ~= 200 then error(("%s -> %s %s"):format(url, tostring(code), tostring(body))) end
end

local sb = assert(sandbox.start { host = "127.0.0.1" })
local srv
local ok, err = pcall(function()
  srv = harness.start { sandbox_url = sb.url, log_level = "error" }
  assert(sb:latency(LATENCY))
  check_once(srv.url .. "/bench/ngx")
  check_once(srv.url .. "/bench/curl")

  print(("portone-link OpenResty benchmark: 1 nginx worker, wrk -t%d -c%d -d%ds, sandbox latency %d ms")
    :format(THREADS, CONNS, SECONDS, LATENCY))
  print(("ideal: %d connections / %d ms = %.0f req/s"):format(CONNS, LATENCY, IDEAL))
  local res = {}
  for _, kind in ipairs { "ngx", "curl" } do
    assert(sb:reset()); assert(sb:latency(LATENCY))
    res[kind] = wrk(srv.url .. "/bench/" .. kind, SECONDS)
    local s = sb:stats() or {}
    res[kind].creates = s.creates
    res[kind].connections = s.connections
  end
  print()
  print(("%-22s %12s %12s"):format("", "ngx cosocket", "curl (block)"))
  local function row(label, f)
    print(("%-22s %12s %12s"):format(label, f(res.ngx), f(res.curl)))
  end
  row("requests/s", function(r) return ("%.1f"):format(r.rps) end)
  row("requests", function(r) return tostring(r.total) end)
  row("non-2xx answers", function(r) return tostring(r.non2xx) end)
  row("mean latency", function(r) return tostring(r.latency) end)
  local function int(v) return v and ("%d"):format(v) or "?" end
  row("links created", function(r) return int(r.creates) end)
  row("sandbox connections", function(r) return int(r.connections) end)
  row("% of ideal", function(r) return ("%.1f%%"):format(100 * r.rps / IDEAL) end)
  for _, kind in ipairs { "ngx", "curl" } do
    if res[kind].errors then print(kind .. ": " .. res[kind].errors) end
  end
  local ratio = res.ngx.rps / res.curl.rps
  local pct = 100 * res.ngx.rps / IDEAL
  print()
  print(("cosocket / curl throughput: %.1fx (target >= 10x) %s"):format(ratio,
    ratio >= 10 and "PASS" or "MISS"))
  print(("cosocket vs ideal: %.1f%% of %.0f req/s (target >= 80%%) %s"):format(pct, IDEAL,
    pct >= 80 and "PASS" or "MISS"))
end)
if srv then srv:stop() end
sb:stop()
if not ok then
  io.stderr:write("bench-openresty failed: ", tostring(err), "\n")
  os.exit(1)
end
