-- The [delivery] issue's cases that need no nginx: Retry-After parsing, a
-- token function that closes the client, the on_attempt hook, phase errors,
-- webhook limits and duplicates, and link.rest's error texts. The cases on
-- sends per call, secrets, long Retry-After headers and deactivate URLs run
-- on every transport in spec/helpers/cases.lua; the multi-handle ones in
-- spec/async_spec.lua; create_many's in spec/bulk_spec.lua.
local cases = require "helpers.cases"
local helper = require "helpers.sandbox"
local link = require "portone.link"
local protocol = require "portone.link.protocol"
local socket = require "socket"

-- A transport double: answers from a list of {status, body, headers} or
-- {nil, info}; records what it was asked.
local function fake_transport(answers)
  local t = { calls = {} }
  function t.request(_, method, url, headers, body, max_sends)
    t.calls[#t.calls + 1] = { method = method, url = url, headers = headers, body = body,
      max_sends = max_sends }
    local a = table.remove(answers, 1) or { 200, '{"shortenedUrl":"https://impay.link/abc"}', {} }
    return a[1], a[2], a[3], a[4]
  end
  t.sleep = function() end
  return t
end

-- A fake nginx in a timer phase: its clock is `now()`, its sockets `sock()`.
local function fake_ngx(now, sock)
  rawset(_G, "ngx", { get_phase = function() return "timer" end, now = now,
    log = function() end, sleep = function() end, INFO = 7, WARN = 5,
    socket = { tcp = sock } })
end

describe("Retry-After", function()
  it("refuses dates that do not exist, wrong weekday names and over-long values", function()
    for _, v in ipairs({ "Wed, 99 Oct 2030 07:28:00 GMT", "Mon, 31 Feb 2030 07:28:00 GMT",
        "Wed, 29 Feb 2023 07:28:00 GMT", "Wed, 21 Oct 2015 25:00:00 GMT",
        "Wed, 21 Oct 2015 07:60:00 GMT", "Xyz, 21 Oct 2015 07:28:00 GMT",
        "Wed, 00 Oct 2015 07:28:00 GMT", ("1"):rep(65), "1" .. (" "):rep(64) }) do
      assert.is_nil(protocol.parse_retry_after(v, 0), v)
    end
    assert.equal(30, protocol.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412450))
    assert.equal(1, protocol.parse_retry_after("Thu, 29 Feb 2024 00:00:00 GMT", 1709164799))
    assert.equal(5, protocol.parse_retry_after("\t 5 \t", 0))
  end)

  it("reads a 200 KB value in linear time", function()
    local v = "1" .. (" "):rep(200000) .. "1"
    local t0 = os.clock()
    assert.is_nil(protocol.parse_retry_after(v, 0))
    assert.is_true(os.clock() - t0 < 0.1)
  end)
end)

describe("a token function that closes the client", function()
  it("create and deactivate return nil, err (client is closed), never raise", function()
    local c
    c = link.new({ transport = fake_transport({}), token = function() c:close(); return "t0ken-x" end })
    local ok, res, err = pcall(c.create, c, cases.request())
    assert.is_true(ok, tostring(res))
    assert.is_nil(res)
    assert.equal("transport", err.kind)
    assert.matches("closed", err.message)
    assert.equal(0, err.attempts)
    c = link.new({ transport = fake_transport({}), token = function() c:close(); return "t0ken-x" end })
    ok, res, err = pcall(c.deactivate, c, "abc")
    assert.is_true(ok, tostring(res))
    assert.is_nil(res)
    assert.matches("closed", err.message)
  end)
end)

