--- Soak: many encodes and many creates against the sandbox, with faults mixed
-- in; RSS and open file descriptors must stay flat.
--
--   make soak                                   1,000,000 encodes, 100,000 creates
--   SOAK_ENCODES=20000 SOAK_CREATES=2000 make soak   (the CI version)
--
-- Environment: SOAK_ENCODES, SOAK_CREATES, SOAK_RSS_SLACK_KB (growth allowed
-- after the warm-up, default 8192), SOAK_TAP=1 (print TAP lines, for
-- scripts/suite-soak).
--
-- "Flat": RSS and the fd count are taken after a warm-up (the first 10% of
-- each phase: buffers, the curl connection, the Lua heap reach their steady
-- size) and again at the end, after a full GC. RSS may grow by at most the
-- slack; the fd count must be equal. Exits 1 when either is not flat.
local link = require "portone.link"
local sandbox = require "portone.sandbox"
local socket = require "socket"

local ENCODES = tonumber(os.getenv("SOAK_ENCODES")) or 1000000
local CREATES = tonumber(os.getenv("SOAK_CREATES")) or 100000
local SLACK_KB = tonumber(os.getenv("SOAK_RSS_SLACK_KB")) or 8192
local TAP = os.getenv("SOAK_TAP") == "1"

local function log(...)
  io.stderr:write(string.format(...), "\n")
end

local function rss_kb()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

local has_lfs, lfs = pcall(require, "lfs")
local function fds()
  collectgarbage(); collectgarbage()
  local n = 0
  if has_lfs then
    -- the directory handle itself is one of the entries; it is there every time
    for e in lfs.dir("/proc/self/fd") do
      if e ~= "." and e ~= ".." then n = n + 1 end
    end
  else
    local f = assert(io.open("/proc/self/stat"))
    local pid = f:read("a"):match("^(%d+)")
    f:close()
    local p = assert(io.popen("ls /proc/" .. pid .. "/fd"))
    for _ in p:lines() do n = n + 1 end
    p:close()
  end
  return n
end

local function snapshot()
  collectgarbage(); collectgarbage()
  return { rss = rss_kb(), fds = fds(), heap = math.floor(collectgarbage("count")) }
end

local NOW = os.time()
local seq = 0
local function request(i)
  seq = seq + 1
  local req = {
    title = "Soak " .. i, user_code = "imp12345678", amount = 1000 + i % 5000,
    merchant_uid = ("soak-%d-%d"):format(NOW, seq), name = "Item",
    currency = "KRW", buyer_tel = "010-1234-5678", expired_at = NOW + 3600,
    pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "Card" } },
  }
  local k = i % 10
  if k == 1 then req.custom_data = { order = i, tags = { "a", "b", i }, note = ("x"):rep(i % 300) } end
  if k == 2 then req.expire_at, req.expired_at = "2099-12-01T00:00:00+09:00", nil end
  if k == 3 then req.amount = 0 end                           -- invalid
  if k == 4 then req.merchant_id = "typo"; req.title = ("가"):rep(300) end   -- invalid, 2 errors
  if k == 5 then req.pay_methods[2] = { channelKey = "ck", pay_method = "kakaopay", label = "K" } end
  return req
end

local results = { ok = 0 }
local function count(kind) results[kind] = (results[kind] or 0) + 1 end

