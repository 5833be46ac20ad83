-- The sandbox's REST V1 as the published V1 clients see it: every endpoint,
-- V1's envelope on every answer (404/405 included), the three auth header
-- forms, the made-up key pair, the payment object's fields and types, the
-- payment states with their webhooks (vbank ready -> paid, declined ->
-- failed, cancel full/partial with checksum, console cancel, prepare), test
-- mode, webhook redelivery and the paged link list. Raw HTTP, so what is
-- checked is the wire, not our own client.
local link = require "portone.link"
local cases = require "helpers.cases"
local helper = require "helpers.sandbox"
local sandbox = require "portone.sandbox"
local cjson = require "cjson"
local socket = require "socket"

local sb, client, token

local function call(method, path, body, headers)
  local status, raw, hdrs = helper.request(sb, method, path, body and cjson.encode(body) or nil, headers)
  assert(status, raw)
  local ok, t = pcall(cjson.decode, raw)
  return status, ok and t or raw, hdrs
end

local function authed(method, path, body)
  return call(method, path, body, { Authorization = "Bearer " .. token })
end

local function create(over)
  local req = cases.request(cases.merge({ notice_url = sb.url .. "/__sandbox/inbox" }, over))
  local res = assert(client:create(req))
  return res.id, req
end

local function admin_pay(id, extra)
  local body = { id = id }
  for k, v in pairs(extra or {}) do body[k] = v end
  return sb:admin("POST", "pay", body)
end

local seq = 0
local function uid(prefix)
  seq = seq + 1
  return ("%s-%d-%d"):format(prefix, os.time(), seq)
end

