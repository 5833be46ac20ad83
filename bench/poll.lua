-- bench/poll.lua - how long one client:poll(0) holds a game loop.
-- A benchmark, not a test: it prints numbers and each target, exits 0.
--
--   make bench-poll      (or: lua5.4 bench/poll.lua [N [max_concurrent]])
--
-- Against the sandbox over HTTPS (a certificate the bench makes, verified
-- against a system-sized CA bundle: Debian's ca-certificates.crt with the
-- bench's certificate appended), N creates (100) are queued with
-- create_async and driven by poll(0) once a millisecond, on new connections
-- (a fresh client each run). Three runs, each timing every poll(0):
--   fresh   a client that never called warm: CA store, handshakes and all
--   warm    after client:warm(max_concurrent): connections already open
--   slowdns name resolution through a DNS server that answers after 1 s
--           (a private resolv.conf in a mount namespace; needs root)
-- Targets (issue [tls-speed]): fresh worst <= 5 ms; warm worst <= 2 ms;
-- slowdns no poll over 5 ms. Durations are wall time (what the loop sees);
-- "CPU worst" is the process CPU time of the worst poll (os.clock), which a
-- busy machine's preemption does not inflate.
local link = require "portone.link"
local core = require "portone.link.core"
local sandbox = require "portone.sandbox"

local N = tonumber(arg and arg[1]) or 100
local CONC = tonumber(arg and arg[2]) or 16
local HOST = "bench.slow.test"          -- the name the slow resolver answers

local function sh(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

local dir = io.popen("mktemp -d \"${TMPDIR:-/tmp}/portone-bench-poll.XXXXXXXX\""):read("*l")
local cert, key, bundle = dir .. "/cert.pem", dir .. "/key.pem", dir .. "/bundle.pem"
assert(sh("env -u LD_PRELOAD openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1"
  .. " -addext 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:" .. HOST .. "'"
  .. " -addext basicConstraints=critical,CA:TRUE -keyout " .. key .. " -out " .. cert
  .. " >/dev/null 2>&1"), "openssl req failed")
local system = "/etc/ssl/certs/ca-certificates.crt"
assert(sh(("cat %s %s > %s"):format(system, cert, bundle)), "no system CA bundle at " .. system)
local ncerts = 0
for line in io.lines(bundle) do
  if line:find("BEGIN CERTIFICATE", 1, true) then ncerts = ncerts + 1 end
end

local function request(i, now)
  return {
    title = "Bench order " .. i, user_code = "imp12345678", amount = 1000 + i,
    merchant_uid = ("poll-%d-%d"):format(now, i), name = "Item", currency = "KRW",
    buyer_tel = "010-1234-5678", expired_at = now + 3600,
    pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "Card" } },
  }
end

local function stats(d, c)
  table.sort(d)
  local over = 0
  for _, v in ipairs(d) do if v > 2 then over = over + 1 end end
  local cw = 0
  for _, v in ipairs(c or {}) do if v > cw then cw = v end end
  return { polls = #d, worst = d[#d] or 0, p99 = d[math.max(1, math.ceil(#d * 0.99))] or 0,
           over2 = over, cpu_worst = cw }
end

local function line(name, s, target, extra)
  print(("%-8s polls %5d  worst %7.3f ms  p99 %6.3f ms  over 2 ms %3d  (CPU worst %s)  target: %s -> %s%s")
    :format(name, s.polls, s.worst, s.p99, s.over2,
    s.cpu_worst and ("%.3f ms"):format(s.cpu_worst) or "n/a", target.text,
    s.worst <= target.max and "met" or "MISSED", extra or ""))
end

-- One run: a fresh client, N creates, poll(0) every ms. `warm` first.
local function run(url, warm)
  local t_new = core.monotonic()
  local client = link.new({ base_url = url, cainfo = bundle, max_concurrent = CONC, timeout = 30 })
  t_new = core.monotonic() - t_new
  local t_warm = 0
  if warm then
    t_warm = core.monotonic()
    assert(client:warm(CONC))
    t_warm = core.monotonic() - t_warm
  end
  local now, ok, failed, first = os.time(), 0, 0, nil
  local d, c = {}, {}
  local t0 = core.monotonic()
  for i = 1, N do
    assert(client:create_async(request(i, now), function(res, err)
      if res then ok = ok + 1 else failed = failed + 1; first = first or err end
    end))
  end
  local t_queue = core.monotonic() - t0
  while client:pending() > 0 do
    local t, ct = core.monotonic(), os.clock()
    client:poll(0)
    d[#d + 1] = (core.monotonic() - t) * 1000
    c[#c + 1] = (os.clock() - ct) * 1000
    core.sleep(0.001)
  end
  local wall = core.monotonic() - t0
  local conns = client._async.engine.m:info().connections
  client:close()
  assert(failed == 0, "bench-poll: a create failed: " .. tostring(first))
  return stats(d, c), ("  (new %.1f ms, warm %.1f ms, queue %.1f ms, wall %.0f ms, %d connections)")
    :format(t_new * 1000, t_warm * 1000, t_queue * 1000, wall * 1000, conns)
end

local sb = assert(sandbox.start({ port = 0, tls = { cert = cert, key = key }, workers = 2 }))
local ok, err = pcall(function()
  print(("bench-poll: %d creates over HTTPS, max_concurrent %d, CA bundle of %d certificates, "
    .. "libcurl %s"):format(N, CONC, ncerts, core.curl_version))
  -- the first client of the process: its new() parses the CA bundle
  local s, extra = run(sb.url, false)
  line("fresh", s, { max = 5, text = "worst <= 5 ms" }, extra)
  s, extra = run(sb.url, true)
  line("warm", s, { max = 2, text = "worst <= 2 ms" }, extra)

  local okr, resolver = pcall(require, "helpers.resolver")
  local can, why = false, "helpers.resolver not on LUA_PATH"
  if okr then can, why = resolver.available() end
  if not can then
    print("slowdns  skipped: " .. why)
    return
  end
  local dns = resolver.start(1000)
  local port = sb.url:match(":(%d+)$")
  local out = dns:run("spec/tools/poll_probe.lua", { ("https://%s:%s"):format(HOST, port), N, 60, bundle })
  dns:stop()
  local r = resolver.parse(out)
  if not r.polls or r.failed ~= 0 then
    print("slowdns  failed: " .. out)
    return
  end
  line("slowdns", { polls = r.polls, worst = r.worst_ms, p99 = r.p99_ms, over2 = r.over2,
    cpu_worst = r.cpu_worst_ms },
    { max = 5, text = "no poll over 5 ms" }, "  (resolver answers after 1 s)")
end)
sb:stop()
sh("rm -rf " .. dir)
if not ok then error(err, 0) end
