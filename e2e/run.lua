--- Driver of the browser test (run by scripts/e2e with lua5.4 from the repo
-- root): starts a sandbox, creates the links with the library's client,
-- runs e2e/flow.test.mjs in node with their URLs in the environment, then
-- checks the webhooks the sandbox received with link.webhook.parse and
-- link.rest:verify, stops the sandbox and writes all of it as TAP.
--
--   lua5.4 e2e/run.lua [tap_file]      (default build/results/e2e.tap)
local link = require "portone.link"
local sandbox = require "portone.sandbox"
local socket = require "socket"

local TAP = arg[1] or "build/results/e2e.tap"
local KEY, SECRET = "e2e-imp-key", "e2e-imp-secret-0123456789"

local tap = require("helpers.tap").new(TAP, "e2e")
local ok, out, write_tap = tap.ok, tap.out, tap.write

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local sb, err = sandbox.start{ imp_key = KEY, imp_secret = SECRET }
if not ok(sb ~= nil, "sandbox starts", err) then write_tap(); os.exit(1) end

local status = 0
local function main()
  local client = link.new{ base_url = sb.url, transport = "curl" }
  local inbox = sb.url .. "/__sandbox/inbox"
  local seq = 0
  local function create(over)
    seq = seq + 1
    local req = {
      title = "E2E 주문", user_code = "imp12345678", amount = 10000,
      merchant_uid = ("e2e-%d-%d"):format(os.time(), seq), name = "녹차 세트", currency = "KRW",
      buyer_tel = "010-1234-5678", notice_url = inbox, display_language = "ko",
      pay_methods = {
        { pg = "INIpayTest", pay_method = "card", label = "신용카드" },
        { pg = "kakaopay", pay_method = "kakaopay", label = "카카오페이" },
        { pg = "INIpayTest", pay_method = "trans", label = "계좌이체" },
      },
      expired_at = os.time() + 3600,
    }
    for k, v in pairs(over or {}) do req[k] = v end
    local res, cerr = client:create(req)
    assert(res, tostring(cerr))
    return res, req
  end

  local ko, ko_req = create()
  local en = create{ title = "E2E order", name = "Green tea set", display_language = "en", currency = "USD",
    amount = 1250, pay_methods = { { pg = "paypal_v2", pay_method = "paypal", label = "PayPal" },
                                   { pg = "INIpayTest", pay_method = "card", label = "Card" } } }
  local direct = create{ direct = { pg = "INIpayTest", pay_method = "card" } }
  local gone_ko = create()
  assert(client:deactivate(gone_ko.url))
  local gone_en, gone_en_req = create{ title = "E2E order", name = "Green tea set", display_language = "en",
    expired_at = os.time() + 2 }
  ok(true, "links created with the client (5)")
  -- let the short one pass its expired_at (the sandbox clock is the system's)
  while os.time() < gone_en_req.expired_at + 1 do socket.sleep(0.1) end

  local env = {
    E2E_SANDBOX_URL = sb.url, E2E_LINK_KO = ko.url, E2E_LINK_EN = en.url, E2E_LINK_DIRECT = direct.url,
    E2E_EXPIRED_KO = gone_ko.url, E2E_EXPIRED_EN = gone_en.url, E2E_OUT = "build/e2e",
  }
  local cmd = {}
  for k, v in pairs(env) do cmd[#cmd + 1] = k .. "=" .. shq(v) end
  local p = io.popen(table.concat(cmd, " ") .. " node e2e/flow.test.mjs 2>&1")
  local paid = {}
  for line in p:lines() do
    local verdict, name = line:match("^(n?o?t? ?ok) %d+ %- (.*)$")
    if verdict == "ok" then ok(true, name)
    elseif verdict == "not ok" then ok(false, name)
    elseif line:match("^#") then
      out(line)
      local k, v = line:match("^# (paid_%w+)=(%S+)")
      if k then paid[k] = v end
    elseif not line:match("^1%.%.%d+$") then
      out("# node: " .. line)
    end
  end
  local _, _, code = p:close()
  ok(code == 0 or code == nil, "browser test exits 0", "exit " .. tostring(code))

  -- The library's side: parse the webhook the browser payment caused, verify it.
  local rest = link.rest.new{ imp_key = KEY, imp_secret = SECRET, base_url = sb.url, transport = "curl" }
  local uid = paid.paid_ko
  if ok(uid ~= nil, "the browser test reported the imp_uid it paid") then
    local hook
    for _, e in ipairs(sb:admin("GET", "inbox") or {}) do
      if e.body:find(uid, 1, true) then hook = e end
    end
    local notice, perr = hook and link.webhook.parse(hook.body, hook.content_type)
    ok(notice ~= nil and notice.imp_uid == uid, "link.webhook.parse reads the webhook", perr)
    if notice then
      local payment, verr = rest:verify(notice, { amount = ko_req.amount, merchant_uid = ko_req.merchant_uid })
      ok(payment ~= nil and payment.status == "paid" and payment.pay_method == "kakaopay",
        "rest:verify confirms the payment (10000 KRW, kakaopay)", verr)
      local _, merr = rest:verify(notice, { amount = ko_req.amount + 1 })
      ok(merr ~= nil and merr.kind == "mismatch", "rest:verify refuses a different amount", merr)
    end
  end
  rest:close()
  client:close()
end

local pok, perr = pcall(main)
ok(pok, "driver ran to the end", perr)
sb:stop()
write_tap()
if tap.failed > 0 or not pok then status = 1 end
os.exit(status)
