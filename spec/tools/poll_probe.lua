-- spec/tools/poll_probe.lua - drives create_async calls with poll(0) the way
-- a game loop does and measures every poll (the resolver spec and
-- bench-poll run it in a mount namespace with a private resolv.conf).
--
--   lua spec/tools/poll_probe.lua BASE_URL N SECONDS [CAINFO [CONNECT_TIMEOUT]]
--
-- Queues N creates, then polls with poll(0) every millisecond until all
-- finished or SECONDS passed. Prints one line of key=value pairs: polls,
-- worst_ms, p99_ms, over2 (polls over 2 ms), worst_at_ms (when the worst
-- poll started, from the first), cpu_worst_ms (the most process CPU time
-- one poll took), ok, failed, err (first error).
local link = require "portone.link"
local core = require "portone.link.core"

local url, n, secs = arg[1], tonumber(arg[2]) or 1, tonumber(arg[3]) or 5
local cainfo, ct = arg[4] ~= "" and arg[4] or nil, tonumber(arg[5]) or 3
local client = link.new({ base_url = url, cainfo = cainfo, connect_timeout = ct,
  insecure_http = url:find("^http:") ~= nil,
  timeout = ct + 2, retries = 0 })
local ok, failed, first = 0, 0, nil
local now = os.time()
for i = 1, n do
  assert(client:create_async({
    title = "Probe", user_code = "imp12345678", amount = 1000, merchant_uid = ("probe-%d-%d"):format(now, i),
    name = "Item", currency = "KRW", buyer_tel = "010-1234-5678", expired_at = now + 3600,
    pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "Card" } },
  }, function(res, err)
    if res then ok = ok + 1 else failed = failed + 1; first = first or tostring(err) end
  end))
end
local d, t_start = {}, core.monotonic()
local t_end, worst_at, cpu_worst = t_start + secs, 0, 0
while client:pending() > 0 and core.monotonic() < t_end do
  local t0, c0 = core.monotonic(), os.clock()
  client:poll(0)
  local ms = (core.monotonic() - t0) * 1000
  cpu_worst = math.max(cpu_worst, (os.clock() - c0) * 1000)
  if ms > (d.worst or 0) then d.worst, worst_at = ms, (t0 - t_start) * 1000 end
  d[#d + 1] = ms
  core.sleep(0.001)
end
table.sort(d)
local over = 0
for _, v in ipairs(d) do if v > 2 then over = over + 1 end end
print(("polls=%d worst_ms=%.3f p99_ms=%.3f over2=%d worst_at_ms=%.0f cpu_worst_ms=%.3f"
  .. " ok=%d failed=%d err=%s")
  :format(#d, d[#d] or 0, d[math.max(1, math.ceil(#d * 0.99))] or 0, over, worst_at, cpu_worst, ok, failed,
  (first or "none"):gsub("%s", "_")))