describe("sends per call (transport double)", function()
  it("asks for two sends, then one once the call used its re-send", function()
    local t = fake_transport({
      { nil, { kind = "transport", message = "reset", sent = true, sends = 2 } },
    })
    local c = link.new({ transport = t, retries = 2 })
    local _, err = c:deactivate("abc")                -- idempotent: retried
    assert.is_nil(err)
    assert.equal(2, t.calls[1].max_sends)
    assert.equal(1, t.calls[2].max_sends)
  end)

  it("attempts counts sends: the transport's count, 0 when nothing left", function()
    local t = fake_transport({
      { nil, { kind = "transport", message = "refused", sent = false, sends = 0 } },
      { nil, { kind = "transport", message = "refused", sent = false, sends = 0 } },
      { 503, "{}", {}, 2 },
    })
    local c = link.new({ transport = t, retries = 2 })
    local res, err = c:create(cases.request())
    assert.is_nil(res)
    assert.equal(503, err.status)
    assert.equal(2, err.attempts)       -- 0 + 0 + 2
    -- the first of the two sends got no answer: the link may exist
    assert.equal(1, err.unanswered)
    assert.is_false(err.retryable)
    assert.equal(3, #t.calls)           -- and no retry after it
  end)
end)

describe("errors.may_exist", function()
  it("is true exactly when a failed create may have left a link", function()
    local may = link.errors.may_exist
    local yes = {
      { kind = "timeout", sent = true }, { kind = "transport", sent = true },
      { kind = "transport" },                            -- sent unknown
      { kind = "decode", status = 200 }, { kind = "http", status = 500 },
      { kind = "http", status = 502 }, { kind = "http", status = 503, unanswered = 1 },
      { kind = "http", status = 429, unanswered = 2 },
    }
    local no = {
      { kind = "timeout", sent = false }, { kind = "transport", sent = false },
      { kind = "http", status = 503 }, { kind = "http", status = 429 }, { kind = "http", status = 400 },
      { kind = "api", status = 200, code = -1 }, { kind = "validation" },
      -- a token function's own failure: nothing of the create was sent
      { kind = "timeout", sent = true, unanswered = 1, attempts = 0 },
    }
    for _, e in ipairs(yes) do assert.is_true(may(e), require("cjson").encode(e)) end
    for _, e in ipairs(no) do assert.is_false(may(e), require("cjson").encode(e)) end
  end)
end)

describe("phase errors (ngx transport outside cosocket phases)", function()
  local saved
  before_each(function()
    saved = rawget(_G, "ngx")
    rawset(_G, "ngx", { get_phase = function() return "init" end, log = function() end })
  end)
  after_each(function() rawset(_G, "ngx", saved) end)

  it("say attempts = 0: nothing was sent", function()
    local c = link.new({ transport = "ngx", retries = 2 })
    local res, err = c:create(cases.request())
    assert.is_nil(res)
    assert.is_false(err.sent)
    assert.equal(0, err.attempts)
    assert.is_nil(tostring(err):find("attempts", 1, true))
  end)
end)

describe("ngx transport: the deadline passing between a dead reused connection and the re-send", function()
  -- A fake nginx: the first connection is a reused one that dies after the
  -- request went out, and the clock jumps past the deadline meanwhile; every
  -- later connection is fresh and answers 200.
  local saved, sent
  before_each(function()
    saved = rawget(_G, "ngx")
    sent = 0
    local now, n = 1000, 0
    local function sock()
      n = n + 1
      local me, reused = n, n == 1
      return {
        settimeouts = function() end,
        connect = function() return true end,
        getreusedtimes = function() return reused and 1 or 0 end,
        send = function(_, req) sent = sent + 1; return #table.concat(req) end,
        receiveany = function()
          if me == 1 then now = now + 60; return nil, "closed" end
          return 'HTTP/1.1 200 OK\r\nContent-Length: 46\r\n\r\n{"shortenedUrl":"https://impay.link/abcdefgh"}'
        end,
        close = function() end,
        setkeepalive = function() return true end,
      }
    end
    fake_ngx(function() return now end, sock)
  end)
  after_each(function() rawset(_G, "ngx", saved) end)

  it("a create sent once says sent = true, attempts = 1, and is not sent again", function()
    local c = link.new({ transport = "ngx", base_url = "http://127.0.0.1:9", retries = 2, timeout = 5 })
    local res, err = c:create(cases.request())
    assert.is_nil(res)
    assert.equal(1, sent)                       -- one send, then no retry
    assert.is_true(err.sent, tostring(err))
    assert.is_false(err.retryable)
    assert.equal(1, err.attempts)
  end)
end)

describe("ngx transport: connect_timeout bounds the TCP connect and the TLS handshake together", function()
  -- A fake nginx whose TCP connect takes 0.8 s; the handshake then gets what
  -- the socket's connect timeout says (lua-nginx-module times a handshake
  -- with it), and never completes.
  local saved, budget
  before_each(function()
    saved = rawget(_G, "ngx")
    local now = 1000
    local function sock()
      local cto
      return {
        settimeouts = function(_, c) cto = c end,
        connect = function() now = now + 0.8; return true end,
        getreusedtimes = function() return 0 end,
        sslhandshake = function() budget = cto; now = now + cto / 1000; return nil, "timeout" end,
        close = function() end,
      }
    end
    fake_ngx(function() return now end, sock)
  end)
  after_each(function() rawset(_G, "ngx", saved) end)

  it("the handshake gets what the connect left of connect_timeout, as libcurl's does", function()
    local t = require("portone.link.transport.ngx").new({ timeout = 10, connect_timeout = 1 })
    local status, info = t:request("POST", "https://localhost:9/x", {}, "{}")
    assert.is_nil(status)
    assert.equal("timeout", info.kind)
    assert.is_false(info.sent)
    assert.is_true(budget <= 201, "the handshake had " .. budget .. " ms")
  end)
end)

