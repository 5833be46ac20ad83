-- bench/http.lua - client:create against the limit and against plain Lua.
-- A benchmark, not a test: it prints numbers and each target, exits 0.
--
--   make bench-http     (or: lua5.4 bench/http.lua [N [rounds [luasec_n]]])
--
-- Contenders, each making the same create POSTs to the sandbox, in
-- alternating order over `rounds` rounds of one run (default 60 rounds of
-- N = 250 requests):
--   client    client:create(req) (validate + encode + send + decode)
--   raw-same  bench/raw_curl.c: one raw libcurl easy handle, the body
--             encoded once, exactly the client's request headers
--   raw-one   the same loop sending only the client's Content-Type
--   luasec    LuaSec ssl.https (LuaSocket's socket.http over plain HTTP)
--             + lua-cjson, what a plain-Lua user writes (luasec_n = 10
--             requests a round: it opens a connection per request)
-- and, as a diagnostic without a target, c-path: the handle's C send with
-- a body encoded once, h:create (client:create minus validate, encode and
-- Lua glue).
-- Over HTTPS (a certificate the bench makes, passed as cainfo, verified)
-- and over plain HTTP. Each raw loop is one process for the whole run (its
-- connection stays open, as the client's does); a round is a line on its
-- stdin. Every process runs on one CPU (BENCH_CPU, default 0; "none" leaves
-- placement to the scheduler), so a request's time is the client's and
-- the sandbox's work, not the VM's cross-CPU wake-ups.
-- Per contender: best and median microseconds per request. Ratios are raw
-- time / client time (1.0 = as fast as raw), on wall time: the median of
-- the rounds' ratios (each round's raw time over the client's time in the
-- same alternation) is the verdict; the ratios of the medians, of the bests
-- and of the CPU time (os.clock, raw's CLOCK_PROCESS_CPUTIME_ID; the
-- sandbox's own work is in neither) are shown beside it.
-- Targets (issue [tls-speed]), HTTPS: client >= 0.9x raw-same, >= 0.85x
-- raw-one, >= 50x luasec. Needs build/raw_curl (make bench-http builds it).
local link = require "portone.link"
local core = require "portone.link.core"
local sandbox = require "portone.sandbox"
local cjson = require "cjson"

local N = tonumber(arg and arg[1]) or 250
local ROUNDS = tonumber(arg and arg[2]) or 60
local LS_N = tonumber(arg and arg[3]) or 10
local CPU = os.getenv("BENCH_CPU") or "0"
local RAW = os.getenv("RAW_CURL") or "build/raw_curl"
local PATH = "/api/supplements/v1/link/payment"

local function sh(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

-- Every process of the bench on one CPU (children inherit it): the sandbox,
-- the raw loops and this one. Unpinned, each request's time is mostly the
-- VM's wake-up of the other process on the other CPU, and where the
-- scheduler happens to put each process moved a contender's time by a
-- third from one run to the next.
if CPU ~= "none" then
  local pid = io.open("/proc/self/stat"):read("*l"):match("^(%d+)")
  assert(sh(("taskset -pc %s %s >/dev/null"):format(CPU, pid)),
    "taskset failed (BENCH_CPU=none runs unpinned)")
end

local dir = io.popen("mktemp -d \"${TMPDIR:-/tmp}/portone-bench-http.XXXXXXXX\""):read("*l")
local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
assert(sh("env -u LD_PRELOAD openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1"
  .. " -addext 'subjectAltName=IP:127.0.0.1,DNS:localhost'"
  .. " -addext basicConstraints=critical,CA:TRUE -keyout " .. key .. " -out " .. cert
  .. " >/dev/null 2>&1"), "openssl req failed")

local function write(path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

local seq = 0
local function request()
  seq = seq + 1
  local now = os.time()
  return {
    title = "Bench order", user_code = "imp12345678", amount = 10000,
    merchant_uid = ("http-%d-%d"):format(now, seq), name = "Item", currency = "KRW",
    buyer_tel = "010-1234-5678", expired_at = now + 3600,
    pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "Card" } },
  }
end

local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return 0 end
  if n % 2 == 1 then return s[(n + 1) / 2] end
  return (s[n / 2] + s[n / 2 + 1]) / 2
end

local function best(t)
  local b = math.huge
  for _, v in ipairs(t) do if v < b then b = v end end
  return b
end

-- One scheme's contenders: each returns microseconds per request.
local function contenders(url, tls)
  local client = link.new({ base_url = url, cainfo = tls and cert or nil, timeout = 30,
    insecure_http = not tls or nil })
  assert(client:create(request()))
  -- exactly the headers client:create hands to libcurl (Expect: is the C
  -- layer's), and the body it sends
  local cfg = client:_cfg(nil)
  local heads0 = require("portone.link.protocol").headers(cfg, true)
  local heads = { (table.unpack or unpack)(heads0) }   -- LuaJIT too
  heads[#heads + 1] = "Expect:"
  local body = assert(link.encode(request()))
  local bodyf, samef, onef = dir .. "/body.json", dir .. "/same.txt", dir .. "/one.txt"
  write(bodyf, body)
  write(samef, table.concat(heads, "\n") .. "\n")
  for _, h in ipairs(heads) do
    if h:find("^Content%-Type:") then write(onef, h .. "\n") end
  end

  -- one raw_curl process a header set, alive for the whole run: its
  -- connection stays open like the client's, and a round is one line on
  -- its stdin, so raw rounds are as short as the client's
  local procs = {}
  local function raw(headerf, name)
    local fifo = ("%s/%s-%s.out"):format(dir, name, tls and "https" or "http")
    assert(sh("mkfifo " .. fifo), "mkfifo failed")
    local cmd = ("%s %s %s %s %s > %s"):format(RAW, url .. PATH, bodyf, headerf,
      tls and cert or "", fifo)
    local w = assert(io.popen(cmd, "w"))
    local r = assert(io.open(fifo, "r"))
    procs[#procs + 1] = { w = w, r = r }
    assert(r:read("*l") == "ready", "raw_curl failed to start: " .. cmd)
    return function()
      w:write(N, "\n")
      w:flush()
      local out = r:read("*l") or ""
      local s, cpu = tonumber(out:match("seconds=([%d.]+)")), tonumber(out:match("cpu=([%d.]+)"))
      assert(s, "raw_curl failed: " .. cmd .. "\n" .. out)
      return s / N * 1e6, cpu / N * 1e6
    end
  end
  local function stop_raw()
    for _, p in ipairs(procs) do
      p.w:close()
      p.r:close()
    end
  end

  local luasec
  local okreq, http = pcall(require, tls and "ssl.https" or "socket.http")
  local ltn12 = okreq and require("ltn12")
  if okreq then
    luasec = function()
      local t0, c0 = core.monotonic(), os.clock()
      for _ = 1, LS_N do
        -- what a plain-Lua user writes: payment_info as a JSON string
        local info = request()
        local exp = info.expired_at
        info.expired_at = nil
        local b = '{"payment_info":' .. cjson.encode(cjson.encode(info)) .. ',"expired_at":'
          .. ("%d"):format(exp) .. "}"
        local out = {}
        local params = {
          url = url .. PATH, method = "POST", sink = ltn12.sink.table(out),
          source = ltn12.source.string(b),
          headers = { ["content-type"] = "application/json;charset=UTF-8",
                      ["content-length"] = tostring(#b), accept = "application/json" },
        }
        if tls then
          params.cafile, params.verify, params.protocol = cert, "peer", "any"
          params.options = "all"
        end
        local ok, code = http.request(params)
        assert(ok and code == 200, "luasec request failed: " .. tostring(code))
        local obj = cjson.decode(table.concat(out))
        assert(type(obj.shortenedUrl) == "string")
      end
      return (core.monotonic() - t0) / LS_N * 1e6, (os.clock() - c0) / LS_N * 1e6
    end
  end

  -- 100 request tables used in turn (each call validates and encodes one):
  -- a real caller builds a request and drops it, so the collector does not
  -- walk N live requests on every cycle (that cost the client ~10 us a call
  -- here, none of it the client's own)
  local reqs = {}
  for i = 1, 100 do reqs[i] = request() end
  local function client_run()
    collectgarbage()
    local t0, c0 = core.monotonic(), os.clock()
    for i = 1, N do assert(client:create(reqs[i % 100 + 1])) end
    return (core.monotonic() - t0) / N * 1e6, (os.clock() - c0) / N * 1e6
  end

  -- not a contender, a diagnostic: the client's handle's send alone
  -- (h:create with the body encoded once, from a Lua loop; the client's
  -- h:encode_create is the same send after the walk), i.e. client:create
  -- without validate + encode and the Lua glue, to show where the gap to
  -- raw is
  local url_, hh = url .. PATH, client._h
  local hc = hh.create
  local function c_path()
    collectgarbage()
    local t0, c0 = core.monotonic(), os.clock()
    for _ = 1, N do assert(type(hc(hh, "POST", url_, heads0, body, 2)) == "table") end
    return (core.monotonic() - t0) / N * 1e6, (os.clock() - c0) / N * 1e6
  end

  local list = {
    { name = "client", fn = client_run },
    { name = "c-path", fn = c_path },
    { name = "raw-same", fn = raw(samef, "same") },
    { name = "raw-one", fn = raw(onef, "one") },
  }
  if luasec then list[#list + 1] = { name = "luasec", fn = luasec } end
  return list, client, okreq or http, stop_raw
end

local function run(url, tls)
  local list, client, why, stop_raw = contenders(url, tls)
  local times, cpus = {}, {}
  for _, c in ipairs(list) do times[c.name], cpus[c.name] = {}, {} end
  for r = 1, ROUNDS do
    -- alternate the order: forward on odd rounds, backward on even ones
    for k = 1, #list do
      local c = list[r % 2 == 1 and k or #list + 1 - k]
      local t, cpu = c.fn()
      times[c.name][#times[c.name] + 1] = t
      cpus[c.name][#cpus[c.name] + 1] = cpu
    end
  end
  client:close()
  stop_raw()
  local scheme = tls and "HTTPS" or "HTTP"
  print(("%s (%d requests a round, %d rounds; luasec %d a round)"):format(scheme, N, ROUNDS, LS_N))
  for _, c in ipairs(list) do
    print(("  %-9s best %8.1f us  median %8.1f us   (CPU median %7.1f us)"):format(c.name,
      best(times[c.name]), median(times[c.name]), median(cpus[c.name])))
  end
  if type(why) == "string" then print("  luasec    skipped: " .. why:match("[^\n]*")) end
  -- The verdict: the median over rounds of raw's time / the client's time
  -- in the same round (both ran within a second of each other). The host's
  -- speed drifts over seconds, which a ratio of the two medians keeps: two
  -- copies of the same raw loop came out 1.00-1.03x that way, 0.995-1.008x
  -- paired (80 rounds, four runs).
  local function paired(name, of)
    local q = {}
    for r = 1, #times[name] do q[r] = times[name][r] / times[of][r] end
    return median(q)
  end
  local function ratio(name, target, of)
    of = of or "client"
    if not times[name] then return end
    local v = paired(name, of)
    local m = median(times[name]) / median(times[of])
    local b = best(times[name]) / best(times[of])
    local cpu = median(cpus[name]) / median(cpus[of])
    print(("  %-6s vs %-8s %7.3fx  (medians %5.2fx, bests %5.2fx, CPU %5.2fx)   %s"):format(of, name,
      v, m, b, cpu, target == false and "(no target: client:create without validate, encode, glue)"
      or not target and "(no target over plain HTTP)"
      or ("target: >= %sx -> %s"):format(target, v >= target and "met" or "MISSED")))
  end
  print("  ratios: raw / client, median of the rounds' ratios; then of the medians, the bests, CPU")
  ratio("raw-same", tls and 0.9 or nil)
  ratio("raw-same", false, "c-path")
  ratio("raw-one", tls and 0.85 or nil)
  ratio("luasec", tls and 50 or nil)
end

local sbs = assert(sandbox.start({ port = 0, tls = { cert = cert, key = key } }))
local sbp = assert(sandbox.start({ port = 0 }))
local ok, err = pcall(function()
  print(("bench-http: libcurl %s, %s, %s"):format(core.curl_version, _VERSION,
    CPU == "none" and "unpinned" or "every process on CPU " .. CPU))
  run(sbs.url, true)
  run(sbp.url, false)
end)
sbs:stop()
sbp:stop()
sh("rm -rf " .. dir)
if not ok then error(err, 0) end
