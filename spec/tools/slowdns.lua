-- spec/tools/slowdns.lua - a DNS server on loopback that is slow on purpose,
-- for the resolver spec and bench-poll (luasocket, UDP only).
--
--   lua5.4 spec/tools/slowdns.lua ADDR PORT DELAY_MS [READY_FILE]
--
-- Every A query is answered with 127.0.0.1 after DELAY_MS milliseconds
-- (AAAA and other types: an empty answer, same delay); DELAY_MS < 0 never
-- answers (an unreachable resolver). READY_FILE is written once the socket
-- is bound. Runs until killed.
local socket = require "socket"

local addr, port = arg[1] or "127.0.0.77", tonumber(arg[2]) or 53
local delay = (tonumber(arg[3]) or 1000) / 1000
local ready = arg[4]

local udp = assert(socket.udp())
assert(udp:setsockname(addr, port))
if ready then
  local f = assert(io.open(ready, "w")); f:write("ready\n"); f:close()
end

-- The answer to query q: header with QR/RA set, the question copied, and
-- for an A query one record pointing at 127.0.0.1.
local function answer(q)
  if #q < 12 then return nil end
  local qend = 13
  while qend <= #q and q:byte(qend) ~= 0 do qend = qend + q:byte(qend) + 1 end
  qend = qend + 4                              -- zero byte, QTYPE, QCLASS
  if qend > #q then return nil end
  local question = q:sub(13, qend)
  local qtype = q:byte(qend - 3) * 256 + q:byte(qend - 2)
  local an = qtype == 1 and 1 or 0
  local head = q:sub(1, 2) .. "\129\128" .. "\0\1" .. string.char(0, an) .. "\0\0\0\0"
  local rr = ""
  if an == 1 then
    rr = "\192\12" .. "\0\1\0\1" .. "\0\0\0\60" .. "\0\4" .. "\127\0\0\1"
  end
  return head .. question .. rr
end

local due = {}                                   -- {at =, data =, ip =, port =}
while true do
  local wait = 1
  if due[1] then wait = math.max(0, due[1].at - socket.gettime()) end
  udp:settimeout(wait)
  local q, ip, p = udp:receivefrom()
  if q and delay >= 0 then
    local a = answer(q)
    if a then
      due[#due + 1] = { at = socket.gettime() + delay, data = a, ip = ip, port = p }
      table.sort(due, function(x, y) return x.at < y.at end)
    end
  end
  local now = socket.gettime()
  while due[1] and due[1].at <= now do
    local d = table.remove(due, 1)
    udp:sendto(d.data, d.ip, d.port)
  end
end