describe("secrets echoed in mixed encodings, nested, or cut", function()
  local TOKEN = "tokXq/en+Zr9w"
  local function assert_clean(err)
    local all = cases.strings(err)
    all[#all + 1] = tostring(err)
    for _, v in ipairs(all) do
      for _, part in ipairs({ "tokXq", "Zr9w" }) do
        assert.is_nil(v:find(part, 1, true), v)
      end
    end
  end
  local ECHOES = {
    '{"code":["tokXq/en+Zr9w"],"message":"no"}',                 -- code as a JSON array
    '{"code":{"tokXq/en+Zr9w":1},"message":"no"}',               -- ... as an object key
    '{"code":-1,"message":"bad tokXq/en%2BZr9w"}',               -- percent-encoding that keeps /
    '{"code":-1,"message":"bad tokXq/en\\u002BZr9w"}',         -- only + as \u002B
    '{"code":-1,"message":"bad tokXq\\/en\\u002bZr9w"}',     -- \/ and \u002b mixed
    '{"code":-1,"message":"bad tokXq%2fen%2BZr9w"}',             -- hex case mixed
    '{"code":-1,"message":"x","pad":"' .. ("p"):rep(470) .. 'tokXq/en%2BZr9w"}',  -- cut inside
  }

  for i, body in ipairs(ECHOES) do
    it("reach no field of a create's error (" .. i .. ")", function()
      for _, status in ipairs({ 200, 400 }) do
        local c = link.new({ transport = fake_transport({ { status, body, {} } }), token = TOKEN,
          retries = 0 })
        local res, err = c:create(cases.request())
        assert.is_nil(res)
        assert_clean(err)
      end
    end)
  end

  it("reach no err.code when all digits, sent as a JSON number or a number-looking string", function()
    local DIGITS = "73914265"
    for _, body in ipairs({ '{"code":73914265,"message":"no"}', '{"code":"73914265","message":"no"}' }) do
      for _, status in ipairs({ 200, 500 }) do
        local c = link.new({ transport = fake_transport({ { status, body, {} } }), token = DIGITS,
          retries = 0 })
        local _, err = c:create(cases.request())
        assert.is_nil(tostring(err):find(DIGITS, 1, true), tostring(err))
        assert.is_nil(tostring(err.code):find(DIGITS, 1, true))
        local t = { request = function() return status, body, {} end }
        local r = link.rest.new({ imp_key = "key-1", imp_secret = DIGITS, transport = t })
        _, err = r:token()
        assert.is_nil(tostring(err):find(DIGITS, 1, true), tostring(err))
        assert.is_nil(tostring(err.code):find(DIGITS, 1, true))
      end
    end
  end)

  it("reach no field of a link.rest error", function()
    for _, body in ipairs(ECHOES) do
      local t = { request = function() return 200, body, {} end }
      local r = link.rest.new({ imp_key = "key-1", imp_secret = TOKEN, transport = t })
      local _, err = r:token()
      assert.truthy(err)
      assert_clean(err)
    end
  end)
end)

describe("on_attempt", function()
  it("is called once per attempt with the documented fields, and no secret", function()
    local seen = {}
    local t = fake_transport({ { 503, '{"code":-1}', {} } })
    local c = link.new({ transport = t, token = "tok-SECRET-1", on_attempt = function(ev)
      seen[#seen + 1] = ev
    end })
    local res = assert(c:create(cases.request()))
    assert.equal(2, res.attempts)
    assert.equal(2, #seen)
    assert.same({ "create", "POST", 1, 503, "http", true, 1 },
      { seen[1].op, seen[1].method, seen[1].attempt, seen[1].status, seen[1].err_kind, seen[1].sent,
        seen[1].sends })
    assert.equal(2, seen[2].attempt)
    assert.equal(200, seen[2].status)
    assert.is_nil(seen[2].err_kind)
    assert.equal("https://api.iamport.co" .. protocol.PATH, seen[2].url)
    assert.equal("number", type(seen[1].duration))
    for _, ev in ipairs(seen) do
      for k, v in pairs(ev) do
        assert.is_nil(tostring(v):find("SECRET", 1, true), k)
      end
    end
  end)

  it("a hook that raises or closes the client never breaks the call", function()
    local c
    c = link.new({ transport = fake_transport({}), on_attempt = function() c:close(); error("boom") end })
    local res, err = c:create(cases.request())
    assert.truthy(res, tostring(err))
    c = link.new({ transport = fake_transport({}), on_attempt = function() error({}) end })
    assert.truthy(c:create(cases.request()))
    assert.has_error(function() link.new({ on_attempt = 1 }) end)
  end)

  describe("over curl and the multi handle", function()
    local sb
    lazy_setup(function() sb = helper.start() end)
    lazy_teardown(function() if sb then sb:stop() end end)
    before_each(function() sb:reset() end)

    it("sees every attempt, sync and async, with statuses and sends", function()
      local seen = {}
      local c = link.new(cases.merge(cases.FAST, { base_url = sb.url,
        on_attempt = function(ev) seen[#seen + 1] = ev end }))
      assert(sb:faults("create", { { status = 503 } }))
      assert(c:create(cases.request()))
      assert.same({ 503, 200 }, { seen[1].status, seen[2].status })
      assert(sb:faults("create", { { status = 429 } }))
      local got
      c:create_async(cases.request(), function(r, e) got = r or e end)
      local deadline = socket.gettime() + 10
      while c:poll(50) > 0 do assert(socket.gettime() < deadline) end
      assert.equal(200, got.status)
      assert.same({ 429, 200 }, { seen[3].status, seen[4].status })
      assert.same({ 1, 2 }, { seen[3].attempt, seen[4].attempt })
      for i = 1, 4 do assert.equal(1, seen[i].sends) end
      c:close()
    end)

    -- drives the client's async calls to the end (the deadline only stops a
    -- loop that never ends)
    local function drain(c)
      local deadline = socket.gettime() + 10
      while c:poll(50) > 0 do assert(socket.gettime() < deadline) end
    end

    it("timeout bounds a whole attempt while the answer trickles in a byte at a time (sync, async)",
        function()
      -- ~60 bytes 100 ms apart: 6 s of trickle, a byte well inside every
      -- 0.5 s. A timeout that restarted with every byte would never fire:
      -- the whole answer would arrive and the create succeed. Only the
      -- attempt's own deadline makes it a timeout.
      local c = link.new({ base_url = sb.url, insecure_http = true, timeout = 0.5, retries = 0 })
      assert(sb:faults("create", { { trickle_ms = 100 }, { trickle_ms = 100 } }))
      local res, err = c:create(cases.request())
      assert.is_nil(res)
      assert.equal("timeout", err.kind, tostring(err))
      local got
      c:create_async(cases.request(), function(r, e) got = r or e end)
      drain(c)
      assert.equal("timeout", got.kind, tostring(got))
      c:close()
    end)

    it("a failure before sending is one event with sent = false, sends = 0", function()
      local silent = assert(socket.bind("127.0.0.1", 0))
      local _, port = silent:getsockname()
      silent:close()                                  -- nothing listens there now
      local seen = {}
      local c = link.new({ base_url = "http://127.0.0.1:" .. port, insecure_http = true,
        retries = 0, on_attempt = function(ev) seen[#seen + 1] = ev end })
      assert.is_nil(c:create(cases.request()))
      local got
      c:create_async(cases.request(), function(r, e) got = r or e end)
      drain(c)
      assert.equal("transport", got.kind)
      assert.equal(2, #seen)
      for _, ev in ipairs(seen) do
        assert.same({ "create", 1, "transport", false, 0 },
          { ev.op, ev.attempt, ev.err_kind, ev.sent, ev.sends })
        assert.is_nil(ev.status)
      end
      c:close()
    end)

    it("a silent re-send is inside its attempt: one event with sends = 2", function()
      local seen = {}
      local c = link.new(cases.merge(cases.FAST, { base_url = sb.url, max_concurrent = 1,
        on_attempt = function(ev) seen[#seen + 1] = ev end }))
      assert(c:create(cases.request()))               -- a kept-alive connection
      assert(sb:faults("create", { { reset_after = true } }))
      assert.equal(2, assert(c:create(cases.request())).attempts)
      assert(c:warm(1))                               -- the async pool's connection
      assert(sb:faults("create", { { reset_after = true } }))
      local got
      c:create_async(cases.request(), function(r, e) got = r or e end)
      drain(c)
      assert.equal(2, got.attempts, tostring(got))
      assert.equal(3, #seen)
      for i = 2, 3 do
        assert.same({ 1, 200, 2, true }, { seen[i].attempt, seen[i].status, seen[i].sends, seen[i].sent })
      end
      c:close()
    end)

    it("a deactivate says op = \"deactivate\", its method and its attempts", function()
      local seen = {}
      local c = link.new(cases.merge(cases.FAST, { base_url = sb.url,
        on_attempt = function(ev) seen[#seen + 1] = ev end }))
      local made = assert(c:create(cases.request()))
      assert(sb:faults("deactivate", { { status = 500 } }))
      assert(c:deactivate(made.id))                   -- idempotent: retried after the 500
      local done
      c:deactivate_async(made.url, function(ok, e) done = ok or e end)
      drain(c)
      assert.is_true(done)
      assert.equal(4, #seen)
      assert.same({ "deactivate", "PUT", 1, 500, "http" },
        { seen[2].op, seen[2].method, seen[2].attempt, seen[2].status, seen[2].err_kind })
      assert.same({ "deactivate", 2, 200 }, { seen[3].op, seen[3].attempt, seen[3].status })
      assert.same({ "deactivate", 1, 200 }, { seen[4].op, seen[4].attempt, seen[4].status })
      c:close()
    end)
  end)
end)

describe("webhook", function()
  local webhook = link.webhook
  it("a JSON body with a repeated imp_uid is refused, as a form body is", function()
    local n, err = webhook.parse('{"imp_uid":"imp_1","merchant_uid":"o1","status":"paid","imp_uid":"imp_2"}',
      "application/json")
    assert.is_nil(n)
    assert.equal("decode", err.kind)
    assert.matches("twice", err.message)
    n, err = webhook.parse(
      '{"imp_uid":"imp_1","merchant_uid":"o1","status":"paid","imp\\u005fuid":"imp_2"}', "application/json")
    assert.is_nil(n)
    assert.matches("twice", err.message)
    local _, ferr = webhook.parse("imp_uid=imp_1&merchant_uid=o1&status=paid&imp_uid=imp_2",
      "application/x-www-form-urlencoded")
    assert.equal(ferr.kind, err.kind)
    -- nested objects may repeat names; only the top level counts
    assert.truthy(webhook.parse('{"imp_uid":"imp_1","merchant_uid":"o1","status":"paid",'
      .. '"x":{"imp_uid":"a"},"y":[{"imp_uid":"b"}]}', "application/json"))
  end)

  it("max_bytes NaN, zero or not a number is a programmer error (the cap never turns off)", function()
    for _, m in ipairs({ 0 / 0, 0, -1, "10" }) do
      assert.has_error(function() webhook.parse("{}", "application/json", { max_bytes = m }) end)
    end
    local _, err = webhook.parse(("x"):rep(100), nil, { max_bytes = 10 })
    assert.is_true(err.too_large)
  end)
end)

describe("link.rest error texts", function()
  local SECRET = "sec/ret-KEY-42"
  local function rest_with(answers)
    local t = { request = function()
      local a = table.remove(answers, 1)
      return a[1], a[2], a[3]
    end }
    return link.rest.new({ imp_key = "key-1", imp_secret = SECRET, transport = t })
  end
  local TOKEN = '{"code":0,"response":{"access_token":"acc/tok-99","expired_at":2000000000,"now":1999998200}}'

  it("an amount mismatch of 10000.4 reads 10000.4", function()
    local r = rest_with({ { 200, TOKEN }, { 200, '{"code":0,"response":{"imp_uid":"imp_1",'
      .. '"merchant_uid":"o1","amount":10000.4,"status":"paid"}}' } })
    local p, err = r:verify({ imp_uid = "imp_1", merchant_uid = "o1" }, { amount = 10000 })
    assert.is_nil(p)
    assert.equal("mismatch", err.kind)
    assert.equal("verify: amount is 10000.4, expected 10000", err.message)
  end)

  it("the secret and the token, echoed as JSON \\/ or in code, reach no field", function()
    local echo = '{"code":"sec/ret-KEY-42","message":"bad sec\\/ret-KEY-42 acc\\/tok-99"}'
    local r = rest_with({ { 200, echo } })
    local _, err = r:payment("imp_1")
    assert.is_table(err)
    local text = tostring(err)
    for _, form in ipairs({ "sec/ret", "sec\\/ret" }) do
      assert.is_nil(text:find(form, 1, true), text)
      for _, v in ipairs(cases.strings(err)) do assert.is_nil(v:find(form, 1, true), v) end
    end
    r = rest_with({ { 200, TOKEN }, { 500, '{"code":-1,"message":"acc\\/tok-99 refused"}' } })
    _, err = r:payment("imp_1")
    assert.is_nil(tostring(err):find("acc\\/tok", 1, true), tostring(err))
    assert.is_nil(err.body:find("acc\\/tok", 1, true), err.body)
  end)
end)
