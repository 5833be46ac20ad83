-- make demo: the whole life of a payment link against a local sandbox.
-- Run by `make demo` (Lua 5.4, in the source tree); reaches only 127.0.0.1.
local link = require "portone.link"
local sandbox = require "portone.sandbox"
local socket = require "socket"

local function say(fmt, ...) io.write((fmt):format(...), "\n") end
local function step(n, text) io.write("\n\27[1m", n, ". ", text, "\27[0m\n") end
local function stdout_is_tty()
  local a, _, c = os.execute("test -t 1")
  if type(a) == "number" then return a == 0 end
  return a == true and c == 0
end
if os.getenv("NO_COLOR") or not stdout_is_tty() then
  step = function(n, text) io.write("\n", n, ". ", text, "\n") end
end

-- The page as a newcomer would read it: tags dropped, blank lines squeezed.
local function page_text(html)
  local body = html:match("<body.->(.*)</body>") or html
  body = body:gsub("<style.-</style>", ""):gsub("<script.-</script>", "")
  body = body:gsub("<[^>]+>", "\n"):gsub("&lt;", "<"):gsub("&gt;", ">")
    :gsub("&quot;", '"'):gsub("&#39;", "'"):gsub("&amp;", "&")
  local lines = {}
  for line in body:gmatch("[^\n]+") do
    line = line:gsub("^%s+", ""):gsub("%s+$", "")
    if line ~= "" then lines[#lines + 1] = "   | " .. line end
  end
  return table.concat(lines, "\n")
end

local function get(url)
  local host, port, path = url:match("^http://([^:/]+):(%d+)(/.*)$")
  return sandbox.http(host, tonumber(port), "GET", path)
end

step(1, "Start the sandbox (a private nginx playing the PortOne side)")
local sb = assert(sandbox.start{ port = 0, imp_key = "demo_key", imp_secret = "demo_secret" })
say("   sandbox listening on %s", sb.url)

local ok, err = pcall(function()
  local client = link.new{ base_url = sb.url }
  local order = {
    title = "포트원 데모 상점", user_code = "imp68124833", amount = 12500,
    merchant_uid = "demo-" .. os.time(), name = "Blue mug (350 ml)", currency = "KRW",
    buyer_name = "홍길동", buyer_tel = "010-1234-5678", buyer_email = "gildong@example.com",
    display_language = "ko", expired_at = os.time() + 3600,
    notice_url = sb.url .. "/__sandbox/inbox",
    custom_data = { order_id = 1042, gift = false },
    pay_methods = {
      { pg = "INIpayTest", pay_method = "card", label = "신용/체크카드" },
      { pg = "INIpayTest", pay_method = "kakaopay", label = "카카오페이" },
      { pg = "INIpayTest", pay_method = "trans", label = "계좌이체" },
    },
  }

  step(2, "Validate the order: every problem at once, with field paths")
  local bad = {}
  for k, v in pairs(order) do bad[k] = v end
  bad.amount, bad.merchant_id, bad.buyer_tel = 0, "x", nil
  local _, verr = link.validate(bad)
  say("   a broken copy of the order gives:\n   %s", tostring(verr):gsub("\n", "\n   "))
  assert(link.validate(order))
  say("   the real order is valid.")

  step(3, "Create the payment link")
  local res = assert(client:create(order))
  say("   url: %s   (id %s, HTTP %d)", res.url, res.id, res.status)
  say("   send this URL to the buyer by SMS or chat.")

  step(4, "What the buyer sees at that URL")
  local status, html = get(res.url)
  say("   HTTP %s\n%s", tostring(status), page_text(html or ""))

  step(5, "The buyer pays (simulated by the sandbox); PortOne sends the webhook")
  local paid = assert(sb:admin("POST", "pay", { id = res.id, method = 1 }))
  say("   paid with %s: imp_uid %s", order.pay_methods[1].label, paid.imp_uid)
  local hook
  for _ = 1, 100 do
    for _, e in ipairs(sb:admin("GET", "inbox") or {}) do
      if e.body:find(paid.imp_uid, 1, true) then hook = e end
    end
    if hook then break end
    socket.sleep(0.05)
  end
  assert(hook, "no webhook arrived")
  say("   webhook POST to notice_url (%s):\n   | %s", hook.content_type, hook.body)
  local notice = assert(link.webhook.parse(hook.body, hook.content_type))
  say("   parsed: imp_uid=%s merchant_uid=%s status=%s", notice.imp_uid, notice.merchant_uid, notice.status)

  step(6, "Never trust the webhook alone: look the payment up (REST V1) and compare")
  local rest = link.rest.new{ imp_key = "demo_key", imp_secret = "demo_secret", base_url = sb.url }
  local payment = assert(rest:verify(notice, { amount = order.amount, merchant_uid = order.merchant_uid }))
  say("   verified: status %s, amount %s = the order's %s", payment.status, payment.amount, order.amount)
  local _, merr = rest:verify(notice, { amount = order.amount + 1000, merchant_uid = order.merchant_uid })
  say("   (against a different order amount it refuses: %s)", merr and merr.kind or "?")
  rest:close()

  step(7, "Deactivate the link")
  assert(client:deactivate(res.url))
  say("   deactivated %s", res.id)
  assert(client:deactivate(res.id))
  say("   (deactivating again is not an error)")
  status, html = get(res.url)
  say("   the link now answers HTTP %s:\n%s", tostring(status), page_text(html or ""))
  client:close()
end)

step(8, "Stop the sandbox")
sb:stop()
say("   stopped.")
if not ok then
  io.stderr:write("\ndemo failed: ", tostring(err), "\n")
  os.exit(1)
end