-- ------------------------------------------------------------ phase 1
local function encodes(n)
  local warm = math.max(1, n // 10)
  local t0 = socket.gettime()
  local s0 = snapshot()
  local sw
  for i = 1, n do
    if i == warm then sw = snapshot() end
    local req = request(i)
    local body, err = link.encode(req)
    if body then
      assert(link.validate(req))
    else
      assert(err.kind == "validation" and #err.errors >= 1)
      local _ = tostring(err)
    end
  end
  local s1 = snapshot()
  log("encodes: %d in %.1f s", n, socket.gettime() - t0)
  return s0, sw or s0, s1
end

-- ------------------------------------------------------------ phase 2
local FAULTS = {
  { status = 503 }, { status = 429, retry_after = 0 }, { status = 500 }, { status = 502 },
  { reset = true }, { garbage = true }, { truncate = true }, { oversize = 4096 },
  { delay_ms = 5 }, { slow_body_ms = 5 }, { status = 503 }, { redirect = "http://127.0.0.1:1/x" },
}

-- run both phases in one measured window
local start = snapshot()
local e0, ew, e1 = encodes(ENCODES)
local c0, cw, c1
-- the create phase: measure inside the function, where the client lives
local function run_creates()
  local sb = assert(sandbox.start{ port = 0 })
  local client = link.new{ base_url = sb.url, retries = 2, retry_base = 0.001, retry_cap = 0.005,
    timeout = 5, connect_timeout = 2 }
  local warm = math.max(1, CREATES // 10)
  local t0 = socket.gettime()
  local fi = 0
  for i = 1, CREATES do
    if i == warm then cw = snapshot() end
    if i % 50 == 0 then
      local list = {}
      for j = 1, 4 do fi = fi % #FAULTS + 1; list[j] = FAULTS[fi] end
      assert(sb:faults("create", list))
      assert(sb:faults("deactivate", { FAULTS[(fi % 4) + 1] }))
    end
    local req = request(i)
    if i % 10 == 3 or i % 10 == 4 then req = request(i + 2) end
    local res, cerr = client:create(req)
    if res then
      count("ok")
      if i % 7 == 0 then
        local d, derr = client:deactivate(res.url)
        count(d and "deactivated" or ("deactivate_" .. derr.kind))
      end
    else
      count(cerr.kind)
      local _ = tostring(cerr)
    end
  end
  c1 = snapshot()
  local st = sb:stats() or {}
  log("creates: %d in %.1f s; the sandbox saw %s requests on %s connections", CREATES,
    socket.gettime() - t0, tostring(st.requests), tostring(st.connections))
  client:close()
  sb:stop()
end
c0 = snapshot()
run_creates()
local finish = snapshot()
cw = cw or c0

local parts = {}
for k, v in pairs(results) do parts[#parts + 1] = k .. "=" .. v end
table.sort(parts)
log("create outcomes: %s", table.concat(parts, " "))
log("rss kB:  start %d, encodes warm %d end %d, creates warm %d end %d, finish %d",
  start.rss, ew.rss, e1.rss, cw.rss, c1.rss, finish.rss)
log("fds:     start %d, encodes warm %d end %d, creates warm %d end %d, finish %d",
  start.fds, ew.fds, e1.fds, cw.fds, c1.fds, finish.fds)
log("lua heap kB: start %d, end %d", start.heap, finish.heap)

local checks = {
  { e1.rss - ew.rss <= SLACK_KB,
    ("RSS flat over %d encodes (%d -> %d kB, slack %d)"):format(ENCODES, ew.rss, e1.rss, SLACK_KB) },
  { c1.rss - cw.rss <= SLACK_KB,
    ("RSS flat over %d creates (%d -> %d kB, slack %d)"):format(CREATES, cw.rss, c1.rss, SLACK_KB) },
  { e1.fds == ew.fds and e0.fds == e1.fds, ("fds flat over encodes (%d -> %d)"):format(e0.fds, e1.fds) },
  { c1.fds == cw.fds, ("fds flat over creates (%d -> %d after warm-up)"):format(cw.fds, c1.fds) },
  { finish.fds == start.fds, ("fds back to the start after close (%d -> %d)"):format(start.fds, finish.fds) },
  { (results.ok or 0) > CREATES / 2, ("most creates succeed (%d of %d)"):format(results.ok or 0, CREATES) },
}
local failed = 0
for i, c in ipairs(checks) do
  if TAP then print((c[1] and "ok " or "not ok ") .. i .. " - " .. c[2]) end
  if not c[1] then failed = failed + 1; log("NOT FLAT: %s", c[2]) end
end
if TAP then print("1.." .. #checks) end
os.exit(failed == 0 and 0 or 1)
