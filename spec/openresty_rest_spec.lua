-- link.rest and the OpenResty webhook example inside a real nginx.
--
-- The test nginx (spec/nginx/harness.lua) runs `link.rest.new{...}` with the
-- transport it picks by itself there (cosockets) against a sandbox started
-- with an imp_key/imp_secret; this spec, running under lua5.4 or luajit as a
-- separate host, drives it over HTTP (spec/nginx/handlers.lua, /t/rest) and
-- reads what reached the sandbox (`sb:requests()`):
--
--  * payment / verify results and every error kind, from inside nginx;
--  * one token refresh at a time per worker: N lookups at once on a fresh
--    client, in ngx.thread light threads of one request or as N separate
--    requests sharing the worker's client, make exactly one getToken (the
--    others wait on the ngx.semaphore); a refused refresh reaches every
--    waiter with that one request too;
--  * a revoked token (admin `tokens {revoke}`): one 401, one refresh, one
--    retry that succeeds, also with N lookups in flight.
--
-- Then examples/webhook/handler.lua, mounted at /portone/webhook as its
-- README says (env PORTONE_IMP_KEY/SECRET/REST_BASE_URL, lua_shared_dict
-- orders): links whose notice_url points there are paid through the sandbox
-- admin `pay`, and the sandbox's own record of the delivery (status, ms),
-- the handler's order store and its log show what it did.
local cjson = require "cjson"
local socket = require "socket"
local link = require "portone.link"
local harness = require "nginx.harness"
local helper = require "helpers.sandbox"
local cases = require "helpers.cases"

local KEY, SECRET = "ngx-rest-imp-key", "ngx-rest-imp-secret-0123456789"

local sb, srv, client

local request = harness.request
local function post(path, body) return srv:post(path, body) end

-- Runs calls on the nginx-side rest client `name` (fresh: a new one).
local function rest(name, calls, over)
  local a = { name = name, calls = calls }
  for k, v in pairs(over or {}) do a[k] = v end
  if a.fresh and not a.opts then
    a.opts = { imp_key = KEY, imp_secret = SECRET, base_url = sb.url }
  end
  return post("/t/rest", a)
end