-- Webhook notices the inbox received for imp_uid, waiting for n.
local function notices(imp_uid, n)
  local deadline = socket.gettime() + 3
  local found
  repeat
    found = {}
    for _, e in ipairs(assert(sb:admin("GET", "inbox"))) do
      if e.body:find(imp_uid, 1, true) then found[#found + 1] = cjson.decode(e.body) end
    end
    if #found >= n then return found end
    socket.sleep(0.02)
  until socket.gettime() > deadline
  return found
end

local function is_envelope(t)
  assert.is_table(t)
  assert.is_number(t.code)
  assert.is_not_nil(t.message)   -- a string or null
  assert.is_not_nil(t.response)  -- an object, an array or null
end

describe("sandbox REST V1", function()
  lazy_setup(function()
    sb = helper.start()   -- no imp_key: it makes a pair up
    client = link.new{ base_url = sb.url, transport = "curl", retries = 0 }
    local _, t = call("POST", "/users/getToken", { imp_key = sb.imp_key, imp_secret = sb.imp_secret })
    token = t.response.access_token
  end)
  lazy_teardown(function()
    if client then client:close() end
    if sb then sb:stop() end
  end)

  describe("keys and auth", function()
    it("makes up a key pair when started without one, and refuses any other", function()
      assert.matches("^%d+$", sb.imp_key)
      assert.equal(16, #sb.imp_key)
      assert.equal(80, #sb.imp_secret)
      local keys = assert(sb:keys())
      assert.same({ imp_key = sb.imp_key, imp_secret = sb.imp_secret, made_up = true }, keys)
      local status, t = call("POST", "/users/getToken", { imp_key = "any", imp_secret = "pair" })
      assert.equal(401, status)
      is_envelope(t)
      assert.equal(-1, t.code)
      assert.equal(cjson.null, t.response)
      -- the form encoding the PHP and Python clients send works too
      status, t = helper.request(sb, "POST", "/users/getToken",
        "imp_key=" .. sb.imp_key .. "&imp_secret=" .. sb.imp_secret,
        { ["Content-Type"] = "application/x-www-form-urlencoded" })
      assert.equal(200, status)
      assert.equal(0, cjson.decode(t).code)
    end)

    it("hands the token back as PortOne does: the same one, 5 more minutes in its last minute", function()
      assert(sb:clock(0))
      local function get()
        local status, t = call("POST", "/users/getToken",
          { imp_key = sb.imp_key, imp_secret = sb.imp_secret })
        assert.equal(200, status)
        return t.response
      end
      local ok, err = pcall(function()
        local first = get()
        local life = first.expired_at - first.now
        assert.is_true(life > 60 and life <= 1800)
        assert(sb:clock(life - 61))                       -- 61 s left: unchanged
        local r = get()
        assert.equal(first.access_token, r.access_token)
        assert.equal(first.expired_at, r.expired_at)
        assert(sb:clock(life - 30))                       -- 30 s left: the same token, +300 s
        r = get()
        assert.equal(first.access_token, r.access_token)
        assert.equal(first.expired_at + 300, r.expired_at)
        assert(sb:clock(life + 300))                      -- expired: a new one
        r = get()
        assert.not_equal(first.access_token, r.access_token)
        assert.equal(r.now + 1800, r.expired_at)
      end)
      assert(sb:clock(0))
      local _, t = call("POST", "/users/getToken", { imp_key = sb.imp_key, imp_secret = sb.imp_secret })
      token = t.response.access_token
      assert(ok, err)
    end)

    -- The stats dict (counters, webhook delivery logs) drops its least
    -- recently used keys when full. Tokens, and what a revoke did, must
    -- not go with them: a live token stays live, a revoked one revoked
    -- (every key dropped in turn: spec/sandbox_tokens_spec.lua).
    it("keeps a live token live and a revoked one revoked when the stats dict fills up", function()
      local small = helper.start_small{ portone_stats = "128k" }
      local ok, err = pcall(function()
        local function get_token()
          local st, raw = helper.request(small, "POST", "/users/getToken",
            cjson.encode({ imp_key = small.imp_key, imp_secret = small.imp_secret }))
          assert.equal(200, st, raw)
          return cjson.decode(raw).response.access_token
        end
        -- 404 (no such payment) with a live token, 401 without one
        local function status_with(tok)
          return (helper.request(small, "GET", "/payments/imp_000000000000", nil,
            { Authorization = "Bearer " .. tok }))
        end
        local revoked = get_token()
        assert.equal(404, status_with(revoked))
        assert(small:admin("POST", "tokens", { revoke = true }))
        local live = get_token()
        assert.not_equal(revoked, live)
        assert.equal(404, status_with(live))
        assert.equal(401, status_with(revoked))
        -- ten payments whose 30 KB notice_url fills the 128k stats dict
        -- with their delivery logs: the first one's is evicted
        local url = small.url .. "/__sandbox/inbox?" .. ("x"):rep(30000)
        local first
        for i = 1, 10 do
          local st, raw = helper.request(small, "POST", helper.API,
            helper.create_body{ merchant_uid = uid("tokfill" .. i), notice_url = url })
          assert.equal(200, st, raw)
          local id = cjson.decode(raw).shortenedUrl:match("([^/]+)$")
          local r = assert(small:admin("POST", "pay", { id = id }))
          first = first or r.imp_uid
        end
        assert.is_nil(assert(small:admin("GET", "payments/" .. first)).webhooks)
        assert.equal(404, status_with(live))
        assert.equal(401, status_with(revoked))
        assert.equal(live, get_token())   -- still the current token
        -- and a revoke now refuses both, then hands out a new one
        assert(small:admin("POST", "tokens", { revoke = true }))
        assert.equal(401, status_with(live))
        assert.equal(401, status_with(revoked))
        local new = get_token()
        assert.is_false(new == live or new == revoked)
        assert.equal(404, status_with(new))
      end)
      small:stop()
      assert(ok, err)
    end)

    it("prints the made-up pair in the announce line", function()
      local plan = assert(sandbox.prepare{ announce = true, daemon = false })
      sandbox.remove_prefix(plan.prefix)
      assert.truthy(plan.server.announce:find("imp_key " .. plan.imp_key, 1, true))
      assert.truthy(plan.server.announce:find("imp_secret " .. plan.imp_secret, 1, true))
    end)

    it("takes Authorization: Bearer <t>, a raw Authorization: <t> and X-ImpTokenHeader: <t>", function()
      for _, h in ipairs({ { Authorization = "Bearer " .. token }, { Authorization = token },
                           { ["X-ImpTokenHeader"] = token } }) do
        local status, t = call("GET", "/payments/imp_000000000000", nil, h)
        assert.equal(404, status)     -- past auth: an unknown payment
        assert.equal("존재하지 않는 결제정보입니다.", t.message)
      end
      for _, h in ipairs({ {}, { Authorization = "Bearer nope" }, { Authorization = "deadbeef" },
                           { ["X-ImpTokenHeader"] = "nope" } }) do
        local status, t = call("GET", "/payments/imp_000000000000", nil, h)
        assert.equal(401, status)
        is_envelope(t)
        assert.equal("Unauthorized", t.message)
      end
    end)

    it("answers unknown REST paths with a JSON 404 and wrong methods with a JSON 405", function()
      local status, t, h = authed("GET", "/payments/a/b/c")
      assert.equal(404, status); is_envelope(t)
      assert.matches("^application/json", h["content-type"])
      status, t = authed("GET", "/users/nothing")
      assert.equal(404, status); is_envelope(t)
      status, t = authed("GET", "/payments/cancel")           -- not an imp_uid
      assert.equal(405, status); is_envelope(t)
      status, t = authed("DELETE", "/payments/imp_1")
      assert.equal(405, status); is_envelope(t)
      status, t = call("GET", "/users/getToken")
      assert.equal(405, status); is_envelope(t)
    end)
  end)

  describe("the payment object", function()
    it("has every V1 field with V1's types (null where empty, unix seconds, custom_data a string)", function()
      local id = create{ custom_data = { order = 7 }, pay_methods = {
        { pg = "html5_inicis.INIpayTest", pay_method = "card", label = "Card" } } }
      local r = assert(admin_pay(id))
      local status, t = authed("GET", "/payments/" .. r.imp_uid)
      assert.equal(200, status)
      assert.equal(0, t.code); assert.equal(cjson.null, t.message)
      local p = t.response
      assert.equal("html5_inicis", p.pg_provider)
      assert.equal("INIpayTest", p.pg_id)
      assert.equal('{"order":7}', p.custom_data)
      assert.equal("paid", p.status)
      assert.equal("api", p.channel)
      for _, k in ipairs({ "imp_uid", "merchant_uid", "pay_method", "channel", "pg_provider", "pg_tid",
                           "pg_id",
                           "apply_num", "card_code", "card_name", "card_number", "name", "currency",
                           "buyer_tel", "user_agent", "status", "receipt_url", "custom_data" }) do
        assert.is_string(p[k], k)
      end
      for _, k in ipairs({ "amount", "cancel_amount", "card_quota", "card_type", "vbank_date",
                           "vbank_issued_at",
                           "started_at", "paid_at", "failed_at", "cancelled_at" }) do
        assert.is_number(p[k], k)
      end
      for _, k in ipairs({ "escrow", "cash_receipt_issued" }) do assert.is_boolean(p[k], k) end
      for _, k in ipairs({ "emb_pg_provider", "bank_code", "bank_name", "vbank_code", "vbank_name",
                           "vbank_num",
                           "vbank_holder", "buyer_addr", "buyer_postcode", "fail_reason", "cancel_reason",
                           "customer_uid", "customer_uid_usage", "buyer_email" }) do
        assert.equal(cjson.null, p[k], k)
      end
      assert.equal(0, p.failed_at); assert.equal(0, p.cancelled_at); assert.equal(0, p.vbank_date)
      assert.truthy(p.paid_at > 1700000000)
      -- empty lists are [] on the wire, not {}
      local _, raw = helper.request(sb, "GET", "/payments/" .. r.imp_uid, nil, { Authorization = token })
      assert.truthy(raw:find('"cancel_history":[]', 1, true))
      assert.truthy(raw:find('"cancel_receipt_urls":[]', 1, true))
    end)

    it("reports a bare MID as KG Inicis's and a channelKey payment by its method", function()
      local id = create{ pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "C" },
                         { channelKey = "channel-key-1", pay_method = "kakaopay", label = "K" } } }
      local r = assert(admin_pay(id, { method = 2 }))
      local _, t = authed("GET", "/payments/" .. r.imp_uid)
      assert.equal("kakaopay", t.response.pg_provider)
      assert.equal(cjson.null, t.response.pg_id)
      local id2 = create()
      local r2 = assert(admin_pay(id2))
      _, t = authed("GET", "/payments/" .. r2.imp_uid)
      assert.equal("html5_inicis", t.response.pg_provider)
      assert.equal("INIpayTest", t.response.pg_id)
    end)
  end)

  describe("lookups", function()
    local muid, imp1, imp2
    lazy_setup(function()
      muid = uid("find")
      -- two attempts on one order: a declined one, then a paid one
      local id = create{ merchant_uid = muid }
      imp1 = assert(admin_pay(id, { decline = true })).imp_uid
      imp2 = assert(admin_pay(id)).imp_uid
    end)

    it("GET /payments/find/{merchant_uid}[/{status}] gives the newest payment of the order", function()
      local status, t = authed("GET", "/payments/find/" .. muid)
      assert.equal(200, status)
      assert.equal(imp2, t.response.imp_uid)
      local _
      _, t = authed("GET", "/payments/find/" .. muid .. "/failed")
      assert.equal(imp1, t.response.imp_uid)
      assert.equal("failed", t.response.status)
      status, t = authed("GET", "/payments/find/" .. muid .. "/cancelled")
      assert.equal(404, status)
      assert.equal("존재하지 않는 결제정보입니다.", t.message)
      assert.equal(cjson.null, t.response)
    end)

    it("reads a '+' in a path segment as a plus, as PortOne does (only %XX is decoded)", function()
      local plus = uid("a+b")
      local imp = assert(admin_pay((create{ merchant_uid = plus }))).imp_uid
      for _, path in ipairs({ "/payments/find/" .. plus, "/payments/find/" .. plus:gsub("%+", "%%2B"),
                              "/payments/findAll/" .. plus, "/payments/find/" .. plus .. "/paid" }) do
        local status, t = authed("GET", path)
        assert.equal(200, status, path)
        local got = t.response.imp_uid or t.response.list[1].imp_uid
        assert.equal(imp, got, path)
      end
      assert(call("POST", "/payments/prepare", { merchant_uid = plus, amount = 10000 },
        { Authorization = "Bearer " .. token }))
      local status, t = authed("GET", "/payments/prepare/" .. plus)
      assert.equal(200, status)
      assert.equal(plus, t.response.merchant_uid)
      -- and a space sent as %20 is still a space
      local spaced = uid("a b")
      local spaced_imp = assert(admin_pay((create{ merchant_uid = spaced }))).imp_uid
      status, t = authed("GET", "/payments/find/" .. spaced:gsub(" ", "%%20"))
      assert.equal(200, status)
      assert.equal(spaced_imp, t.response.imp_uid)
    end)

    it("GET /payments/findAll/{merchant_uid}[/{status}] pages the order's payments", function()
      local status, t = authed("GET", "/payments/findAll/" .. muid .. "/")   -- iamporter's trailing slash
      assert.equal(200, status)
      assert.equal(2, t.response.total)
      assert.equal(0, t.response.previous); assert.equal(0, t.response.next)
      assert.equal(imp2, t.response.list[1].imp_uid)   -- -started: newest first
      local _
      _, t = authed("GET", "/payments/findAll/" .. muid .. "/all?sorting=started")
      assert.equal(imp1, t.response.list[1].imp_uid)
      _, t = authed("GET", "/payments/findAll/" .. muid .. "/paid")
      assert.equal(1, t.response.total)
      status = authed("GET", "/payments/findAll/nobody-" .. muid)
      assert.equal(404, status)
    end)

    it("GET /payments/status/{status} pages with page, limit, from, to and sorting", function()
      local _, all = authed("GET", "/payments/status/all?limit=100")
      local total = all.response.total
      assert.truthy(total >= 2)
      local _, t = authed("GET", "/payments/status/all?limit=1&page=2")
      assert.equal(total, t.response.total)
      assert.equal(1, #t.response.list)
      assert.equal(1, t.response.previous)
      assert.equal(total > 2 and 3 or 0, t.response.next)
      _, t = authed("GET", "/payments/status/failed")
      for _, p in ipairs(t.response.list) do assert.equal("failed", p.status) end
      _, t = authed("GET", "/payments/status/all?from=1&to=2")
      assert.equal(0, t.response.total)
      local _, raw = helper.request(sb, "GET", "/payments/status/all?from=1&to=2", nil,
        { Authorization = token })
      assert.truthy(raw:find('"list":[]', 1, true))
      local status
      status, t = authed("GET", "/payments/status/nonsense")
      assert.equal(400, status)
      assert.equal("지원되지 않는 상태값입니다.", t.message)
    end)

    it("GET /payments?imp_uid[]=&merchant_uid[]= lists them; 207 when some are missing", function()
      local status, t = authed("GET", "/payments?imp_uid[]=" .. imp1 .. "&imp_uid[]=" .. imp2)
      assert.equal(200, status)
      assert.equal(2, #t.response)
      status, t = authed("GET", "/payments?imp_uid[]=" .. imp1 .. "&imp_uid[]=imp_000000000001")
      assert.equal(207, status)
      assert.equal(0, t.code)
      assert.equal(1, #t.response)
      status, t = authed("GET", "/payments?merchant_uid[]=" .. muid)
      assert.equal(200, status)
      assert.equal(imp2, t.response[1].imp_uid)
      status = authed("GET", "/payments?imp_uid[]=imp_000000000001")
      assert.equal(404, status)
    end)
  end)

  describe("cancel", function()
    it("cancels in parts with checksum, grows cancel_history, refuses more than the balance", function()
      local id = create{ amount = 10000 }
      local imp = assert(admin_pay(id)).imp_uid
      local status, t = authed("POST", "/payments/cancel",
        { imp_uid = imp, amount = 3000, checksum = 10000, reason = "one item" })
      assert.equal(200, status); assert.equal(0, t.code)
      assert.equal("paid", t.response.status)
      assert.equal(3000, t.response.cancel_amount)
      assert.equal(1, #t.response.cancel_history)
      assert.equal(3000, t.response.cancel_history[1].amount)
      assert.equal("one item", t.response.cancel_history[1].reason)
      assert.equal(1, #t.response.cancel_receipt_urls)
      -- a stale checksum is refused (HTTP 200, code 1), as V1
      status, t = authed("POST", "/payments/cancel", { imp_uid = imp, amount = 1000, checksum = 10000 })
      assert.equal(200, status); assert.equal(1, t.code)
      assert.matches("checksum", t.message)
      status, t = authed("POST", "/payments/cancel", { imp_uid = imp, amount = 8000 })
      assert.equal(200, status); assert.equal(1, t.code)
      local _, b = authed("GET", "/payments/" .. imp .. "/balance")
      assert.equal(7000, b.response.amount)
      assert.equal(2, #b.response.histories)
      -- the rest (no amount: the whole balance), then nothing is left
      _, t = authed("POST", "/payments/cancel", { imp_uid = imp, checksum = 7000 })
      assert.equal(0, t.code)
      assert.equal("cancelled", t.response.status)
      assert.equal(10000, t.response.cancel_amount)
      assert.equal(2, #t.response.cancel_history)
      status, t = authed("POST", "/payments/cancel", { imp_uid = imp })
      assert.equal(200, status); assert.equal(1, t.code)
      assert.equal("이미 전액취소된 주문입니다.", t.message)
    end)

    it("cancels by merchant_uid, as a form too; refuses an unknown or a missing uid", function()
      local muid = uid("cancel")
      local id = create{ merchant_uid = muid }
      assert(admin_pay(id))
      local status, raw = helper.request(sb, "POST", "/payments/cancel",
        "merchant_uid=" .. muid .. "&reason=x",
        { Authorization = token, ["Content-Type"] = "application/x-www-form-urlencoded" })
      assert.equal(200, status)
      local t = cjson.decode(raw)
      assert.equal(0, t.code); assert.equal("cancelled", t.response.status)
      local _
      _, t = authed("POST", "/payments/cancel", { imp_uid = "imp_000000000009" })
      assert.equal(1, t.code); assert.equal("취소할 결제건이 존재하지 않습니다.", t.message)
      _, t = authed("POST", "/payments/cancel", {})
      assert.equal(1, t.code); assert.matches("지정해주셔야합니다", t.message)
    end)

    it("a console (admin) cancel sends the cancellation webhook; a REST cancel none", function()
      local id = create()
      local imp = assert(admin_pay(id)).imp_uid
      assert.equal(1, #notices(imp, 1))
      local r = assert(sb:admin("POST", "cancel", { imp_uid = imp, amount = 2000, reason = "console" }))
      local got = notices(imp, 2)
      assert.equal(2, #got)
      assert.equal("cancelled", got[2].status)
      assert.equal(r.cancellation.cancellation_id, got[2].cancellation_id)
      authed("POST", "/payments/cancel", { imp_uid = imp })
      socket.sleep(0.2)
      assert.equal(2, #notices(imp, 3))
    end)
  end)

  describe("payment states", function()
    it("vbank: ready with the account, then paid when the admin API deposits", function()
      local id = create{ pay_methods = { { pg = "INIpayTest", pay_method = "vbank", label = "VA" } } }
      local r = assert(admin_pay(id))
      local _, t = authed("GET", "/payments/" .. r.imp_uid)
      local p = t.response
      assert.equal("ready", p.status)
      assert.is_string(p.vbank_num); assert.is_string(p.vbank_name)
      assert.truthy(p.vbank_date > p.vbank_issued_at)
      assert.equal(0, p.paid_at)
      assert.equal("ready", notices(r.imp_uid, 1)[1].status)
      local _, c = authed("POST", "/payments/cancel", { imp_uid = r.imp_uid })
      assert.equal(1, c.code)   -- nothing was paid yet
      assert(sb:admin("POST", "deposit", { imp_uid = r.imp_uid }))
      _, t = authed("GET", "/payments/" .. r.imp_uid)
      assert.equal("paid", t.response.status)
      assert.truthy(t.response.paid_at > 0)
      assert.equal("paid", notices(r.imp_uid, 2)[2].status)
      local _, err = sb:admin("POST", "deposit", { imp_uid = r.imp_uid })
      assert.matches("not ready", err)
      -- a refund of a virtual account needs the account to send it back to
      _, c = authed("POST", "/payments/cancel", { imp_uid = r.imp_uid })
      assert.equal(1, c.code)
      assert.matches("refund_account", c.message)
      _, c = authed("POST", "/payments/cancel", { imp_uid = r.imp_uid, refund_holder = "홍길동",
                                                   refund_bank = "04", refund_account = "12345678901" })
      assert.equal(0, c.code)
      assert.equal("cancelled", c.response.status)
    end)

    it("vbank: a deposit after the due date (vbank_date, on the sandbox clock) is refused: 409 naming"
      .. " the due date, the payment stays ready, no webhook", function()
      local pms = { { pg = "INIpayTest", pay_method = "vbank", label = "VA" } }
      local before = assert(admin_pay((create{ pay_methods = pms }))).payment
      local late = assert(admin_pay((create{ pay_methods = pms }))).payment
      assert.equal(1, #notices(before.imp_uid, 1)); assert.equal(1, #notices(late.imp_uid, 1))
      local ok, err = pcall(function()
        local function move_to(t) -- sets the sandbox clock so that its now is t
          local c = assert(sb:admin("GET", "clock"))
          assert(sb:clock(c.offset + t - c.now))
        end
        -- a minute before the due date the money still goes in
        move_to(before.vbank_date - 60)
        assert.equal("paid", assert(sb:admin("POST", "deposit", { imp_uid = before.imp_uid })).payment.status)
        -- a second past it the account is closed
        move_to(late.vbank_date + 1)
        local r, e = sb:admin("POST", "deposit", { imp_uid = late.imp_uid })
        assert.is_nil(r)
        assert.matches("HTTP 409", e)
        assert.truthy(e:find(os.date("!%Y-%m-%d %H:%M:%S UTC", late.vbank_date), 1, true), e)
        assert.truthy(e:find("due date", 1, true), e)
        -- V1 has no status for it (ready, paid, cancelled, failed): it stays ready, unpaid
        -- (a token of the moved clock: the suite's has expired by it)
        local _, tk = call("POST", "/users/getToken", { imp_key = sb.imp_key, imp_secret = sb.imp_secret })
        local _, t = call("GET", "/payments/" .. late.imp_uid, nil,
          { Authorization = "Bearer " .. tk.response.access_token })
        assert.equal("ready", t.response.status)
        assert.equal(0, t.response.paid_at)
        assert.equal(late.vbank_date, t.response.vbank_date)
        socket.sleep(0.3)
        assert.equal(1, #notices(late.imp_uid, 2))
        assert.equal("paid", notices(before.imp_uid, 2)[2].status)
      end)
      assert(sb:clock(0))
      assert(ok, err)
    end)

    it("a buyer who declines on the bridge page makes a failed payment, and may pay again", function()
      local id = create()
      local status, html = sandbox.http(sb.host, sb.port, "GET", "/" .. id)
      assert.equal(200, status)
      assert.truthy(html:find('class="decline', 1, true))
      status, html = sandbox.http(sb.host, sb.port, "POST", "/" .. id, "action=decline",
        { ["Content-Type"] = "application/x-www-form-urlencoded" })
      assert.equal(200, status)
      assert.truthy(html:find('class="failed"', 1, true))
      local imp = html:match('class="row imp%-uid"><span>[^<]*</span><span>(imp_%d+)<')
      local _, t = authed("GET", "/payments/" .. imp)
      assert.equal("failed", t.response.status)
      assert.is_string(t.response.fail_reason)
      assert.truthy(t.response.failed_at > 0)
      local paid = assert(admin_pay(id))   -- the link is still payable
      -- V1 posts no notice for a failed payment: once the later payment's
      -- has come, the inbox holds none for the failed one
      assert.equal("paid", notices(paid.imp_uid, 1)[1].status)
      for _, e in ipairs(assert(sb:admin("GET", "inbox"))) do
        assert.falsy(e.body:find(imp, 1, true), e.body)
      end
    end)

    it("prepare registers an amount; paying the order with another amount fails", function()
      local muid = uid("prep")
      local status, t = authed("POST", "/payments/prepare", { merchant_uid = muid, amount = 5000 })
      assert.equal(200, status)
      assert.same({ merchant_uid = muid, amount = 5000 }, t.response)
      local _
      _, t = authed("GET", "/payments/prepare/" .. muid)
      assert.equal(5000, t.response.amount)
      _, t = authed("POST", "/payments/prepare", { merchant_uid = muid, amount = 6000 })
      assert.equal(1, t.code)   -- registered already: PUT changes it
      status, t = authed("GET", "/payments/prepare/nobody-" .. muid)
      assert.equal(404, status)
      assert.equal("사전등록된 결제정보가 존재하지 않습니다.", t.message)
      local id = create{ merchant_uid = muid, amount = 10000 }
      local r = assert(admin_pay(id))
      assert.equal("failed", r.payment.status)
      assert.matches("사전", r.payment.fail_reason)
      _, t = authed("PUT", "/payments/prepare", { merchant_uid = muid, amount = 10000 })
      assert.equal(0, t.code)
      r = assert(admin_pay(id))
      assert.equal("paid", r.payment.status)
      status = authed("POST", "/payments/prepare", { merchant_uid = muid, amount = -1 })
      assert.equal(400, status)
    end)

    it("test-mode payments are found only with include_sandbox=true", function()
      assert(sb:admin("POST", "test_mode", { on = true }))
      local id = create()
      local r = assert(admin_pay(id))
      assert(sb:admin("POST", "test_mode", { on = false }))
      local status = authed("GET", "/payments/" .. r.imp_uid)
      assert.equal(404, status)
      local _, t = authed("GET", "/payments/" .. r.imp_uid .. "?include_sandbox=true")
      assert.equal(r.imp_uid, t.response.imp_uid)
    end)
  end)

  describe("admin", function()
    it("redelivers a webhook, several copies at once", function()
      local id = create()
      local imp = assert(admin_pay(id)).imp_uid
      assert.equal(1, #notices(imp, 1))
      assert.same({ scheduled = 2 }, assert(sb:admin("POST", "redeliver", { imp_uid = imp, count = 2 })))
      assert.equal(3, #notices(imp, 3))
      local _, err = sb:admin("POST", "redeliver", { imp_uid = "imp_000000000002" })
      assert.matches("no webhook", err)
    end)

    it("reads one link in full and one payment with its deliveries", function()
      local pms = { { pg = "INIpayTest", pay_method = "card", label = "Card" },
                    { pg = "INIpayTest", pay_method = "vbank", label = "Bank" } }
      local id, req = create{ pay_methods = pms }
      local rec = assert(sb:admin("GET", "links/" .. id))
      assert.equal(req.merchant_uid, rec.merchant_uid)
      assert.equal(2, #rec.pay_methods)   -- what the paged list leaves out
      assert.equal("vbank", rec.pay_methods[2].pay_method)
      assert.equal(sb.url .. "/__sandbox/inbox", rec.notice_url)
      assert.equal(cjson.null, rec.paid_imp_uid)
      local r = assert(admin_pay(id, { method = 2 }))
      assert.equal(r.imp_uid, assert(sb:admin("GET", "links/" .. id)).paid_imp_uid)
      notices(r.imp_uid, 1)
      local p = assert(sb:admin("GET", "payments/" .. r.imp_uid))
      assert.equal("ready", p.status)
      assert.equal(1, #p.webhooks)
      assert.equal("ready", p.webhooks[1].notice)
      assert.equal(200, p.webhooks[1].status)
      local d = assert(sb:admin("POST", "deposit", { imp_uid = r.imp_uid }))
      assert.equal("paid", d.payment.status)
      assert.equal("normal", d.webhook)
      local _, err = sb:admin("GET", "links/nosuchlink")
      assert.matches("no such link", err)
      _, err = sb:admin("GET", "payments/imp_000000000003")
      assert.matches("no such payment", err)
      local status = sandbox.http(sb.host, sb.admin_port, "POST", "/__sandbox/links/" .. id, "{}")
      assert.equal(405, status)
    end)

    it("pays a link with direct with its direct method when none is given, and refuses another", function()
      local pms = { { pg = "INIpayTest", pay_method = "card", label = "Card" },
                    { pg = "INIpayTest", pay_method = "vbank", label = "Bank" } }
      local direct = { pg = "INIpayTest", pay_method = "vbank" }
      local id = create{ pay_methods = pms, direct = direct }
      -- the payment step of a direct link offers its method only (the
      -- bridge page is skipped): the card is not on offer
      local r, err = admin_pay(id, { method = 1 })
      assert.is_nil(r)
      assert.matches("HTTP 400", err)
      assert.truthy(err:find("direct", 1, true), err)
      assert.truthy(err:find("vbank", 1, true), err)
      r = assert(admin_pay(id))
      assert.equal("vbank", r.payment.pay_method)
      assert.equal("ready", r.payment.status)
      assert.equal("ready", notices(r.imp_uid, 1)[1].status)
      -- the direct method by its index, or as "direct"; a decline declines it
      assert.equal("vbank", assert(admin_pay(create{ pay_methods = pms, direct = direct },
        { method = 2 })).payment.pay_method)
      assert.equal("vbank", assert(admin_pay(create{ pay_methods = pms, direct = direct },
        { method = "direct" })).payment.pay_method)
      local d = assert(admin_pay(create{ pay_methods = pms, direct = direct }, { decline = true })).payment
      assert.equal("failed", d.status)
      assert.equal("vbank", d.pay_method)
      -- the page's form takes the same methods: the card is a bad method there too
      local id2 = create{ pay_methods = pms, direct = direct }
      local status = sandbox.http(sb.host, sb.port, "POST", "/" .. id2, "method=1",
        { ["Content-Type"] = "application/x-www-form-urlencoded" })
      assert.equal(400, status)
      assert.equal(cjson.null, assert(sb:admin("GET", "links/" .. id2)).paid_imp_uid)
      -- a link without direct still defaults to its first method
      assert.equal("card", assert(admin_pay(create{ pay_methods = pms })).payment.pay_method)
    end)

    it("pages GET /__sandbox/links, newest first, with the total in X-Total-Count", function()
      local function links(q)
        local status, body, h = sandbox.http(sb.host, sb.admin_port, "GET", "/__sandbox/links" .. q)
        assert.equal(200, status)
        local n = 0
        for _ in pairs(cjson.decode(body)) do n = n + 1 end
        return cjson.decode(body), n, tonumber(h["x-total-count"]), tonumber(h["x-next-page"])
      end
      local ids = {}
      for i = 1, 3 do ids[i] = create() end
      local all, n, total = links("?limit=1000")
      assert.equal(total, n)
      assert.truthy(total >= 3)
      local page, count, t2, nxt = links("?limit=2")
      assert.equal(total, t2)
      assert.equal(2, count)
      assert.equal(2, nxt)
      assert.is_table(page[ids[3]]); assert.is_table(page[ids[2]])   -- the newest two
      assert.is_string(page[ids[3]].merchant_uid)
      page = links("?limit=2&page=2")
      assert.is_table(page[ids[1]])
      local _, none, _, last = links("?limit=2&page=100000")
      assert.equal(0, none)
      assert.equal(0, last)
      assert.is_table(all[ids[1]])
    end)
  end)
end)
