--- Plain-Lua webhook receiver for PortOne payment links (Lua 5.4 or LuaJIT,
-- luasocket): one request at a time on a loopback port, the same rules as
-- the OpenResty handler (parse, verify over REST V1, answer, then act).
--
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/5.4/?.so;;' \
--   PORTONE_IMP_KEY=... PORTONE_IMP_SECRET=... lua5.4 examples/webhook/plain.lua 8090
--
-- `handle(body, content_type, orders, rest)` is the reusable part: any HTTP
-- server (lua-http, pegasus, a CGI) can call it with the raw body and the
-- Content-Type, and send back the status and text it returns.
local link = require "portone.link"

local M = {}

--- Returns status, text for one notice. `orders` has find(merchant_uid) ->
-- {amount, merchant_uid} and mark_paid(merchant_uid, imp_uid) -> true the
-- first time only.
function M.handle(body, content_type, orders, rest)
  local notice, err = link.webhook.parse(body, content_type)
  if not notice then return 400, "bad notice: " .. err.message end
  if notice.status ~= "paid" then return 200, "ignored " .. notice.status end
  local order = orders.find(notice.merchant_uid)
  if not order then return 200, "unknown order" end
  local payment, verr = rest:verify(notice, { amount = order.amount, merchant_uid = order.merchant_uid,
    currency = order.currency })   -- nil: KRW
  if not payment then
    if verr.kind == "mismatch" or verr.kind == "unpaid" then return 200, verr.kind end
    return 500, "lookup failed, send again" -- PortOne retries later, if resends are on
  end
  if orders.mark_paid(order.merchant_uid, payment.imp_uid) then
    io.stderr:write(("order %s paid (%s)\n"):format(order.merchant_uid, payment.imp_uid))
  end
  return 200, "OK"
end

-- A minimal HTTP/1.1 server: reads one request (Content-Length only, 16 KiB
-- cap), calls handle, closes. Enough for a demo; put a real server in front
-- in production.
local function serve_one(client, orders, rest)
  client:settimeout(5)
  local line = client:receive("*l")
  if not line then return end
  local method, path = line:match("^(%u+) (%S+) HTTP/1%.[01]$")
  local headers = {}
  repeat
    local h = client:receive("*l")
    if h and h ~= "" then
      local k, v = h:match("^([^:]+):%s*(.-)%s*$")
      if k then headers[k:lower()] = v end
    end
  until not h or h == ""
  local len = tonumber(headers["content-length"] or "0") or -1
  local status, text
  if method ~= "POST" then status, text = 405, "POST only"
  elseif len < 0 or len > link.webhook.MAX_BYTES then status, text = 413, "too large"
  else
    local body = len > 0 and client:receive(len) or ""
    status, text = M.handle(body, headers["content-type"], orders, rest)
  end
  client:send(("HTTP/1.1 %d X\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
    .. "Connection: close\r\n\r\n%s"):format(status, #text, text))
  io.stderr:write(("%s %s -> %d %s\n"):format(tostring(method), tostring(path), status, text))
end

--- Serves forever (or `max` requests) on 127.0.0.1:port.
function M.serve(port, orders, rest, max)
  local socket = require "socket"
  local server = assert(socket.bind("127.0.0.1", port))
  local n = 0
  while not max or n < max do
    local c = server:accept()
    if c then
      local ok, err = pcall(serve_one, c, orders, rest)
      if not ok then io.stderr:write("webhook: ", tostring(err), "\n") end
      c:close()
      n = n + 1
    end
  end
  server:close()
end

-- Run as a script: an in-memory order store with one order, for trying it out.
if arg and arg[0] and arg[0]:match("plain%.lua$") then
  local store, paid = { ["order-1"] = 10000 }, {}
  local orders = {
    find = function(uid) return store[uid] and { merchant_uid = uid, amount = store[uid] } end,
    mark_paid = function(uid, imp_uid)
      if paid[uid] then return false end
      paid[uid] = imp_uid
      return true
    end,
  }
  local rest = link.rest.new{
    imp_key = assert(os.getenv("PORTONE_IMP_KEY"), "set PORTONE_IMP_KEY"),
    imp_secret = assert(os.getenv("PORTONE_IMP_SECRET"), "set PORTONE_IMP_SECRET"),
    base_url = os.getenv("PORTONE_REST_BASE_URL"),
  }
  M.serve(tonumber(arg[1]) or 8090, orders, rest)
end

return M
