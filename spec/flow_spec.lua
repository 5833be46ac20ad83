-- The whole payment flow against a sandbox: create a link with the client,
-- open the bridge page, pay with the form POST, receive the webhook (the
-- link's notice_url points at the sandbox's own /__sandbox/inbox), parse it,
-- verify it over REST V1; then the tamper case, the webhook modes (twice,
-- late, drop, form), direct links, and the expired page in ko and en.
local link = require "portone.link"
local cases = require "helpers.cases"
local helper = require "helpers.sandbox"
local sandbox = require "portone.sandbox"
local bridge = require "portone.sandbox.bridge"
local cjson = require "cjson"
local socket = require "socket"

local KEY, SECRET = "flow-imp-key", "flow-imp-secret-0123456789"

local function form_post(sb, path, body)
  return sandbox.http(sb.host, sb.port, "POST", path, body,
    { ["Content-Type"] = "application/x-www-form-urlencoded" })
end

local function get(sb, path)
  return sandbox.http(sb.host, sb.port, "GET", path)
end

-- Webhooks the inbox holds for imp_uid, waiting up to `wait` seconds for `n`.
local function inbox_for(sb, imp_uid, n, wait)
  local deadline = socket.gettime() + (wait or 3)
  local found
  repeat
    found = {}
    for _, e in ipairs(assert(sb:admin("GET", "inbox"))) do
      if e.body:find(imp_uid, 1, true) then found[#found + 1] = e end
    end
    if #found >= (n or 1) then return found end
    socket.sleep(0.02)
  until socket.gettime() > deadline
  return found
end

local function payment_record(sb, imp_uid)
  for _, p in ipairs(assert(sb:admin("GET", "payments"))) do
    if p.imp_uid == imp_uid then return p end
  end
end

describe("payment flow against the sandbox", function()
  local sb, client, rest

  -- Creates a link whose webhook goes to the sandbox's inbox; returns its id.
  local function create(over)
    local req = cases.request(cases.merge({ notice_url = sb.url .. "/__sandbox/inbox" }, over))
    local res = assert(client:create(req))
    return res.id, req, res
  end

  local function pay(id, method)
    local status, body = form_post(sb, "/" .. id, "method=" .. (method or 1))
    return status, body, body and body:match('class="row imp%-uid"><span>[^<]*</span><span>(imp_%d+)<')
  end

  lazy_setup(function()
    sb = helper.start{ imp_key = KEY, imp_secret = SECRET }
    client = link.new{ base_url = sb.url, transport = "curl", retries = 0 }
    rest = link.rest.new{ imp_key = KEY, imp_secret = SECRET, base_url = sb.url, transport = "curl" }
  end)
  lazy_teardown(function()
    if client then client:close() end
    if rest then rest:close() end
    if sb then sb:stop() end
  end)
  before_each(function()
    assert(sb:admin("POST", "webhook", { mode = "normal" }))
  end)

  it("create -> bridge page -> pay -> webhook -> parse -> verify", function()
    local id, req = create{ title = "Flow <test>", name = "Green tea", amount = 10000,
      pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "신용카드" },
                      { pg = "kakaopay", pay_method = "kakaopay", label = "카카오페이" } } }
    local status, page = get(sb, "/" .. id)
    assert.equal(200, status)
    assert.truthy(page:find('<html lang="ko">', 1, true))
    assert.truthy(page:find("Flow &lt;test&gt;", 1, true))
    assert.truthy(page:find("Green tea", 1, true))
    assert.truthy(page:find("10,000원", 1, true))
    assert.truthy(page:find('value="1"[^>]*>신용카드</button>'))
    assert.truthy(page:find('value="2"[^>]*>카카오페이</button>'))
    assert.is_nil(page:find("<script", 1, true))
    assert.is_nil(page:find("https?://[%w.]+/[%w/]+%.css"))  -- no outside assets

    local pstatus, success, imp_uid = pay(id, 2)
    assert.equal(200, pstatus)
    assert.truthy(success:find("결제가 완료되었습니다", 1, true))
    assert.truthy(imp_uid, "the success page shows the imp_uid")

    local hooks = inbox_for(sb, imp_uid, 1)
    assert.equal(1, #hooks)
    assert.equal("application/json", hooks[1].content_type)
    assert.equal("PortOne-Sandbox-Webhook", hooks[1].user_agent)
    local notice = assert(link.webhook.parse(hooks[1].body, hooks[1].content_type))
    assert.same({ imp_uid = imp_uid, merchant_uid = req.merchant_uid, status = "paid" }, notice)

    local p, err = rest:verify(notice, { amount = 10000, merchant_uid = req.merchant_uid })
    assert.is_nil(err)
    assert.equal("paid", p.status)
    assert.equal("kakaopay", p.pay_method)
    assert.equal("kakaopay", p.pg_provider)
    assert.equal(10000, p.amount)
    assert.truthy(tonumber(p.paid_at) > 0)

    -- the sandbox's record of the delivery
    local rec = payment_record(sb, imp_uid)
    assert.equal(200, rec.webhooks[1].status)
  end)

  it("lets a link be paid once", function()
    local id = create()
    local _, _, imp_uid = pay(id)
    assert.truthy(imp_uid)
    local status, body = pay(id)
    assert.equal(409, status)
    assert.truthy(body:find(imp_uid, 1, true))
    status, body = get(sb, "/" .. id)
    assert.equal(200, status)
    assert.truthy(body:find('class="paid"', 1, true))
    local r, err = sb:admin("POST", "pay", { id = id, method = 1 })
    assert.is_nil(r)
    assert.matches("409", err)
  end)

  it("shows a paid link as expired (410) once it is deactivated", function()
    local id = create()
    local _, _, imp_uid = pay(id)
    assert.truthy(imp_uid)
    assert(client:deactivate(id))
    local status, body = get(sb, "/" .. id)
    assert.equal(410, status)
    assert.truthy(body:find('class="expired"', 1, true))
  end)

  it("gives amounts back as integers from REST V1", function()
    local id, req = create{ amount = 12500 }
    local _, _, imp_uid = pay(id)
    local p = assert(rest:payment(imp_uid))
    assert.equal(req.amount, p.amount)
    assert.equal("12500", tostring(p.amount))
  end)

  it("refuses a method that is not on the link", function()
    local id = create()
    assert.equal(400, (pay(id, 7)))
    assert.equal(400, (form_post(sb, "/" .. id, "nothing=1")))
    assert.equal(200, (pay(id, 1)))
  end)

  it("pays through the admin API, with the whole link URL or the id", function()
    local _, req, res = create{ pay_methods = {
      { pg = "INIpayTest", pay_method = "card", label = "Card" },
      { channelKey = "channel-key-1234", pay_method = "trans", label = "Bank" } } }
    local r = assert(sb:admin("POST", "pay", { id = res.url, method = 2 }))
    assert.matches("^imp_%d+$", r.imp_uid)
    assert.equal("normal", r.webhook)
    assert.equal("trans", r.payment.pay_method)
    assert.equal("channel-key-1234", r.payment.channel_key)
    local hooks = inbox_for(sb, r.imp_uid, 1)
    local notice = assert(link.webhook.parse(hooks[1].body, hooks[1].content_type))
    local p = assert(rest:verify(notice, { amount = req.amount }))
    -- REST V1 has no channel_key: a channelKey payment reports its provider
    assert.equal("html5_inicis", p.pg_provider)
    assert.equal("trans", p.pay_method)
  end)

  it("catches a tampered amount", function()
    local id, req = create{ amount = 50000 }
    local _, _, imp_uid = pay(id)
    local hooks = inbox_for(sb, imp_uid, 1)
    local notice = assert(link.webhook.parse(hooks[1].body, hooks[1].content_type))
    assert(sb:admin("POST", "tamper", { imp_uid = imp_uid, amount = 100 }))
    local p, err = rest:verify(notice, { amount = 50000, merchant_uid = req.merchant_uid })
    assert.is_nil(p)
    assert.equal("mismatch", err.kind)
    assert.equal("amount", err.field)
    assert.equal("100", err.actual)
    assert.equal("50000", err.expected)
    assert.equal(imp_uid, err.payment.imp_uid)
  end)

  it("catches an amount tampered before the payment (tamper next)", function()
    local id = create{ amount = 30000 }
    assert(sb:admin("POST", "tamper", { next = true, amount = 300 }))
    local _, success, imp_uid = pay(id)
    assert.truthy(success:find("300원", 1, true))
    local notice = assert(link.webhook.parse(inbox_for(sb, imp_uid, 1)[1].body, "application/json"))
    local _, err = rest:verify(notice, { amount = 30000 })
    assert.equal("mismatch", err.kind)
    -- the next payment is honest again
    local id2, req2 = create{ amount = 30000 }
    local _, _, uid2 = pay(id2)
    assert.truthy(rest:verify({ imp_uid = uid2 }, { amount = 30000, merchant_uid = req2.merchant_uid }))
  end)

  it("checks the order against the notice and the expectation", function()
    local id = create()
    local _, _, imp_uid = pay(id)
    local notice = assert(link.webhook.parse(inbox_for(sb, imp_uid, 1)[1].body, "application/json"))
    local _, err = rest:verify(notice, { amount = 10000, merchant_uid = "someone-else" })
    assert.equal("mismatch", err.kind)
    assert.equal("merchant_uid", err.field)
  end)

  it("reports a lookup failure for an unknown imp_uid", function()
    local _, err = rest:verify({ imp_uid = "imp_000000000000", merchant_uid = "x" }, { amount = 1 })
    assert.equal("http", err.kind)
    assert.equal(404, err.status)
    assert.equal("lookup", err.stage)
  end)

  it("sends the webhook twice in 'twice' mode; verifying both is fine", function()
    assert(sb:admin("POST", "webhook", { mode = "twice", delay_ms = 50 }))
    local id, req = create()
    local _, _, imp_uid = pay(id)
    local hooks = inbox_for(sb, imp_uid, 2)
    assert.equal(2, #hooks)
    for _, h in ipairs(hooks) do
      local notice = assert(link.webhook.parse(h.body, h.content_type))
      assert.truthy(rest:verify(notice, { amount = req.amount }))
    end
    local rec = payment_record(sb, imp_uid)
    assert.equal(2, #rec.webhooks)
  end)

  it("sends the webhook late in 'late' mode", function()
    assert(sb:admin("POST", "webhook", { mode = "late", delay_ms = 1500 }))
    local id = create()
    local t0 = socket.gettime()
    local _, _, imp_uid = pay(id)
    assert.equal(0, #inbox_for(sb, imp_uid, 1, 0.2))
    local hooks = inbox_for(sb, imp_uid, 1, 6)
    assert.equal(1, #hooks)
    assert.truthy(socket.gettime() - t0 >= 1.4)
  end)

  it("sends nothing in 'drop' mode, and says so", function()
    assert(sb:admin("POST", "webhook", { mode = "drop" }))
    local id, req = create()
    local _, _, imp_uid = pay(id)
    assert.equal(0, #inbox_for(sb, imp_uid, 1, 0.4))
    local rec = payment_record(sb, imp_uid)
    assert.is_true(rec.webhooks[1].dropped)
    -- the payment is there all the same: a merchant that polls finds it
    assert.truthy(rest:verify({ imp_uid = imp_uid }, { amount = 10000, merchant_uid = req.merchant_uid }))
  end)

  it("can send the webhook as a form", function()
    assert(sb:admin("POST", "webhook", { mode = "normal", format = "form" }))
    local id, req = create()
    local _, _, imp_uid = pay(id)
    local h = inbox_for(sb, imp_uid, 1)[1]
    assert.equal("application/x-www-form-urlencoded", h.content_type)
    local notice = assert(link.webhook.parse(h.body, h.content_type))
    assert.equal(req.merchant_uid, notice.merchant_uid)
  end)

  it("each POST /webhook sets mode, delay and format together (the sandbox guide)", function()
    assert(sb:admin("POST", "webhook", { mode = "twice", delay_ms = 50 }))
    local m = assert(sb:admin("GET", "webhook"))
    assert.same({ "twice", 50, "json" }, { m.mode, m.delay_ms, m.format })
    -- format alone: the mode left out is back to normal, the delay gone
    assert(sb:admin("POST", "webhook", { format = "form" }))
    m = assert(sb:admin("GET", "webhook"))
    assert.same({ "normal", "form" }, { m.mode, m.format })
    assert.is_nil(m.delay_ms)
    assert(sb:admin("POST", "webhook", { mode = "twice", format = "form" }))
    m = assert(sb:admin("GET", "webhook"))
    assert.same({ "twice", "form" }, { m.mode, m.format })
  end)

  it("sends no webhook without a notice_url, and none off loopback", function()
    local req = cases.request()
    local res = assert(client:create(req))
    local r = assert(sb:admin("POST", "pay", { id = res.id }))
    assert.equal("none", r.webhook)
    local _, _, res2 = create{ notice_url = "https://merchant.example/webhook" }
    r = assert(sb:admin("POST", "pay", { id = res2.id }))
    assert.equal("refused", r.webhook)
    assert.matches("loopback", payment_record(sb, r.imp_uid).webhooks[1].error)
  end)

  it("goes straight to the payment step for a link with direct", function()
    local id = create{ pay_methods = {
        { pg = "INIpayTest", pay_method = "card", label = "Card" },
        { pg = "INIpayTest", pay_method = "vbank", label = "가상계좌 입금" } },
      direct = { pg = "INIpayTest", pay_method = "vbank" } }
    local status, page = get(sb, "/" .. id)
    assert.equal(200, status)
    assert.truthy(page:find('class="direct"', 1, true))
    assert.truthy(page:find("가상계좌 입금", 1, true))
    assert.truthy(page:find('value="direct"', 1, true))
    assert.is_nil(page:find('value="1"', 1, true))
    local pstatus, _, imp_uid = pay(id, "direct")
    assert.equal(200, pstatus)
    local p = payment_record(sb, imp_uid)
    assert.equal("vbank", p.pay_method)
  end)

  describe("expired page", function()
    it("answers 410 in Korean after a deactivation", function()
      local id, _, res = create{ display_language = "ko" }
      assert(client:deactivate(res.url))
      local status, page = get(sb, "/" .. id)
      assert.equal(410, status)
      assert.truthy(page:find('<html lang="ko">', 1, true))
      assert.truthy(page:find("만료된 결제 링크입니다", 1, true))
      assert.equal(410, (pay(id)))
      local r, err = sb:admin("POST", "pay", { id = id })
      assert.is_nil(r); assert.matches("410", err)
    end)

    it("answers 410 in English after expired_at", function()
      local id = create{ display_language = "en", currency = "USD", amount = 1250,
        expired_at = os.time() + 120 }
      local status, page = get(sb, "/" .. id)
      assert.equal(200, status)
      assert.truthy(page:find('<html lang="en">', 1, true))
      assert.truthy(page:find("$12.50", 1, true))
      assert(sb:clock(121))
      status, page = get(sb, "/" .. id)
      assert(sb:clock(0))
      assert.equal(410, status)
      assert.truthy(page:find('<html lang="en">', 1, true))
      assert.truthy(page:find("This payment link has expired", 1, true))
    end)

    it("answers 404 for an unknown link", function()
      assert.equal(404, (get(sb, "/ffffffff")))
      assert.equal(404, (pay("ffffffff")))
    end)
  end)

  describe("REST V1", function()
    local function token_call(key, secret)
      local body = cjson.encode({ imp_key = key, imp_secret = secret })
      local status, b = helper.request(sb, "POST", "/users/getToken", body)
      return status, cjson.decode(b)
    end

    it("gives the same token until it expires (5 minutes longer in its last one), and refuses a wrong secret",
        function()
      local s1, a = token_call(KEY, SECRET)
      local s2, b = token_call(KEY, SECRET)
      assert.equal(200, s1); assert.equal(200, s2)
      assert.equal(0, a.code)
      assert.equal(a.response.access_token, b.response.access_token)
      local left = a.response.expired_at - a.response.now
      assert.truthy(left <= 1800 and left > 1700)
      assert(sb:clock(1750))                     -- 50 s left: the same one, 300 s longer (PortOne's rule)
      local _, c = token_call(KEY, SECRET)
      assert.equal(a.response.access_token, c.response.access_token)
      assert.equal(a.response.expired_at + 300, c.response.expired_at)
      assert(sb:clock(1800 + 300))               -- expired: a new one comes back
      local _, e = token_call(KEY, SECRET)
      assert(sb:clock(0))
      assert.not_equal(a.response.access_token, e.response.access_token)
      local s3, d = token_call(KEY, "wrong")
      assert.equal(401, s3)
      assert.equal(-1, d.code)
      assert.equal(cjson.null, d.response)
    end)

    it("needs a bearer token for payments", function()
      local status, body = helper.request(sb, "GET", "/payments/imp_1")
      assert.equal(401, status)
      assert.equal(-1, cjson.decode(body).code)
      status = helper.request(sb, "GET", "/payments/imp_1", nil, { Authorization = "Bearer nope" })
      assert.equal(401, status)
    end)

    it("refreshes and retries once when the token is refused", function()
      local id = create()
      local _, _, imp_uid = pay(id)
      assert.truthy(rest:payment(imp_uid))
      assert.truthy(assert(sb:admin("POST", "tokens", { revoke = true })).revoked >= 1)
      local p = assert(rest:payment(imp_uid))
      assert.equal(imp_uid, p.imp_uid)
    end)

    it("gives an auth error, without the secret, for a wrong secret", function()
      local bad = link.rest.new{ imp_key = KEY, imp_secret = "not-the-secret-42", base_url = sb.url,
        transport = "curl" }
      local p, err = bad:payment("imp_1")
      bad:close()
      assert.is_nil(p)
      assert.equal("auth", err.kind)
      assert.is_nil(tostring(err):find("not-the-secret-42", 1, true))
    end)
  end)
end)

describe("bridge page rendering", function()
  it("formats amounts per currency and language", function()
    assert.equal("10,000원", bridge.format_amount(10000, "KRW", "ko"))
    assert.equal("₩10,000", bridge.format_amount(10000, "KRW", "en"))
    assert.equal("$12.50", bridge.format_amount(1250, "USD", "en"))
    assert.equal("$12.50", bridge.format_amount(1250, "USD", "ko"))
    assert.equal("€1,000.05", bridge.format_amount(100005, "EUR", "en"))
    assert.equal("1,200円", bridge.format_amount(1200, "JPY", "ko"))
    assert.equal("¥1,200", bridge.format_amount(1200, "JPY", "en"))
    assert.equal("9.99 XYZ", bridge.format_amount(999, "XYZ", "en"))
    assert.equal("1,234,567 KRW", bridge.format_amount(1234567, "KRW", "iso"))
    assert.equal("9,007,199,254,740,991원", bridge.format_amount(2^53 - 1, "KRW", "ko"))
    assert.equal("$0.05", bridge.format_amount(5, "USD", "en"))
  end)

  it("picks the language from display_language, Korean by default", function()
    assert.equal("ko", bridge.lang({}))
    assert.equal("en", bridge.lang({ display_language = "en" }))
    assert.equal("ko", bridge.lang({ display_language = "fr" }))
  end)

  it("escapes everything it prints", function()
    local rec = { title = '<img src=x onerror="1">', name = "A&B", amount = 1, currency = "KRW",
      merchant_uid = "o'1", expired_at = 0,
      pay_methods = { { pay_method = "card", label = "<b>" } } }
    local html = bridge.render_bridge("abc", rec)
    assert.is_nil(html:find("<img", 1, true))
    assert.is_nil(html:find("<b>", 1, true))
    assert.truthy(html:find("A&amp;B", 1, true))
    assert.truthy(html:find("o&#39;1", 1, true))
  end)

  it("labels a method without a label by its code", function()
    assert.equal("신용/체크카드", bridge.method_label({ pay_method = "card" }, "ko"))
    assert.equal("Credit / debit card", bridge.method_label({ pay_method = "card" }, "en"))
    assert.equal("wechat", bridge.method_label({ pay_method = "wechat" }, "en"))
  end)
end)
