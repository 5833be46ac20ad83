-- link.rest: token caching on a fake clock, one refresh at a time, the 401
-- retry, verify's outcomes, and secrets kept out of errors and tostring.
local rest = require "portone.link.rest"
local link = require "portone.link"

local SECRET = "s3cr3t-imp-secret-value"
local KEY = "1234567890123456"

-- A transport that answers from a route table and records every request.
-- `routes["POST /users/getToken"] = function(req) return status, body end`.
local function fake_transport(routes)
  local t = { log = {} }
  function t.request(_, method, url, headers, body)
    local path = url:match("^https?://[^/]+(/[^?]*)")
    local req = { method = method, url = url, path = path, headers = headers, body = body }
    t.log[#t.log + 1] = req
    local h = routes[method .. " " .. path] or routes[method .. " *"]
    if not h then return 404, '{"code":-1,"message":"no route","response":null}', {} end
    local status, rbody = h(req)
    if status == nil then return nil, rbody end
    return status, rbody, { ["content-type"] = "application/json" }
  end
  function t.close() end
  t.sleep = function() end
  function t.count(prefix)
    local n = 0
    for _, r in ipairs(t.log) do if (r.method .. " " .. r.path):find(prefix, 1, true) then n = n + 1 end end
    return n
  end
  return t
end

local function header(req, name)
  for _, h in ipairs(req.headers) do
    local k, v = h:match("^([^:]+):%s*(.*)$")
    if k and k:lower() == name:lower() then return v end
  end
end

-- A PortOne-like server: tokens with a 30-minute life on the *server* clock,
-- which can be skewed from the client's.
local function fake_portone(state)
  state = state or {}
  state.server_now = state.server_now or 1700000000
  state.tokens = state.tokens or 0
  state.payments = state.payments or {
    imp_1 = { imp_uid = "imp_1", merchant_uid = "order-1", amount = 10000, status = "paid" },
    imp_2 = { imp_uid = "imp_2", merchant_uid = "order-2", amount = 5000, status = "ready" },
  }
  local routes = {}
  routes["POST /users/getToken"] = function(req)
    if state.token_hook then
      local s, b = state.token_hook(req)
      if s then return s, b end
    end
    if not req.body:find('"imp_secret":"' .. SECRET .. '"', 1, true) then
      return 401, '{"code":-1,"message":"imp_key, imp_secret 정보가 올바르지 않습니다.","response":null}'
    end
    state.fetches = (state.fetches or 0) + 1
    -- `state.reuse`: as PortOne documents it, the token held comes back
    -- until its last minute, which then adds 5 minutes to it
    if state.reuse and state.current and state.server_now < state.expiry then
      if state.expiry - state.server_now <= 60 then state.expiry = state.expiry + 300 end
    else
      state.tokens = state.tokens + 1
      state.current = "tok" .. state.tokens .. string.rep("x", 30)
      state.expiry = state.server_now + 1800
    end
    return 200, ('{"code":0,"message":null,"response":{"access_token":"%s","now":%d,"expired_at":%d}}')
      :format(state.current, state.server_now, state.expiry)
  end
  routes["GET *"] = function(req)
    local id = req.path:match("^/payments/(.+)$")
    local auth = header(req, "Authorization")
    if auth ~= "Bearer " .. tostring(state.current) or state.reject_next or state.reject_always then
      state.reject_next = nil
      return 401, '{"code":-1,"message":"Unauthorized","response":null}'
    end
    local p = id and state.payments[id]
    if not p then return 404, '{"code":-1,"message":"존재하지 않는 결제정보입니다.","response":null}' end
    if p.json then return 200, p.json end   -- an answer written out by the spec
    return 200, ('{"code":0,"message":null,"response":{"imp_uid":"%s","merchant_uid":"%s","amount":%d,'
      .. '"status":"%s","pay_method":"card","currency":"%s"}}'):format(p.imp_uid, p.merchant_uid, p.amount,
        p.status, p.currency or "KRW")
  end
  return routes, state
end

local function client(opts)
  local routes, state = fake_portone(opts and opts.state)
  local t = fake_transport(routes)
  local clock = { now = 5000 }
  local r = rest.new{ imp_key = KEY, imp_secret = SECRET, transport = t,
    clock = function() return clock.now end, semaphore = opts and opts.semaphore,
    test_mode = opts and opts.test_mode }
  return r, t, state, clock
end

-- Every string reachable from v (keys, values, metatables skipped).
local strings_in = require("helpers.cases").strings

describe("link.rest", function()
  it("is reachable as link.rest", function()
    assert.equal(rest, link.rest)
  end)

  it("checks its options", function()
    assert.has_error(function() rest.new() end)
    assert.has_error(function() rest.new{ imp_key = KEY } end)
    assert.has_error(function() rest.new{ imp_key = "", imp_secret = "x", transport = {} } end)
    assert.has_error(function() rest.new{ imp_key = KEY, imp_secret = "a\r\nb", transport = {} } end)
    for _, ua in ipairs({ "ua\r\nX-Evil: 1", "ua\n", "", 42 }) do
      assert.has_error(function()
        rest.new{ imp_key = KEY, imp_secret = SECRET, user_agent = ua, transport = {} }
      end)
    end
    assert.has_error(function()
      rest.new{ imp_key = KEY, imp_secret = SECRET, base_url = "http://api.iamport.kr", transport = {} }
    end)
    assert.has_error(function()
      rest.new{ imp_key = KEY, imp_secret = SECRET, base_url = "https://api.iamport.kr/v1", transport = {} }
    end)
    assert.truthy(rest.new{ imp_key = KEY, imp_secret = SECRET, base_url = "http://127.0.0.1:8080/",
      transport = {} })
    local default = rest.new{ imp_key = KEY, imp_secret = SECRET, transport = {} }
    assert.equal("https://api.iamport.kr", default.base_url)
    -- a misspelt option is not dropped (a test-mode flag, or the sandbox's
    -- base_url falling back to the live API), and the nearest one is named
    assert.has_error(function() rest.new{ imp_key = KEY, imp_secret = SECRET, transport = {},
      tset_mode = true } end,
      "bad argument #1 to 'new' (option 'tset_mode' is unknown: did you mean 'test_mode'?)")
    assert.has_error(function() rest.new{ imp_key = KEY, imp_secret = SECRET, transport = {},
      base_ur = "http://127.0.0.1:8080" } end,
      "bad argument #1 to 'new' (option 'base_ur' is unknown: did you mean 'base_url'?)")
    assert.has_error(function() rest.new{ imp_key = KEY, imp_secret = SECRET, transport = {}, [1] = "x" } end)
    for _, m in ipairs({ -1, 0 / 0, math.huge, "60" }) do
      assert.has_error(function()
        rest.new{ imp_key = KEY, imp_secret = SECRET, transport = {}, margin = m }
      end)
    end
    assert.truthy(rest.new{ imp_key = KEY, imp_secret = SECRET, transport = {}, margin = 0 })
  end)

  describe("token", function()
    it("sends the key and secret as JSON to /users/getToken", function()
      local r, t = client()
      assert.truthy(r:token())
      local req = t.log[1]
      assert.equal("POST", req.method)
      assert.equal("https://api.iamport.kr/users/getToken", req.url)
      assert.equal("application/json", header(req, "Content-Type"))
      local body = require("cjson").decode(req.body)
      assert.same({ imp_key = KEY, imp_secret = SECRET }, body)
    end)

    it("caches the token until near its expiry on the local clock", function()
      local r, t, state, clock = client()
      local tok = r:token()
      assert.equal(1, state.tokens)
      clock.now = clock.now + 1700            -- 100 s left: still good
      assert.equal(tok, r:token())
      assert.equal(1, t.count("POST /users/getToken"))
      clock.now = clock.now + 41               -- 59 s left: inside the 60 s margin
      state.server_now = state.server_now + 1741
      assert.not_equal(tok, r:token())
      assert.equal(2, state.tokens)
    end)

    it("a margin above PortOne's last minute does not fetch the token again on every call", function()
      -- PortOne hands the token held back unchanged until its last minute:
      -- asking earlier only gets the same answer again
      local routes, state = fake_portone{ reuse = true }
      local t = fake_transport(routes)
      local clock = { now = 5000 }
      local r = rest.new{ imp_key = KEY, imp_secret = SECRET, transport = t, margin = 300,
        clock = function() return clock.now end }
      local function at(left)   -- both clocks `left` seconds before the server's expiry
        local dt = (state.expiry or state.server_now + 1800) - left - state.server_now
        clock.now, state.server_now = clock.now + dt, state.server_now + dt
      end
      local tok = assert(r:token())
      at(200)                                  -- inside the margin: one fetch, the same token
      assert.equal(tok, r:token())
      assert.equal(2, state.fetches)
      for left = 199, 61, -2 do                -- no fetch per call until PortOne renews
        at(left)
        assert.equal(tok, r:token())
      end
      assert.equal(2, state.fetches)
      at(60)                                   -- the last minute: renewed by 5 minutes
      assert.equal(tok, r:token())
      assert.equal(3, state.fetches)
      at(300 + 30)
      assert.equal(tok, r:token())
      assert.equal(3, state.fetches)
      assert.equal(1, state.tokens)
    end)

    it("is safe against a skewed server clock, ahead or behind", function()
      for _, skew in ipairs({ -86400, -300, 0, 300, 86400 }) do
        local r, _, state, clock = client()
        state.server_now = clock.now + skew
        r:token()
        clock.now = clock.now + 1500; state.server_now = state.server_now + 1500
        r:token()
        assert.equal(1, state.tokens, "skew " .. skew)
        clock.now = clock.now + 250; state.server_now = state.server_now + 250
        r:token()
        assert.equal(2, state.tokens, "skew " .. skew)
      end
    end)

    it("refuses a wrong secret with an auth error that does not show it", function()
      local t = fake_transport((fake_portone()))
      local r = rest.new{ imp_key = KEY, imp_secret = "wrong-secret-1234", transport = t }
      local tok, err = r:token()
      assert.is_nil(tok)
      assert.equal("auth", err.kind)
      assert.equal(401, err.status)
      assert.not_matches("wrong%-secret", tostring(err))
    end)

    it("reports a code != 0 on HTTP 200 as an api error", function()
      local r, _, state = client()
      state.token_hook = function() return 200, '{"code":-1,"message":"blocked","response":null}' end
      local tok, err = r:token()
      assert.is_nil(tok)
      assert.equal("api", err.kind)
      assert.equal(-1, err.code)
    end)

    it("reports a token answer without the fields as a decode error", function()
      local r, _, state = client()
      state.token_hook = function() return 200, '{"code":0,"response":{"access_token":"x"}}' end
      local _, err = r:token()
      assert.equal("decode", err.kind)
      state.token_hook = function() return 200, "<html>" end
      _, err = r:token()
      assert.equal("decode", err.kind)
    end)

    -- Cooperative threads yield through pcall: LuaJIT (OpenResty) and 5.2+
    -- can, plain Lua 5.1 cannot, and has no such threads to protect.
    local it_yields = (_VERSION ~= "Lua 5.1" or jit ~= nil) and it or pending -- luacheck: ignore 113

    it_yields("runs one refresh at a time for cooperative threads", function()
      -- getToken blocks (yields) until released; the transport's sleep yields too.
      local r, t, state = client()
      local release = false
      state.token_hook = function()
        while not release do coroutine.yield("in getToken") end
      end
      t.sleep = function() coroutine.yield("waiting") end
      local results = {}
      local threads = {}
      for i = 1, 3 do
        threads[i] = coroutine.create(function() results[i] = { r:payment("imp_1") } end)
      end
      for _ = 1, 3 do for i = 1, 3 do assert(coroutine.resume(threads[i])) end end
      assert.equal(1, t.count("POST /users/getToken"))
      release = true
      for _ = 1, 5 do
        for i = 1, 3 do
          if coroutine.status(threads[i]) ~= "dead" then assert(coroutine.resume(threads[i])) end
        end
      end
      for i = 1, 3 do
        assert.equal("dead", coroutine.status(threads[i]))
        assert.equal(10000, results[i][1].amount)
      end
      assert.equal(1, state.tokens)
      assert.equal(1, t.count("POST /users/getToken"))
    end)

    it_yields("waits on a semaphore when it has one (OpenResty) and shares a failure", function()
      local posted = 0
      local sema = {}
      function sema.wait() coroutine.yield("sema"); return true end
      function sema.post(_, n) posted = posted + n end
      local r, t, state = client{ semaphore = sema }
      local release = false
      state.token_hook = function()
        while not release do coroutine.yield() end
        return 503, "busy"
      end
      local errs = {}
      local co = {}
      for i = 1, 3 do co[i] = coroutine.create(function() errs[i] = select(2, r:token()) end) end
      for i = 1, 3 do assert(coroutine.resume(co[i])) end
      release = true
      for _ = 1, 3 do
        for i = 1, 3 do if coroutine.status(co[i]) ~= "dead" then assert(coroutine.resume(co[i])) end end
      end
      assert.equal(2, posted)
      assert.equal(1, t.count("POST /users/getToken"))
      for i = 1, 3 do assert.equal("http", errs[i].kind); assert.equal(503, errs[i].status) end
    end)
  end)

  describe("payment", function()
    it("looks a payment up with the bearer token", function()
      local r, t, state = client()
      local p = assert(r:payment("imp_1"))
      assert.equal("order-1", p.merchant_uid)
      assert.equal(10000, p.amount)
      local req = t.log[2]
      assert.equal("https://api.iamport.kr/payments/imp_1", req.url)
      assert.equal("Bearer " .. state.current, header(req, "Authorization"))
    end)

    it("sends include_sandbox=true only for a client made for test mode", function()
      local r, t = client{ test_mode = true }
      assert(r:payment("imp_1"))
      assert.equal("https://api.iamport.kr/payments/imp_1?include_sandbox=true", t.log[2].url)
      local live, lt = client()
      assert(live:payment("imp_1"))
      assert.is_nil(lt.log[2].url:find("include_sandbox", 1, true))
    end)

    it("answers 404 for an unknown payment", function()
      local r = client()
      local p, err = r:payment("imp_nope")
      assert.is_nil(p)
      assert.equal("http", err.kind)
      assert.equal(404, err.status)
    end)

    it("retries once on a 401 with a fresh token", function()
      local r, t, state = client()
      r:token()
      state.reject_next = true
      local p = assert(r:payment("imp_1"))
      assert.equal("imp_1", p.imp_uid)
      assert.equal(2, state.tokens)
      assert.equal(2, t.count("GET /payments/"))
    end)

    it("gives up after the second 401", function()
      local r, t, state = client()
      state.reject_always = true
      local p, err = r:payment("imp_1")
      assert.is_nil(p)
      assert.equal("auth", err.kind)
      assert.equal(2, t.count("GET /payments/"))
    end)

    it("refuses imp_uids that cannot go into a path, before any request", function()
      local r, t = client()
      for _, bad in ipairs({ "../users", "imp 1", "imp_1?x", "", ("a"):rep(65) }) do
        local p, err = r:payment(bad)
        assert.is_nil(p)
        assert.equal("validation", err.kind)
      end
      assert.equal(0, #t.log)
    end)

    it("turns transport failures into transport/timeout errors", function()
      local r, t = client()
      t.request = function()
        return nil, { kind = "timeout", message = "Operation timed out", curl_code = 28 }
      end
      local p, err = r:payment("imp_1")
      assert.is_nil(p)
      assert.equal("timeout", err.kind)
      assert.equal(28, err.curl_code)
      assert.is_true(err.retryable)
      -- what a retry cannot fix says so (the retry policy's rules)
      t.request = function()
        return nil, { kind = "transport", message = "response too large", too_large = true }
      end
      p, err = r:payment("imp_1")
      assert.is_nil(p)
      assert.equal("transport", err.kind)
      assert.is_false(err.retryable)
      t.request = function()
        return nil, { kind = "transport", message = "no cosockets here", sent = false, permanent = true }
      end
      p, err = r:payment("imp_1")
      assert.is_nil(p)
      assert.is_false(err.retryable)
    end)
  end)

  describe("verify", function()
    local notice = { imp_uid = "imp_1", merchant_uid = "order-1", status = "paid" }

    it("returns the payment when amount, order and status agree", function()
      local r = client()
      local p, err = r:verify(notice, { amount = 10000, merchant_uid = "order-1" })
      assert.is_nil(err)
      assert.equal("paid", p.status)
      assert.truthy(r:verify(notice, { amount = 10000 }))   -- the notice's merchant_uid
    end)

    it("refuses to verify without a merchant_uid, before any lookup", function()
      local r, t = client()
      local p, err = r:verify({ imp_uid = "imp_1" }, { amount = 10000 })
      assert.is_nil(p)
      assert.equal("validation", err.kind)
      assert.equal("merchant_uid", err.errors[1].field)
      assert.equal("required", err.errors[1].code)
      assert.equal(0, #t.log)
      -- given in the expectation, it is checked against the payment
      assert.truthy(r:verify({ imp_uid = "imp_1" }, { amount = 10000, merchant_uid = "order-1" }))
      local _
      _, err = r:verify({ imp_uid = "imp_1" }, { amount = 10000, merchant_uid = "order-2" })
      assert.equal("mismatch", err.kind)
      assert.equal("merchant_uid", err.field)
    end)

    it("compares the currency: KRW unless the order says otherwise", function()
      local r, _, state = client()
      assert.truthy(r:verify(notice, { amount = 10000, currency = "KRW" }))
      state.payments.imp_1.currency = "JPY"
      for _, expect in ipairs({ { amount = 10000, currency = "KRW" }, { amount = 10000 } }) do
        local p, err = r:verify(notice, expect)
        assert.is_nil(p)
        assert.equal("mismatch", err.kind)
        assert.equal("currency", err.field)
        assert.equal("KRW", err.expected)
        assert.equal("JPY", err.actual)
      end
      assert.truthy(r:verify(notice, { amount = 10000, currency = "JPY" }))
    end)

    it("a partly refunded payment does not verify as paid", function()
      local r, _, state = client()
      local base = '{"code":0,"message":null,"response":{"imp_uid":"imp_1","merchant_uid":"order-1",'
        .. '"amount":10000,"status":"paid","currency":"KRW"'
      for _, none in ipairs({ "0", "null", '"0"' }) do
        state.payments.imp_1.json = base .. ',"cancel_amount":' .. none .. '}}'
        assert.truthy(r:verify(notice, { amount = 10000 }), none)
      end
      for _, bad in ipairs({ "9000", '"9000"', '"0x10"', '"x"', "true" }) do
        state.payments.imp_1.json = base .. ',"cancel_amount":' .. bad .. "}}"
        local p, err = r:verify(notice, { amount = 10000 })
        assert.is_nil(p, bad)
        assert.equal("unpaid", err.kind)          -- not paid in full; no tampering
        assert.equal("paid", err.payment_status)
        assert.truthy(err.cancel_amount ~= nil)
        assert.matches("refunded in part", err.message)
      end
      -- a payment expected in another status is not about refunds
      state.payments.imp_1.json = base:gsub('"paid"', '"cancelled"') .. ',"cancel_amount":10000}}'
      assert.truthy(r:verify(notice, { amount = 10000, status = "cancelled" }))
    end)

    it("reads the amount and the code as JSON numbers or digit strings, nothing looser", function()
      local r, _, state = client()
      local function answer(code, amount)
        state.payments.imp_1.json = '{"code":' .. code .. ',"message":null,"response":{"imp_uid":"imp_1",'
          .. '"merchant_uid":"order-1","amount":' .. amount .. ',"status":"paid","currency":"KRW"}}'
      end
      answer("0", '"10000"')
      assert.truthy(r:verify(notice, { amount = 10000 }))
      for _, amount in ipairs({ '"0x2710"', '" 1e4 "', '"1e4"', '"10000 "', "null" }) do
        answer("0", amount)
        local _, err = r:verify(notice, { amount = 10000 })
        assert.equal("mismatch", err.kind, amount)
        assert.equal("amount", err.field)
      end
      answer('"0x0"', "10000")
      local _, err = r:verify(notice, { amount = 10000 })
      assert.equal("api", err.kind)
      assert.equal("lookup", err.stage)
    end)

    it("reports an amount mismatch", function()
      local r, _, state = client()
      state.payments.imp_1.amount = 100
      local p, err = r:verify(notice, { amount = 10000, merchant_uid = "order-1" })
      assert.is_nil(p)
      assert.equal("mismatch", err.kind)
      assert.equal("amount", err.field)
      assert.equal("10000", err.expected)
      assert.equal("100", err.actual)
      assert.equal("imp_1", err.payment.imp_uid)
      assert.matches("amount is 100, expected 10000", tostring(err))
    end)

    it("reports an order mismatch, from the expectation or from the notice", function()
      local r = client()
      local _, err = r:verify(notice, { amount = 10000, merchant_uid = "order-9" })
      assert.equal("mismatch", err.kind)
      assert.equal("merchant_uid", err.field)
      _, err = r:verify({ imp_uid = "imp_1", merchant_uid = "forged" }, { amount = 10000 })
      assert.equal("mismatch", err.kind)
    end)

    it("reports a payment that is not paid", function()
      local r = client()
      local n2 = { imp_uid = "imp_2", merchant_uid = "order-2", status = "paid" }
      local _, err = r:verify(n2, { amount = 5000 })
      assert.equal("unpaid", err.kind)
      assert.equal("ready", err.payment_status)
      assert.truthy(r:verify(n2, { amount = 5000, status = "ready" }))
    end)

    it("reports a lookup failure with the lookup's kind and stage", function()
      local r = client()
      local _, err = r:verify({ imp_uid = "imp_404", merchant_uid = "x" }, { amount = 1 })
      assert.equal("http", err.kind)
      assert.equal(404, err.status)
      assert.equal("lookup", err.stage)
      local r2, t = client()
      t.request = function()
        return nil, { kind = "transport", message = "Couldn't connect", curl_code = 7 }
      end
      _, err = r2:verify(notice, { amount = 10000 })
      assert.equal("transport", err.kind)
      assert.equal("lookup", err.stage)
    end)

    it("find refuses '.' and '..', which a URL would drop from its path", function()
      local r, t = client()
      for _, uid in ipairs({ ".", ".." }) do
        local p, err = r:find(uid, "paid")
        assert.is_nil(p)
        assert.equal("validation", err.kind)
        assert.equal("merchant_uid", err.errors[1].field)
      end
      assert.equal(0, #t.log)
      for uid, want in pairs({ ["..."] = "/payments/find/.../paid", ["a.b"] = "/payments/find/a.b/paid" }) do
        r:find(uid, "paid")
        assert.equal(want, t.log[#t.log].path)
      end
    end)

    it("raises on wrong arguments", function()
      local r = client()
      assert.has_error(function() r:verify("imp_1", { amount = 1 }) end)
      assert.has_error(function() r:verify(notice) end)
      assert.has_error(function() r:verify(notice, { amount = "10000" }) end)
    end)
  end)

  describe("secrets", function()
    it("are not fields of the client and not in tostring", function()
      local r, _, state = client()
      r:token()
      local s = tostring(r)
      assert.matches("portone.link.rest", s)
      assert.not_matches(SECRET, s, 1, true)
      assert.not_matches(KEY, s, 1, true)
      -- (the fake transport keeps a log of what was sent: not the client's own state)
      local own = {}
      for k, v in pairs(r) do if k ~= "transport" then own[k] = v end end
      for _, str in ipairs(strings_in(own)) do
        assert.is_nil(str:find(SECRET, 1, true))
        assert.is_nil(str:find(state.current, 1, true))
      end
    end)

    it("are scrubbed from errors even when the server echoes them", function()
      local r, _, state = client()
      state.token_hook = function(req)
        return 500, '{"code":-1,"message":"bad request ' .. req.body:gsub('"', "'") .. '","response":null}'
      end
      local _, err = r:token()
      assert.equal(500, err.status)
      for _, str in ipairs(strings_in(err)) do assert.is_nil(str:find(SECRET, 1, true)) end
      assert.is_nil(tostring(err):find(SECRET, 1, true))
      -- and the token, when a lookup echoes it
      state.token_hook = nil
      local tok = r:token()
      local r2t = state.current
      assert.equal(tok, r2t)
      local routes = fake_portone(state)
      routes["GET *"] = function(req) return 500, "upstream said: " .. header(req, "Authorization") end
      r.transport = fake_transport(routes)
      local _, perr = r:payment("imp_1")
      assert.is_nil(tostring(perr):find(tok, 1, true))
      for _, str in ipairs(strings_in(perr)) do assert.is_nil(str:find(tok, 1, true)) end
      -- an echo that the 512-byte cut of err.body would split
      routes["GET *"] = function(req) return 500, ("x"):rep(500) .. header(req, "Authorization") end
      _, perr = r:payment("imp_1")
      assert.is_nil(perr.body:find(tok:sub(1, 4), 1, true), perr.body)
      assert.equal(("x"):rep(500) .. "Bearer ***", perr.body)
    end)

    it("are scrubbed from transport messages", function()
      local r, t = client()
      t.request = function() return nil, { kind = "transport", message = "failed near " .. SECRET } end
      local _, err = r:token()
      assert.is_nil(tostring(err):find(SECRET, 1, true))
    end)
  end)
end)