-- The API requests the sandbox saw for getToken / GET /payments.
local function api_log()
  local out = {}
  for _, r in ipairs(assert(sb:requests())) do
    if r.uri == "/users/getToken" then out[#out + 1] = "token"
    elseif r.uri:match("^/payments/") then out[#out + 1] = "payment" end
  end
  return out
end

local function count(list, what)
  local n = 0
  for _, v in ipairs(list) do if v == what then n = n + 1 end end
  return n
end

-- A paid link: create it with the client, pay it through the admin API.
local function paid(over)
  local req = cases.request(over)
  local res = assert(client:create(req))
  local r = assert(sb:admin("POST", "pay", { id = res.id }))
  return r.imp_uid, req, r
end

local function payment_record(imp_uid)
  for _, p in ipairs(assert(sb:admin("GET", "payments"))) do
    if p.imp_uid == imp_uid then return p end
  end
end

-- The sandbox's webhook deliveries for imp_uid, waiting for n of them.
local function deliveries(imp_uid, n, wait)
  local deadline = socket.gettime() + (wait or 5)
  local rec
  repeat
    rec = payment_record(imp_uid)
    local done = 0
    for _, w in ipairs(rec and rec.webhooks or {}) do
      if w.status or w.error then done = done + 1 end
    end
    if done >= n then return rec.webhooks end
    socket.sleep(0.02)
  until socket.gettime() > deadline
  error("no " .. n .. " webhook deliveries for " .. imp_uid .. ": " .. cjson.encode(rec or {}))
end

local function plain_count(s, pat)
  local n, i = 0, 1
  while true do
    local a, b = s:find(pat, i, true)
    if not a then return n end
    n, i = n + 1, b + 1
  end
end

-- Lines of the nginx log containing `text`, waiting up to `wait` for `n`.
local function log_lines(text, n, wait)
  local deadline = socket.gettime() + (wait or 0)
  local got
  repeat
    got = plain_count(srv:log() or "", text)
    if got >= (n or 1) then return got end
    socket.sleep(0.02)
  until socket.gettime() > deadline
  return got
end

describe("link.rest and the webhook example inside nginx", function()
  lazy_setup(function()
    sb = helper.start { imp_key = KEY, imp_secret = SECRET }
    srv = harness.start {
      sandbox_url = sb.url, log_level = "notice",
      env = { PORTONE_IMP_KEY = KEY, PORTONE_IMP_SECRET = SECRET, PORTONE_REST_BASE_URL = sb.url },
    }
    client = link.new { base_url = sb.url, transport = "curl", retries = 0 }
  end)
  lazy_teardown(function()
    if client then client:close() end
    if srv then srv:stop() end
    if sb then sb:stop() end
  end)
  before_each(function()
    -- links, payments, tokens, faults, latency and the request log start empty
    assert(sb:reset())
  end)

  describe("link.rest over cosockets", function()
    it("looks payments up and verifies them, on the transport it picks inside nginx", function()
      local imp_uid, req = paid { amount = 12500 }
      local notice = { imp_uid = imp_uid, merchant_uid = req.merchant_uid, status = "paid" }
      local r = rest("basic", {
        { op = "payment", imp_uid = imp_uid },
        { op = "verify", notice = notice, expect = { amount = 12500, merchant_uid = req.merchant_uid } },
        { op = "verify", notice = notice, expect = { amount = 12000 } },
        { op = "verify", notice = notice, expect = { amount = 12500, merchant_uid = "someone-else" } },
        { op = "verify", notice = notice, expect = { amount = 12500, status = "cancelled" } },
        { op = "payment", imp_uid = "imp_000000000000" },
        { op = "verify", notice = { imp_uid = "imp_000000000000" },
          expect = { amount = 1, merchant_uid = "x" } },
        { op = "payment", imp_uid = "../users/getToken" },
        { op = "verify", notice = notice, expect = {} },
        { op = "verify", notice = { imp_uid = imp_uid }, expect = { amount = 12500 } },
      }, { fresh = true })
      assert.equal("ngx", r.transport)
      local res = r.results
      assert.equal(imp_uid, res[1].ok.imp_uid)
      assert.equal(12500, res[1].ok.amount)
      assert.equal("paid", res[1].ok.status)
      assert.equal(imp_uid, res[2].ok.imp_uid)
      assert.equal(req.merchant_uid, res[2].ok.merchant_uid)

      assert.equal("mismatch", res[3].err.kind)
      assert.equal("amount", res[3].err.field)
      assert.equal("12000", res[3].err.expected)
      assert.equal("12500", res[3].err.actual)
      assert.equal("mismatch", res[4].err.kind)
      assert.equal("merchant_uid", res[4].err.field)
      assert.equal("unpaid", res[5].err.kind)
      assert.equal("paid", res[5].err.payment_status)

      assert.equal("http", res[6].err.kind)
      assert.equal(404, res[6].err.status)
      assert.equal("http", res[7].err.kind)
      assert.equal("lookup", res[7].err.stage)
      assert.equal("validation", res[8].err.kind)
      assert.matches("bad argument #2 to 'verify'", res[9].raised, 1, true)
      -- no merchant_uid in the notice or the expectation: refused, not looked up
      assert.equal("validation", res[10].err.kind)
      assert.equal("merchant_uid", res[10].err.errors[1].field)

      -- one token for every lookup; the invalid imp_uid never left nginx
      assert.same({ "token", "payment", "payment", "payment", "payment", "payment", "payment", "payment" },
        api_log())
      -- the next request reuses the worker's client and its token
      r = rest("basic", { { op = "payment", imp_uid = imp_uid } })
      assert.equal(imp_uid, r.results[1].ok.imp_uid)
      assert.equal(1, count(api_log(), "token"))
    end)

    it("a refused key is an auth error that never shows the secret", function()
      local imp_uid, req = paid()
      local r = rest("wrong", {
        { op = "payment", imp_uid = imp_uid },
        { op = "verify", notice = { imp_uid = imp_uid },
          expect = { amount = 10000, merchant_uid = req.merchant_uid } },
      }, { fresh = true, opts = { imp_key = KEY, imp_secret = "not-the-secret-42", base_url = sb.url } })
      assert.equal("auth", r.results[1].err.kind)
      assert.equal(401, r.results[1].err.status)
      assert.equal("auth", r.results[2].err.kind)
      assert.equal("lookup", r.results[2].err.stage)
      local text = cjson.encode(r)
      assert.is_nil(text:find("not-the-secret-42", 1, true))
      assert.same({ "token", "token" }, api_log())
    end)

    it("N verifications at once in light threads on a fresh client: one getToken", function()
      local calls = {}
      for i = 1, 10 do
        local imp_uid, req = paid()
        calls[i] = { op = "verify", notice = { imp_uid = imp_uid, merchant_uid = req.merchant_uid },
          expect = { amount = req.amount } }
      end
      -- every answer takes 100 ms: the getToken is in flight while the other
      -- nine threads ask for a token
      assert(sb:latency(100))
      local t0 = socket.gettime()
      local r = rest("threads", calls, { fresh = true, concurrent = true })
      local elapsed = socket.gettime() - t0
      for i, res in ipairs(r.results) do
        assert.is_nil(res.err, "call " .. i)
        assert.is_nil(res.raised, "call " .. i)
        assert.equal(calls[i].notice.imp_uid, res.ok.imp_uid)
      end
      local log = api_log()
      assert.equal(1, count(log, "token"))
      assert.equal("token", log[1])
      assert.equal(10, count(log, "payment"))
      -- the lookups overlapped: one token round trip, then ten lookups at once
      assert.is_true(elapsed < 0.9, "took " .. elapsed .. " s")
      assert.is_false(r.refreshing)
      -- the same client again: no getToken at all
      r = rest("threads", calls, { concurrent = true })
      for i, res in ipairs(r.results) do assert.truthy(res.ok, "call " .. i) end
      assert.equal(1, count(api_log(), "token"))
    end)

    it("N separate requests sharing the worker's fresh client: one getToken", function()
      local calls = {}
      for i = 1, 8 do
        local imp_uid, req = paid()
        calls[i] = { op = "verify", notice = { imp_uid = imp_uid }, expect = { amount = req.amount,
          merchant_uid = req.merchant_uid } }
      end
      rest("shared", {}, { fresh = true }) -- made, no token yet
      assert(sb:latency(100))
      local r = post("/t/rest/fanout", { name = "shared", calls = calls })
      for i, res in ipairs(r.results) do
        assert.is_nil(res.raised, "request " .. i)
        assert.equal(calls[i].notice.imp_uid, res.ok and res.ok.imp_uid, "request " .. i)
      end
      local log = api_log()
      assert.equal(1, count(log, "token"))
      assert.equal(8, count(log, "payment"))
    end)

    it("a refused refresh reaches every waiting thread, with one getToken", function()
      local imp_uid = paid()
      local calls = {}
      for i = 1, 6 do calls[i] = { op = "payment", imp_uid = imp_uid } end
      assert(sb:latency(50))
      local r = rest("refused", calls, { fresh = true, concurrent = true,
        opts = { imp_key = KEY, imp_secret = "wrong-secret-0000", base_url = sb.url } })
      for i, res in ipairs(r.results) do
        assert.equal("auth", res.err and res.err.kind, "call " .. i)
      end
      assert.same({ "token" }, api_log())
      -- and the next call tries again (a failure is not cached)
      r = rest("refused", { { op = "payment", imp_uid = imp_uid } })
      assert.equal("auth", r.results[1].err.kind)
      assert.same({ "token", "token" }, api_log())
    end)

    it("a refresh whose light thread was killed does not block the client for good", function()
      local imp_uid = paid()
      assert(sb:latency(300))
      local r = rest("abandoned", { { op = "abandon" } }, { fresh = true, test_clock = true })
      assert.truthy(r.results[1].ok.killed, cjson.encode(r.results[1]))
      assert.is_true(r.results[1].ok.refreshing) -- nobody will finish it
      assert(sb:latency(0))
      -- past the longest wait for a refresh in flight, the next caller takes over
      r = rest("abandoned", { { op = "advance", seconds = 16 }, { op = "payment", imp_uid = imp_uid } })
      assert.equal(imp_uid, r.results[2].ok and r.results[2].ok.imp_uid, cjson.encode(r.results[2]))
      assert.is_false(r.refreshing)
      assert.same({ "token", "token", "payment" }, api_log())
    end)

    it("in the log phase, with a refresh in flight, a call fails at once instead of spinning the worker",
        function()
      rest("log", {}, { fresh = true })
      assert(sb:faults("token", { { delay_ms = 1500 } }))
      local code, text = request("GET", srv.url .. "/t/rest/log?name=log")
      assert.equal(200, code)
      assert.equal("refreshing\n", text)
      -- the log phase runs after the answer; a worker spinning in it answers
      -- nothing more (a short socket timeout, not the default minute)
      local http = require "socket.http"
      local got
      local deadline = socket.gettime() + 5
      repeat
        http.TIMEOUT = 1
        local body = http.request(srv.url .. "/t/rest/log/result")
        http.TIMEOUT = 60
        assert.truthy(body, "the worker no longer answers: it spins in the log phase")
        got = cjson.decode(body)
        if got ~= cjson.null then break end
        socket.sleep(0.02)
      until socket.gettime() > deadline
      assert.is_table(got)
      assert.is_nil(got.raised)
      assert.is_nil(got.token)
      assert.equal("transport", got.err.kind, got.err.text)
      assert.is_false(got.err.retryable)
      assert.matches("ngx.timer.at", got.err.message, 1, true)
      -- the timer's refresh still ends and serves the next call (until it
      -- has, the call fails as above)
      local r
      deadline = socket.gettime() + 10
      repeat
        r = rest("log", { { op = "token" } }).results[1]
        if r.ok then break end
        socket.sleep(0.05)
      until socket.gettime() > deadline
      assert.equal("(a token)", r.ok)
    end)

    it("a revoked token: one 401, one refresh, one retry that succeeds", function()
      local imp_uid, req = paid()
      local r = rest("revoke", { { op = "payment", imp_uid = imp_uid } }, { fresh = true })
      assert.equal(imp_uid, r.results[1].ok.imp_uid)
      assert(sb:admin("POST", "tokens", { revoke = true }))
      r = rest("revoke", { { op = "payment", imp_uid = imp_uid } })
      assert.equal(imp_uid, r.results[1].ok.imp_uid)
      assert.same({ "token", "payment", "payment", "token", "payment" }, api_log())
      -- the new token is cached: the next lookup is one request
      r = rest("revoke", { { op = "verify", notice = { imp_uid = imp_uid },
        expect = { amount = 10000, merchant_uid = req.merchant_uid } } })
      assert.equal("paid", r.results[1].ok.status)
      assert.same({ "token", "payment", "payment", "token", "payment", "payment" }, api_log())
    end)

    it("a revoked token with N lookups in flight: N 401s, one refresh, N retries", function()
      local imp_uid = paid()
      assert(rest("revoke-many", { { op = "payment", imp_uid = imp_uid } }, { fresh = true }).results[1].ok)
      assert(sb:admin("POST", "tokens", { revoke = true }))
      assert(sb:latency(50))
      local calls = {}
      for i = 1, 8 do calls[i] = { op = "payment", imp_uid = imp_uid } end
      local r = rest("revoke-many", calls, { concurrent = true })
      for i, res in ipairs(r.results) do
        assert.equal(imp_uid, res.ok and res.ok.imp_uid, "call " .. i)
      end
      local log = api_log()
      assert.equal(2, count(log, "token"))       -- the first one and the refresh
      assert.equal(1 + 8 + 8, count(log, "payment"))
    end)
  end)

  -- rest_refund_spec's cases on the retry rule of a cancel (not idempotent),
  -- over cosockets: the same answers give the same fields as over curl
  describe("cancel over cosockets", function()
    local function cancel(name, req, over)
      return rest(name, { { op = "cancel", req = req } }, over).results[1]
    end
    local function payment(name, imp_uid)
      return assert(rest(name, { { op = "payment", imp_uid = imp_uid } }).results[1].ok)
    end

    it("refunds; after a cut answer it is not retryable, after a 503 it is", function()
      local imp = paid { amount = 10000 }
      local r = cancel("cancel-1", { imp_uid = imp, amount = 2500, checksum = 10000 }, { fresh = true })
      assert.equal(2500, r.ok.cancel_amount)
      assert(sb:faults("cancel", { { truncate = true } }))
      local err = cancel("cancel-1", { imp_uid = imp, amount = 1000, checksum = 7500 }).err
      assert.equal("transport", err.kind)
      assert.is_true(err.sent)
      assert.is_false(err.retryable)
      assert(sb:faults("cancel", { { status = 503 } }))
      err = cancel("cancel-1", { imp_uid = imp, amount = 1000, checksum = 6500 }).err
      assert.equal("http", err.kind)
      assert.is_true(err.retryable)
      assert.equal(3500, payment("cancel-1", imp).cancel_amount)
    end)

    it("a 401 or a 503 to the silent re-send of a cancel whose first send got no answer: "
        .. "unanswered, not retryable, no third send", function()
      rest("cancel-2", {}, { fresh = true })
      for _, second in ipairs({ { status = 401 }, { status = 503 } }) do
        local imp = paid { amount = 10000 }
        payment("cancel-2", imp)                 -- a token, and a kept-alive connection
        local before = #assert(sb:requests())
        assert(sb:faults("cancel", { { reset_after = true }, second }))
        local err = cancel("cancel-2", { imp_uid = imp, amount = 1000 }).err
        assert.equal(1, err.unanswered, cjson.encode(err))
        assert.is_false(err.retryable)
        assert.equal(before + 2, #assert(sb:requests()))
        assert.equal(1000, payment("cancel-2", imp).cancel_amount)
      end
    end)

    it("a failed token fetch: the cancel was never sent, retryable as the fetch is", function()
      local imp = paid { amount = 10000 }
      for _, faults in ipairs({ { { status = 502 } }, { { reset_after = true }, { reset_after = true } } }) do
        assert(sb:faults("token", faults))
        local err = cancel("cancel-3", { imp_uid = imp, amount = 1000, checksum = 10000 },
          { fresh = true }).err
        assert.matches("getToken", err.message)
        assert.is_true(err.retryable, err.text)
        assert.is_nil(err.unanswered)
      end
      for _, r in ipairs(assert(sb:requests())) do assert.not_equal("/payments/cancel", r.uri) end
    end)
  end)

  describe("examples/webhook/handler.lua mounted in nginx", function()
    local hook_url

    -- A link whose webhook goes to the handler, and the order it pays for in
    -- the handler's store.
    local function order(amount)
      local req = cases.request { amount = amount or 10000, notice_url = hook_url }
      local res = assert(client:create(req))
      assert(post("/t/orders/set", { merchant_uid = req.merchant_uid, amount = req.amount }).ok)
      return res.id, req
    end

    local function pay(id)
      local r = assert(sb:admin("POST", "pay", { id = id }))
      return r.imp_uid, r
    end

    -- the order's record; `claim` is the claim on the payment imp_uid
    local function store(merchant_uid, imp_uid)
      local code, text = request("GET", srv.url .. "/t/orders/get?merchant_uid=" .. merchant_uid
        .. "&imp_uid=" .. (imp_uid or ""))
      assert.equal(200, code)
      return cjson.decode(text)
    end

    local function shipped(merchant_uid, imp_uid)
      return "order " .. merchant_uid .. " paid (" .. imp_uid .. "): shipping"
    end

    lazy_setup(function() hook_url = srv.url .. "/portone/webhook" end)
    before_each(function() assert(sb:admin("POST", "webhook", { mode = "normal" })) end)

    it("verifies a paid notice, answers 200 at once, marks the order and fulfils it", function()
      local id, req = order(10000)
      local imp_uid, r = pay(id)
      assert.equal("normal", r.webhook)
      local hooks = deliveries(imp_uid, 1)
      assert.equal(200, hooks[1].status)
      -- parse + one getToken + one lookup on loopback: well under the 30 s
      -- the sandbox waits (a loose bound: a loaded machine is slow too)
      assert.is_true(hooks[1].ms < 3000, "answered in " .. hooks[1].ms .. " ms")
      local s = store(req.merchant_uid)
      assert.equal(10000, s.amount)
      assert.equal(imp_uid, s.paid)
      -- fulfilment ran afterwards, in the ngx.timer
      assert.equal(1, log_lines(shipped(req.merchant_uid, imp_uid), 1, 3))
      -- what the handler asked REST V1: one getToken at most (the worker's
      -- client may hold one from before: then a 401 and a refresh first)
      assert.is_true(count(api_log(), "token") <= 1)
    end)

    it("the same notice twice (and as a form): the copy for a fulfilled order is not looked up", function()
      assert(sb:admin("POST", "webhook", { mode = "twice", delay_ms = 100, format = "form" }))
      local id, req = order(20000)
      local imp_uid = pay(id)
      local hooks = deliveries(imp_uid, 2)
      assert.equal(200, hooks[1].status)
      assert.equal(200, hooks[2].status)
      assert.equal("form", hooks[1].format)
      assert.equal(imp_uid, store(req.merchant_uid).paid)
      -- one lookup (plus a 401 and a refresh when the handler's cached
      -- token predates this test's sandbox reset): the second copy found
      -- the order fulfilled
      local log = api_log()
      assert.is_true(count(log, "token") <= 1)
      assert.equal(1 + count(log, "token") * (log[1] == "payment" and 1 or 0), count(log, "payment"))
      socket.sleep(0.1)
      assert.equal(1, log_lines(shipped(req.merchant_uid, imp_uid), 1, 3))
    end)

    it("two copies delivered at once (admin redeliver) are handled exactly once", function()
      assert(sb:admin("POST", "webhook", { mode = "drop" }))   -- only the two copies below
      local id, req = order(15000)
      local imp_uid = pay(id)
      assert.same({ scheduled = 2 }, assert(sb:admin("POST", "redeliver", { imp_uid = imp_uid, count = 2 })))
      local hooks = deliveries(imp_uid, 2)                     -- the drop, then the two
      assert.equal(3, #hooks)
      assert.equal(200, hooks[2].status)
      assert.equal(200, hooks[3].status)
      assert.equal(imp_uid, store(req.merchant_uid).paid)
      socket.sleep(0.2)
      assert.equal(1, log_lines(shipped(req.merchant_uid, imp_uid), 1, 3))
      -- one copy claimed the order and looked it up; the other did not
      local log = api_log()
      assert.equal(1 + count(log, "token") * (log[1] == "payment" and 1 or 0), count(log, "payment"))
      assert.is_nil(store(req.merchant_uid, imp_uid).claim)       -- released
      -- more copies later: answered OK, nothing more shipped
      assert(sb:admin("POST", "redeliver", { imp_uid = imp_uid, count = 3 }))
      hooks = deliveries(imp_uid, 5)
      for i = 4, 6 do assert.equal(200, hooks[i].status) end
      assert.equal(1, log_lines(shipped(req.merchant_uid, imp_uid)))
    end)

    it("a forged notice naming the order, in flight, does not get the real notice dropped", function()
      -- The real notice arrives while a forged one (same merchant_uid, an
      -- imp_uid that does not exist) is being looked up. PortOne sends a
      -- notice once unless resends were asked for: an "in progress" answer
      -- to the real one would lose a paid order for good.
      local id, req = order(10000)
      assert(sb:admin("POST", "webhook", { mode = "late", delay_ms = 300 }))
      assert(sb:faults("payment", { { delay_ms = 1500 } }))       -- the forged lookup, slow
      local imp_uid = pay(id)
      local code = request("POST", hook_url, cjson.encode {
        imp_uid = "imp_000000000009", merchant_uid = req.merchant_uid, status = "paid" })
      assert.equal(500, code)                                     -- no such payment
      assert.equal(200, deliveries(imp_uid, 1)[1].status)
      assert.equal(imp_uid, store(req.merchant_uid).paid)
      assert.equal(1, log_lines(shipped(req.merchant_uid, imp_uid), 1, 3))
      assert.is_nil(store(req.merchant_uid, imp_uid).claim)
    end)

    it("a copy whose handling failed releases the claim: the next copy fulfils", function()
      local id, req = order(10000)
      assert(sb:faults("payment", { { status = 503 } }))
      local imp_uid = pay(id)
      assert.equal(500, deliveries(imp_uid, 1)[1].status)
      assert.is_nil(store(req.merchant_uid, imp_uid).claim)
      assert.is_nil(store(req.merchant_uid).paid)
      assert(sb:admin("POST", "redeliver", { imp_uid = imp_uid }))
      assert.equal(200, deliveries(imp_uid, 2)[2].status)
      assert.equal(imp_uid, store(req.merchant_uid).paid)
      assert.equal(1, log_lines(shipped(req.merchant_uid, imp_uid), 1, 3))
    end)

    it("an error while the order is claimed answers 500 and releases the claim", function()
      local id, req = order(10000)
      -- a broken order store: verify raises on an amount that is not a number
      assert(post("/t/orders/set", { merchant_uid = req.merchant_uid, amount = "ten thousand" }).ok)
      local imp_uid = pay(id)
      assert.equal(500, deliveries(imp_uid, 1)[1].status)
      assert.is_nil(store(req.merchant_uid, imp_uid).claim)
      assert(post("/t/orders/set", { merchant_uid = req.merchant_uid, amount = 10000 }).ok)
      assert(sb:admin("POST", "redeliver", { imp_uid = imp_uid }))
      assert.equal(200, deliveries(imp_uid, 2)[2].status)
      assert.equal(imp_uid, store(req.merchant_uid).paid)
      assert.equal(1, log_lines(shipped(req.merchant_uid, imp_uid), 1, 3))
    end)

    it("a tampered amount is answered 200 but never fulfilled", function()
      local id, req = order(10000)
      assert(sb:admin("POST", "tamper", { next = true, amount = 100 }))
      local imp_uid = pay(id)
      local hooks = deliveries(imp_uid, 1)
      assert.equal(200, hooks[1].status)
      local s = store(req.merchant_uid)
      assert.is_nil(s.paid)
      assert.equal(1, log_lines("verify: amount is 100, expected 10000", 1, 1))
      socket.sleep(0.2)
      assert.equal(0, log_lines(shipped(req.merchant_uid, imp_uid)))
      -- a tamper after the payment (PortOne shows another amount) the same way
      local id2, req2 = order(10000)
      assert(sb:admin("POST", "webhook", { mode = "late", delay_ms = 300 }))
      local uid2 = pay(id2)
      assert(sb:admin("POST", "tamper", { imp_uid = uid2, amount = 9999 }))
      assert.equal(200, deliveries(uid2, 1)[1].status)
      assert.is_nil(store(req2.merchant_uid).paid)
      assert.equal(1, log_lines("verify: amount is 9999, expected 10000", 1, 1))
    end)

    it("a failed lookup answers 500 (PortOne sends again) and the next try verifies", function()
      local id, req = order(10000)
      assert(sb:faults("payment", { { status = 503 } }))
      local imp_uid = pay(id)
      local hooks = deliveries(imp_uid, 1)
      assert.equal(500, hooks[1].status)
      assert.is_nil(store(req.merchant_uid).paid)
      -- PortOne's next try, by hand
      local body = cjson.encode { imp_uid = imp_uid, merchant_uid = req.merchant_uid, status = "paid" }
      local code, text = request("POST", hook_url, body)
      assert.equal(200, code)
      assert.equal("OK\n", text)
      assert.equal(imp_uid, store(req.merchant_uid).paid)
      assert.equal(1, log_lines(shipped(req.merchant_uid, imp_uid), 1, 3))
    end)

    it("no timer for the fulfilment: 500 and no mark, so the resend fulfils", function()
      local id, req = order(10000)
      assert(sb:admin("POST", "webhook", { mode = "drop" }))
      local imp_uid = pay(id)
      local body = cjson.encode { imp_uid = imp_uid, merchant_uid = req.merchant_uid, status = "paid" }
      -- every pending timer of the worker taken, for 2 s
      local fill = post("/t/timers/fill", { delay = 2 })
      assert.is_true(fill.n > 0)
      assert.equal("too many pending timers", fill.err)
      local code, text = request("POST", hook_url, body)
      assert.equal(500, code)
      assert.equal("busy, send again\n", text)
      assert.is_nil(store(req.merchant_uid).paid)
      -- once they fired, PortOne's next try goes through
      local deadline = socket.gettime() + 10
      while post("/t/timers/pending", {}).pending > 0 and socket.gettime() < deadline do
        socket.sleep(0.05)
      end
      code, text = request("POST", hook_url, body)
      assert.equal(200, code)
      assert.equal("OK\n", text)
      assert.equal(imp_uid, store(req.merchant_uid).paid)
      assert.equal(1, log_lines(shipped(req.merchant_uid, imp_uid), 1, 3))
    end)

    it("answers what is not a notice with 400, a GET with 405, an unknown order with 200", function()
      local code, text = request("POST", hook_url, "not a notice", "text/plain")
      assert.equal(400, code)
      assert.equal("bad notice\n", text)
      code, text = request("POST", hook_url, '{"imp_uid": "x y"}')
      assert.equal(400, code)
      assert.equal("bad notice\n", text)
      code, text = request("GET", hook_url)
      assert.equal(405, code)
      assert.equal("POST only\n", text)
      code, text = request("POST", hook_url,
        '{"imp_uid": "imp_000000000001", "merchant_uid": "nobody", "status": "paid"}')
      assert.equal(200, code)
      assert.equal("unknown order\n", text)
      code, text = request("POST", hook_url,
        '{"imp_uid": "imp_000000000001", "merchant_uid": "nobody", "status": "cancelled"}')
      assert.equal(200, code)
      assert.equal("ignored cancelled\n", text)
      -- a forged notice for a real order: the lookup finds no such payment
      local _, req = order(10000)
      code = request("POST", hook_url, cjson.encode {
        imp_uid = "imp_000000000002", merchant_uid = req.merchant_uid, status = "paid" })
      assert.equal(500, code)
      assert.is_nil(store(req.merchant_uid).paid)
      -- nginx itself stayed healthy: no alerts from the answers above
      assert.is_nil((srv:log() or ""):find("%[alert%]"))
    end)
  end)
end)
