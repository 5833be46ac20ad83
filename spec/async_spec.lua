-- Async transfers: the C multi transport (core.multi_new) and the client's
-- create_async / deactivate_async / poll, against the sandbox with latency
-- and faults. Runs under Lua 5.4 and LuaJIT.
local cases = require "helpers.cases"
local helper = require "helpers.sandbox"
local core = require "portone.link.core"
local link = require "portone.link"
local socket = require "socket"
local cjson_null = require("cjson").null

local API = helper.API
local JSON = { "Content-Type: application/json;charset=UTF-8" }

local function now() return socket.gettime() end

-- Runs m:perform until nothing is running; returns completions by id.
local function drain(m, limit)
  local done, running = {}, 1
  local deadline = now() + (limit or 10)
  while running > 0 do
    assert(now() < deadline, "transfers did not finish")
    local list
    list, running = m:perform(200)
    for _, c in ipairs(list) do
      assert.is_nil(done[c.id], "completion reported twice")
      done[c.id] = c
    end
  end
  return done
end

local function request(over)
  return cases.request(cases.merge({ title = "Async test", merchant_uid = "order-1" }, over))
end

-- calls f until it returns true; the 10 s only stop a loop that never ends
local function wait_until(f)
  local t0 = now()
  while not f() do
    assert(now() - t0 < 10, "waited 10 s")
    socket.sleep(0.005)
  end
end

-- merchant_uid -> number of links the sandbox holds for it
local function links_of(sb)
  local n = {}
  for _, l in pairs(sb:admin("GET", "links")) do n[l.merchant_uid] = (n[l.merchant_uid] or 0) + 1 end
  return n
end

-- A multi handle double that completes every transfer in one perform (each
-- a created link l<id>), so that all their callbacks run from one poll.
local function one_poll_multi()
  local queued, last = {}, 0
  return {
    add = function() last = last + 1; queued[#queued + 1] = last; return last end,
    perform = function()
      local out = {}
      for i, id in ipairs(queued) do
        out[i] = { id = id, status = 200, headers = {},
                   body = '{"shortenedUrl":"https://impay.link/l' .. id .. '"}' }
      end
      queued = {}
      return out, 0
    end,
    timeout = function() return -1 end, cancel = function() return false end,
    close = function() end,
  }
end

describe("core.multi_new", function()
  local sb
  setup(function() sb = helper.start() end)
  teardown(function() if sb then sb:stop() end end)
  before_each(function() sb:reset() end)

  it("runs transfers concurrently and reuses connections", function()
    sb:latency(100)
    local m = core.multi_new({ max_concurrent = 8 })
    local ids = {}
    for i = 1, 24 do
      ids[i] = m:add("POST", sb.url .. API, JSON, helper.create_body({ merchant_uid = "m" .. i }))
    end
    local t0 = now()
    local done = drain(m)
    local took = now() - t0
    for i = 1, 24 do
      local c = done[ids[i]]
      assert.equal(200, c.status)
      assert.truthy(c.body:find("shortenedUrl", 1, true))
      assert.equal("table", type(c.headers))
    end
    -- 24 transfers of 100 ms, 8 at a time: 3 rounds (~0.3 s), not 24 x 100
    -- (2.4 s); the bound leaves room for a loaded machine.
    assert.is_true(took < 1.8, "took " .. took)
    assert.equal(8, m:connections())
    assert.equal(8, sb:stats().connections)
    -- a second batch goes over the same connections
    for i = 1, 8 do m:add("POST", sb.url .. API, JSON, helper.create_body({ merchant_uid = "n" .. i })) end
    drain(m)
    assert.equal(8, m:connections())
    m:close()
  end)

  it("never has more than max_concurrent in flight", function()
    sb:latency(20)
    local m = core.multi_new({ max_concurrent = 3 })
    for i = 1, 10 do m:add("POST", sb.url .. API, JSON, helper.create_body({ merchant_uid = "c" .. i })) end
    local running = 1
    while running > 0 do
      local _
      _, running = m:perform(50)
      local info = m:info()
      assert.is_true(info.in_flight <= 3)
      assert.equal(running, info.in_flight + info.queued)
    end
    assert.is_true(sb:stats().connections <= 3)
    m:close()
  end)

  it("perform(0) never waits", function()
    sb:latency(1000)
    local m = core.multi_new()
    m:add("POST", sb.url .. API, JSON, helper.create_body())
    local t0 = now()
    for _ = 1, 5 do
      local list, running = m:perform(0)
      assert.equal(0, #list)
      assert.equal(1, running)
    end
    -- well under the 1 s answer (slack for a loaded machine)
    assert.is_true(now() - t0 < 0.5)
    -- perform(timeout) waits about timeout, not for the answer
    t0 = now()
    local list = m:perform(50)
    assert.equal(0, #list)
    assert.is_true(now() - t0 < 0.6)
    m:close()
  end)

  it("reports transport errors with the easy handle's info shape", function()
    local m = core.multi_new({ connect_timeout = 1 })
    local id = m:add("GET", "http://127.0.0.1:1/", {})
    local c = drain(m)[id]
    assert.is_nil(c.status)
    assert.equal("transport", c.err.kind)
    assert.equal(7, c.err.curl_code)
    assert.is_false(c.err.sent)
    m:close()
  end)

  it("caps the response body", function()
    sb:faults("create", { { oversize = 5000 } })
    local m = core.multi_new({ max_response_bytes = 1000 })
    local id = m:add("POST", sb.url .. API, JSON, helper.create_body())
    local c = drain(m)[id]
    assert.equal("transport", c.err.kind)
    assert.is_true(c.err.too_large)
    m:close()
  end)

  it("times out a slow answer with kind timeout", function()
    sb:faults("create", { { delay_ms = 1500 } })
    local m = core.multi_new({ timeout = 0.3 })
    local id = m:add("POST", sb.url .. API, JSON, helper.create_body())
    local c = drain(m)[id]
    assert.equal("timeout", c.err.kind)
    assert.is_true(c.err.sent)
    m:close()
  end)

  it("a perform after the timeout: an answer that arrived is read; an unsent request stays unsent", function()
    sb:latency(100)
    local m = core.multi_new({ timeout = 1 })
    -- the connection opens in the first perform(0) and the request waits
    local a = m:add("POST", sb.url .. API, JSON, helper.create_body({ merchant_uid = "unsent" }))
    m:perform(0)
    assert.equal(1, m:info().opening)
    socket.sleep(1.3)
    local list = m:perform(0)
    assert.equal(1, #list)
    assert.equal(a, list[1].id)
    assert.equal("timeout", list[1].err.kind)
    assert.is_false(list[1].err.sent)     -- timed out before it was sent: never sent
    -- over an open connection, the answer arrives after 0.1 s, read 1.3 s later
    local b = m:add("POST", sb.url .. API, JSON, helper.create_body({ merchant_uid = "late" }))
    m:perform(50)
    socket.sleep(1.3)
    local c = drain(m)[b]
    assert.equal(200, c.status)
    assert.equal(1, links_of(sb).late)
    m:close()
  end)

  it("returns status, body and lower-case headers of error answers", function()
    sb:faults("create", { { status = 503, retry_after = 2 } })
    local m = core.multi_new()
    local id = m:add("POST", sb.url .. API, JSON, helper.create_body())
    local c = drain(m)[id]
    assert.equal(503, c.status)
    assert.equal("2", c.headers["retry-after"])
    m:close()
  end)

  it("sends PUT without a body and does not follow redirects", function()
    sb:faults("deactivate", { { redirect = sb.url .. "/elsewhere" } })
    local m = core.multi_new()
    local a = m:add("PUT", sb.url .. API .. "/abc", {})
    local b = m:add("PUT", sb.url .. API .. "/abc", {})
    local done = drain(m)
    local statuses = { done[a].status, done[b].status }
    table.sort(statuses)
    assert.equal(302, statuses[1])     -- the redirect comes back as it is
    local reqs = sb:requests()
    assert.equal(2, #reqs)             -- and nothing went to /elsewhere
    for _, r in ipairs(reqs) do
      assert.equal("PUT", r.method)
      assert.is_true(r.body == nil or r.body == "" or r.body == cjson_null)
      assert.is_nil(r.headers["content-type"])   -- no form type from libcurl
    end
    m:close()
  end)

  it("cancels queued and running transfers without reporting them", function()
    sb:latency(200)
    local m = core.multi_new({ max_concurrent = 1 })
    local a = m:add("POST", sb.url .. API, JSON, helper.create_body({ merchant_uid = "a" }))
    local b = m:add("POST", sb.url .. API, JSON, helper.create_body({ merchant_uid = "b" }))
    local c = m:add("POST", sb.url .. API, JSON, helper.create_body({ merchant_uid = "c" }))
    m:perform(0)                       -- a is in flight, b and c queued
    local ok, started = m:cancel(a)
    assert.is_true(ok)
    assert.is_true(started)            -- it may have been sent
    ok, started = m:cancel(c)
    assert.is_true(ok)
    assert.is_false(started)           -- never left the queue
    assert.is_false(m:cancel(c))
    assert.is_false(m:cancel(12345))
    local done = drain(m)
    assert.is_nil(done[a]); assert.is_nil(done[c])
    assert.equal(200, done[b].status)
    m:close()
  end)

  it("exposes the wait timeout and sockets for external loops", function()
    sb:latency(100)
    local m = core.multi_new()
    assert.equal(-1, m:timeout())      -- nothing to do
    m:add("POST", sb.url .. API, JSON, helper.create_body())
    assert.equal(0, m:timeout())       -- a queued transfer can start now
    m:perform(0)
    local t = m:timeout()
    assert.is_true(t >= -1)
    local r, w = m:fds()
    assert.equal("table", type(r)); assert.equal("table", type(w))
    assert.is_true(#r + #w >= 1)
    drain(m)
    m:close()
  end)

  it("close cancels everything; a closed handle refuses add", function()
    sb:latency(200)
    local m = core.multi_new()
    for _ = 1, 3 do m:add("POST", sb.url .. API, JSON, helper.create_body()) end
    m:perform(0)
    m:close()
    m:close()
    local list, running = m:perform(10)
    assert.same({}, list)
    assert.equal(0, running)
    assert.is_true(m:info().closed)
    assert.has_error(function() m:add("GET", sb.url, {}) end)
    assert.truthy(tostring(m):find("closed", 1, true))
  end)

  it("is freed by the garbage collector with transfers in flight", function()
    sb:latency(200)
    local alive = setmetatable({}, { __mode = "k" })
    for _ = 1, 5 do
      local m = core.multi_new()
      for _ = 1, 4 do m:add("POST", sb.url .. API, JSON, helper.create_body()) end
      m:perform(0)
      alive[m] = true
    end
    collectgarbage(); collectgarbage()
    assert.is_nil(next(alive))          -- every handle was collected (its __gc ran)
  end)

  it("checks its arguments before it allocates", function()
    local m = core.multi_new()
    assert.has_error(function() m:add("BREW", "http://127.0.0.1/", {}) end)
    assert.has_error(function() m:add("GET", nil, {}) end)
    assert.has_error(function() m:add("GET", "http://127.0.0.1/", { "X: a\r\nY: b" }) end)
    assert.has_error(function() m:add("GET", "http://127.0.0.1/", { 42 }) end)
    assert.has_error(function() m:add("GET", "http://127.0.0.1/ x", {}) end)
    assert.has_error(function() m:perform(-1) end)
    assert.has_error(function() core.multi_new({ max_concurrent = 0 }) end)
    assert.has_error(function() core.multi_new({ timeout = "soon" }) end)
    assert.has_error(function() core.multi_new({ budget_ms = -1 }) end)
    assert.has_error(function() core.multi_new({ budget_ms = 0 / 0 }) end)
    assert.has_error(function() core.multi_new({ budget_ms = "1" }) end)
    assert.has_error(function() core.multi_new({ budget_ms = 1001 }) end)
    assert.equal(0, m:info().queued)
    m:close()
  end)
end)

describe("client async calls", function()
  local sb
  setup(function() sb = helper.start() end)
  teardown(function() if sb then sb:stop() end end)
  before_each(function() sb:reset() end)

  local function client(opts)
    local o = { base_url = sb.url, retry_base = 0.01, retry_cap = 0.05 }
    for k, v in pairs(opts or {}) do o[k] = v end
    return link.new(o)
  end

  -- polls until nothing is pending; returns the callback errors seen
  local function run(c, step)
    local errs = {}
    local deadline = now() + 10
    while true do
      assert(now() < deadline, "calls did not finish")
      local running, e = c:poll(step or 50)
      for _, m in ipairs(e or {}) do errs[#errs + 1] = m end
      if running == 0 then break end
    end
    return errs
  end

  it("queues at once and calls back once with the sync result shape", function()
    local c = client()
    local calls = {}
    local h = c:create_async(request(), function(res, err)
      calls[#calls + 1] = { res = res, err = err }
    end)
    assert.is_number(h)
    assert.equal(1, c:pending())
    run(c)
    assert.equal(1, #calls)
    local res = calls[1].res
    assert.is_nil(calls[1].err)
    assert.equal(200, res.status)
    assert.truthy(res.url:find(res.id, 1, true))
    local links = sb:admin("GET", "links")
    assert.equal("order-1", links[res.id].merchant_uid)
    assert.equal(0, c:poll(0))
    c:close()
  end)

  it("returns a validation error at once and queues nothing", function()
    local c = client()
    local called = false
    local h, err = c:create_async(request({ amount = -1 }), function() called = true end)
    assert.is_nil(h)
    assert.equal("validation", err.kind)
    assert.equal("amount", err.errors[1].field)
    h, err = c:deactivate_async("../etc", function() called = true end)
    assert.is_nil(h)
    assert.equal("validation", err.kind)
    assert.equal(0, c:pending())
    assert.equal(0, c:poll(10))
    assert.is_false(called)
    assert.equal(0, sb:stats().requests)
    c:close()
  end)

  it("raises on wrong argument types", function()
    local c = client()
    assert.has_error(function() c:create_async("x", function() end) end)
    assert.has_error(function() c:create_async(request()) end)
    assert.has_error(function() c:create_async(request(), function() end, { noww = 1 }) end,
      "bad argument #3 to 'create_async' (option 'noww' is unknown: did you mean 'now'?)")
    -- NaN named core.encode's argument ("bad argument #2 to 'encode'")
    assert.has_error(function() c:create_async(request(), function() end, { now = 0 / 0 }) end,
      "bad argument #3 to 'create_async' (table {now = number} expected)")
    assert.equal(0, c:pending())
    assert.has_error(function() c:deactivate_async(42, function() end) end)
    assert.has_error(function() c:poll(-1) end)
    assert.has_error(function() c:poll(0 / 0) end)
    -- NaN is refused as create refuses it, before the token function runs
    local calls = 0
    local t = client({ token = function() calls = calls + 1; return "tok" end })
    assert.has_error(function() t:create_async(request(), function() end, { now = 0 / 0 }) end,
      "bad argument #3 to 'create_async' (table {now = number} expected)")
    assert.equal(0, calls)
    t:close()
    assert.has_error(function() c:on_error(42) end)
    c:close()
  end)

  it("runs many calls concurrently without blocking the loop", function()
    sb:latency(300)
    local c = client({ max_concurrent = 10 })
    local done = 0
    for i = 1, 20 do
      assert(c:create_async(request({ merchant_uid = "p" .. i }), function(res)
        assert(res)
        done = done + 1
      end))
    end
    local t0, longest = now(), 0
    while c:poll(0) > 0 do
      local t = now()
      c:poll(0)
      longest = math.max(longest, now() - t)
      socket.sleep(0.002)               -- the host's own work
    end
    local took = now() - t0
    assert.equal(20, done)
    -- bounds well under the 300 ms answers, with slack for a loaded machine
    assert.is_true(longest < 0.2, "poll(0) blocked for " .. longest)
    assert.is_true(took < 3.0, "took " .. took)  -- 2 rounds of 300 ms (0.6 s), not 20 (6 s)
    assert.is_true(sb:stats().connections <= 10)
    c:close()
  end)

  it("reuses keep-alive connections across polls", function()
    local c = client({ max_concurrent = 2 })
    for round = 1, 3 do
      for i = 1, 4 do
        c:create_async(request({ merchant_uid = "r" .. round .. i }), function(res) assert(res) end)
      end
      run(c)
    end
    -- at most one connection per transfer in flight; fewer when a transfer
    -- finds the other's connection idle again (one is opened at a time)
    local n = sb:stats().connections
    assert.is_true(n >= 1 and n <= 2, "connections: " .. n)
    c:close()
  end)

  it("reports callback errors and keeps the other transfers going", function()
    local c = client()
    local ok = 0
    for i = 1, 5 do
      c:create_async(request({ merchant_uid = "e" .. i }), function()
        if i == 2 then error("callback two failed") end
        ok = ok + 1
      end)
    end
    local errs = run(c)
    assert.equal(4, ok)
    assert.equal(1, #errs)
    assert.truthy(errs[1]:find("callback two failed", 1, true))
    -- with a handler, the handler gets it instead
    local seen
    c:on_error(function(msg, info) seen = { msg = msg, info = info } end)
    c:create_async(request(), function() error("again") end)
    errs = run(c)
    assert.same({}, errs)
    assert.truthy(seen.msg:find("again", 1, true))
    assert.equal("create", seen.info.op)
    -- the client still works
    local res
    c:create_async(request(), function(r) res = r end)
    run(c)
    assert.equal(200, res.status)
    c:close()
  end)

  it("a callback error whose __tostring raises: poll neither raises nor stays 'inside a callback'", function()
    local c = client()
    local bad = setmetatable({}, { __tostring = function() error("no text for you") end })
    local ran = 0
    c:create_async(request({ merchant_uid = "ts1" }), function() ran = ran + 1; error(bad) end)
    local errs = run(c)
    assert.equal(1, ran)
    assert.equal(1, #errs)
    assert.equal("string", type(errs[1]))
    -- the handler's own error, the same
    c:on_error(function() error(bad) end)
    c:create_async(request({ merchant_uid = "ts2" }), function() ran = ran + 1; error("x") end)
    errs = run(c)
    assert.equal(2, ran)
    assert.equal(1, #errs)
    -- later polls still work
    c:on_error(nil)
    local res
    c:create_async(request({ merchant_uid = "ts3" }), function(r) res = r end)
    run(c)
    assert.equal(200, res.status)
    c:close()
  end)

  it("retries 503 without blocking, honouring Retry-After", function()
    sb:faults("create", { { status = 503, retry_after = 1 } })
    local c = client()
    local got
    c:create_async(request(), function(res, err) got = { res = res, err = err } end)
    local t0 = now()
    -- poll until the first attempt's 503 is in and its retry waits on the
    -- timer (white box: the engine's retry heap), however slow the machine
    local deadline = now() + 5
    while not c._async.engine.timers[1] do
      assert(now() < deadline, "the retry was never scheduled")
      assert.equal(1, c:poll(50))
    end
    assert.is_nil(got)
    local t = c:timeout()
    assert.is_true(t > 500 and t <= 1000, "timeout " .. t)
    local p0 = now()
    assert.equal(1, c:poll(0))
    assert.is_true(now() - p0 < 0.3)    -- does not sleep until the 1 s timer
    run(c)
    assert.is_true(now() - t0 >= 0.95)
    assert.equal(200, got.res.status)
    assert.equal(2, sb:stats().requests)
    c:close()
  end)

  it("does not retry a create that reached the server (500)", function()
    sb:faults("create", { { status = 500 } })
    local c = client()
    local got
    c:create_async(request(), function(res, err) got = { res = res, err = err } end)
    run(c)
    assert.is_nil(got.res)
    assert.equal("http", got.err.kind)
    assert.equal(500, got.err.status)
    assert.equal(1, got.err.attempts)
    c:close()
  end)

  it("retries an idempotent deactivate on 5xx", function()
    local c = client()
    local created = assert(c:create(request()))
    sb:faults("deactivate", { { status = 502 }, { status = 500 } })
    local got
    c:deactivate_async(created.url, function(ok, err) got = { ok = ok, err = err } end)
    run(c)
    assert.is_true(got.ok)
    assert.equal(4, sb:stats().requests)     -- 1 create + 3 deactivates
    c:close()
  end)

  it("gives up after the retries with attempts counted", function()
    sb:faults("create", { { status = 429 }, { status = 429 }, { status = 429 } })
    local c = client({ retries = 2 })
    local got
    c:create_async(request(), function(res, err) got = { res = res, err = err } end)
    run(c)
    assert.equal(429, got.err.status)
    assert.equal(3, got.err.attempts)
    c:close()
  end)

  it("reports transport errors like the sync call", function()
    local c = link.new({ base_url = "http://127.0.0.1:1", retries = 0 })
    local got
    c:create_async(request(), function(res, err) got = { res = res, err = err } end)
    run(c)
    local _, serr = c:create(request())
    assert.equal(serr.kind, got.err.kind)
    assert.equal(serr.curl_code, got.err.curl_code)
    assert.equal("transport", got.err.kind)
    c:close()
  end)

  -- n kept-alive connections in the multi pool (client:warm opens them one
  -- by one, never reusing each other's): libcurl would re-send a request
  -- once per dead pooled connection. Warm sends HEADs, not creates.
  local function warm(c, n)
    assert(c:warm(n))
    assert.equal(n, sb:stats().connections)
    assert.equal(0, sb:stats().creates)
  end

  it("sends: a create over a pool of dead connections is sent at most twice, both counted", function()
    local c = client()
    warm(c, 6)
    local faults = {}
    for i = 1, 5 do faults[i] = { reset_after = true } end
    assert(sb:faults("create", faults))
    local got
    c:create_async(request(), function(res, err) got = { res = res, err = err } end)
    run(c)
    assert.is_nil(got.res)
    assert.equal("transport", got.err.kind)
    assert.is_true(got.err.sent)
    assert.equal(2, got.err.attempts, tostring(got.err))
    assert.equal(2, sb:stats().creates)
    c:close()
  end)

  it("sends: a success after one silent re-send says attempts = 2", function()
    local c = client()
    warm(c, 3)
    assert(sb:faults("create", { { reset_after = true } }))
    local got
    c:create_async(request(), function(res, err) got = { res = res, err = err } end)
    run(c)
    assert.truthy(got.res, tostring(got.err))
    assert.equal(2, got.res.attempts)
    assert.equal(2, sb:stats().creates)
    c:close()
  end)

  it("sends: a 503 after a send that got no answer ends a create: the link may exist", function()
    local c = client({ retries = 2 })
    warm(c, 3)
    assert(sb:faults("create", { { reset_after = true }, { status = 503 } }))
    local got
    c:create_async(request(), function(res, err) got = { res = res, err = err } end)
    run(c)
    assert.is_nil(got.res)
    assert.equal(503, got.err.status, tostring(got.err))
    assert.equal(1, got.err.unanswered)
    assert.is_false(got.err.retryable)
    assert.equal(2, got.err.attempts)
    assert.equal(2, sb:stats().requests - 3)   -- the three warm HEADs before
    assert.equal(1, sb:stats().creates)        -- the reset one made its link
    c:close()
  end)

  it("sends: the one re-send is per call, not per retry (a deactivate: 503 between two resets)",
      function()
    local c = client({ retries = 1 })
    warm(c, 3)
    assert(sb:faults("deactivate", { { reset_after = true }, { status = 503 },
      { reset_after = true }, { reset_after = true } }))
    local got
    c:deactivate_async("abcdefgh", function(ok, err) got = { ok = ok, err = err } end)
    run(c)
    assert.is_nil(got.ok)
    assert.equal("transport", got.err.kind, tostring(got.err))
    -- reset, 503, then reset with no second re-send; with one it would be 4
    assert.equal(3, got.err.attempts, tostring(got.err))
    assert.equal(2, got.err.unanswered)
    assert.equal(3, sb:stats().requests - 3)
    c:close()
  end)

  it("core: m:add(..., max_sends) bounds libcurl's re-sends and reports sends", function()
    local m = core.multi_new({ max_concurrent = 4 })
    sb:latency(150)
    for i = 1, 4 do
      m:add("POST", sb.url .. API, JSON, helper.create_body({ merchant_uid = "w" .. i }))
    end
    for _, c in pairs(drain(m)) do assert.equal(1, c.sends) end
    sb:latency(0)
    assert(sb:faults("create", { { reset_after = true }, { reset_after = true }, { reset_after = true } }))
    local id = m:add("POST", sb.url .. API, JSON, helper.create_body({ merchant_uid = "x" }), 1)
    local c = drain(m)[id]
    assert.equal(1, c.err.sends)
    assert.is_true(c.err.sent)
    assert.equal(4 + 1, sb:stats().creates)
    assert.has_error(function() m:add("GET", sb.url, nil, nil, 0) end)
    assert.has_error(function() m:add("GET", sb.url, nil, nil, 7) end)
    m:close()
  end)

  it("a token function that closes the client: nil, err (client is closed), no raise", function()
    local c
    c = client({ token = function() c:close(); return "t0ken-x" end })
    local ok, res, err = pcall(c.create_async, c, request(), function() end)
    assert.is_true(ok, tostring(res))
    assert.is_nil(res)
    assert.matches("closed", err.message)
  end)

  it("an on_attempt hook that closes the client mid-poll (a retry due at once): poll never raises", function()
    local c
    c = client({ on_attempt = function() c:close() end })
    assert(sb:faults("create", { { status = 503, retry_after = "0" } }))
    local called = false
    assert(c:create_async(request(), function() called = true end))
    local deadline = now() + 5
    local ok, err
    repeat
      ok, err = pcall(c.poll, c, 50)
      assert.is_true(ok, tostring(err))
    until err == 0 or now() > deadline
    assert.equal(0, err)
    assert.is_false(called)                -- no callback after close
  end)

  it("lets a callback chain another call", function()
    local c = client()
    local deactivated
    c:create_async(request(), function(res)
      assert(c:deactivate_async(res.id, function(ok) deactivated = ok end))
    end)
    run(c)
    assert.is_true(deactivated)
    c:close()
  end)

  -- A callback that yields would suspend poll itself in the coroutine that
  -- called it: never resumed, poll stayed "inside a callback" for good and
  -- the callbacks after it in that poll never ran.
  it("a callback that yields: reported as its error; poll returns, the others run, polls go on", function()
    local c = client()
    local ran, res = {}, nil
    for i = 1, 3 do
      c:create_async(request({ merchant_uid = "y" .. i }), function(r)
        ran[#ran + 1] = i
        if i == 1 then coroutine.yield("from a callback") end
        res = r
      end)
    end
    local errs = {}
    local co = coroutine.create(function()
      local deadline = os.time() + 20
      repeat
        local n, e = c:poll(10)
        for _, m in ipairs(e or {}) do errs[#errs + 1] = m end
      until n == 0 or os.time() > deadline
      return "done"
    end)
    local ok, v = coroutine.resume(co)
    assert.is_true(ok, v)
    assert.equal("done", v)            -- poll was never suspended
    table.sort(ran)
    assert.same({ 1, 2, 3 }, ran)
    assert.equal(1, #errs)
    assert.truthy(errs[1]:find("yield", 1, true), errs[1])
    assert.equal(200, res.status)
    -- later polls work, on_error gets the next one
    local seen
    c:on_error(function(msg, info) seen = { msg = msg, op = info.op } end)
    c:create_async(request({ merchant_uid = "y4" }), function() coroutine.yield() end)
    assert.same({}, run(c))
    assert.truthy(seen and seen.msg:find("yield", 1, true))
    assert.equal("create", seen.op)
    c:close()
  end)

  it("refuses poll from inside a callback", function()
    local c = client()
    c:create_async(request(), function() c:poll(0) end)
    local errs = run(c)
    assert.equal(1, #errs)
    assert.truthy(errs[1]:find("inside a callback", 1, true))
    c:close()
  end)

  it("refuses warm from inside a callback before it sends a probe", function()
    local c = client()
    c:create_async(request(), function() c:warm(2) end)
    local errs = run(c)
    assert.equal(1, #errs)
    assert.truthy(errs[1]:find("inside a callback", 1, true))
    -- no probe was started: nothing left pending, only the create was sent
    assert.equal(0, c:pending())
    assert.equal(1, sb:stats().requests)
    c:close()
  end)

  it("cancel does not take warm's probes: a handle that names one is unknown, warm ends", function()
    local c = client({ timeout = 3 })
    -- the create answers in 0.2 s, warm's probe (the next request) in 1.5 s
    assert(sb:faults("create", { { delay_ms = 200 }, { delay_ms = 1500 } }))
    local h, cancelled
    h = assert(c:create_async(request(), function()
      -- a careless caller cancels a handle it never got (warm's probe is h + 1)
      cancelled = { c:cancel(h + 1) }
    end))
    c:poll(0)                           -- the create is on its way first
    -- warm spun for ever when its probe was cancelled: a watchdog stops it
    -- after 10^8 VM instructions (a spin's; waiting for the probe runs a
    -- few thousand)
    local ticks = 0
    local function watchdog()
      ticks = ticks + 1
      if ticks > 1000 then error("warm did not return") end
    end
    debug.sethook(watchdog, "", 100000)
    local ok, res = pcall(c.warm, c, 1)
    debug.sethook()
    assert.is_true(ok, res)
    assert.is_true(res)
    assert.same({ false }, cancelled)
    assert.equal(0, c:pending())
    c:close()
  end)

  it("cancels a pending call", function()
    sb:latency(100)
    local c = client()
    local called = 0
    local a = c:create_async(request({ merchant_uid = "x1" }), function() called = called + 1 end)
    c:create_async(request({ merchant_uid = "x2" }), function() called = called + 1 end)
    c:poll(0)
    assert.is_true(c:cancel(a))
    assert.is_false(c:cancel(a))
    run(c)
    assert.equal(1, called)
    c:close()
  end)

  it("a call cancelled while it waits for a retry: poll(ms) no longer waits for its timer", function()
    sb:faults("create", { { status = 503, retry_after = 2 } })
    local c = client()
    local called = 0
    local h = c:create_async(request(), function() called = called + 1 end)
    wait_until(function() c:poll(10); return c:timeout() > 100 end)   -- on its 2 s timer
    assert.same({ true, false }, { c:cancel(h) })
    assert.equal(-1, c:timeout())
    local t0 = now()
    assert.equal(0, c:poll(1500))      -- nothing pending: returns at once
    assert.is_true(now() - t0 < 0.5, "poll waited " .. (now() - t0) .. " s")
    assert.equal(0, called)
    c:close()
  end)

  it("a call that finished in the same poll can no longer be cancelled", function()
    -- both callbacks run from one poll
    local c = client()
    local real = core.multi_new
    core.multi_new = one_poll_multi
    local ok, err = pcall(function()
      local calls, cancelled, second = {}, nil, nil
      c:create_async(request({ merchant_uid = "f1" }), function(res)
        calls[#calls + 1] = res.id
        cancelled = c:cancel(second)
      end)
      second = c:create_async(request({ merchant_uid = "f2" }), function(res)
        calls[#calls + 1] = res.id
      end)
      assert.equal(0, c:poll(0))
      assert.is_false(cancelled)            -- too late: it had finished
      assert.same({ "l1", "l2" }, calls)    -- and its callback ran
      assert.equal(0, c:pending())
    end)
    core.multi_new = real
    c:close()
    assert(ok, err)
  end)

  it("a call that finished in the same poll, cancelled (too late) then closed: close names it", function()
    -- a callback's shutdown: cancel every handle, then close. The second
    -- call had finished in the same poll: cancel says false (its callback
    -- is to run), then close stops it, so close must name it
    local c = client()
    local real = core.multi_new
    core.multi_new = one_poll_multi
    local ok, err = pcall(function()
      local calls, cancelled, maybe, second = 0, nil, nil, nil
      c:create_async(request({ merchant_uid = "s1" }), function()
        calls = calls + 1
        cancelled = c:cancel(second)
        maybe = select(2, c:close())
      end)
      second = c:create_async(request({ merchant_uid = "s2" }), function() calls = calls + 1 end)
      assert.equal(0, c:poll(0))
      assert.is_false(cancelled)
      assert.equal(1, calls)                -- no callback after close
      assert.same({ second }, maybe)        -- so close names it: its link exists
    end)
    core.multi_new = real
    c:close()
    assert(ok, err)
  end)

  it("cancel says whether the call may have reached PortOne", function()
    sb:latency(300)
    local c = client({ max_concurrent = 1 })
    local called = 0
    local a = c:create_async(request({ merchant_uid = "ca1" }), function() called = called + 1 end)
    local b = c:create_async(request({ merchant_uid = "ca2" }), function() called = called + 1 end)
    wait_until(function() c:poll(10); return sb:stats().requests >= 1 end)   -- a is at the sandbox
    local ok, maybe = c:cancel(b)
    assert.is_true(ok)
    assert.is_false(maybe)             -- queued behind a: never sent
    ok, maybe = c:cancel(a)
    assert.is_true(ok)
    assert.is_true(maybe)              -- sent: its link may exist
    wait_until(function() return sb:stats().creates == 1 end)
    assert.equal(0, called)
    assert.is_nil(links_of(sb)["ca2"])
    c:close()
  end)

  it("close returns the handles of the cancelled calls that may have reached PortOne", function()
    sb:latency(300)
    local c = client({ max_concurrent = 3 })
    local handles, called = {}, 0
    for i = 1, 4 do
      handles[i] = c:create_async(request({ merchant_uid = "cl" .. i }), function() called = called + 1 end)
    end
    wait_until(function() c:poll(10); return sb:stats().requests >= 3 end)   -- 3 in flight, 1 queued
    local ok, maybe = c:close()
    assert.is_true(ok)
    table.sort(maybe)
    assert.same({ handles[1], handles[2], handles[3] }, maybe)
    wait_until(function() return sb:stats().creates == 3 end)   -- they were made
    assert.equal(0, called)
    -- closing again: nothing left
    ok, maybe = c:close()
    assert.is_true(ok)
    assert.same({}, maybe)
  end)

  it("close cancels everything in flight; no callback after close", function()
    sb:latency(200)
    local c = client()
    local called = 0
    for i = 1, 5 do
      c:create_async(request({ merchant_uid = "z" .. i }), function() called = called + 1 end)
    end
    c:poll(0)
    c:close()
    assert.equal(0, c:poll(300))
    assert.equal(-1, c:timeout())
    assert.equal(0, called)
    local h, err = c:create_async(request(), function() called = called + 1 end)
    assert.is_nil(h)
    assert.equal("transport", err.kind)
  end)

  it("a callback that closes the client stops the others, and close names them", function()
    sb:latency(200)                  -- all four in flight at once
    local c = client()
    local called, handles, maybe = 0, {}, nil
    for i = 1, 4 do
      handles[i] = c:create_async(request({ merchant_uid = "k" .. i }), function(res)
        called = called + 1
        assert(res)
        local _
        _, maybe = c:close()
        for j = 1, 4 do if handles[j] == nil then error("no handle " .. j) end end
      end)
    end
    run(c)
    assert.equal(1, called)
    -- the other three: finished in the same poll, or still in flight; all
    -- of them made their link
    assert.equal(3, #maybe)
    wait_until(function() return sb:stats().creates == 4 end)
  end)

  it("an on_attempt hook that cancels the call it reports: no callback, counted once", function()
    sb:latency(150)
    local c, a, got
    local called = { a = 0, b = 0 }
    c = client({ on_attempt = function()
      if a and not got then got = { c:cancel(a) } end
    end })
    a = assert(c:create_async(request({ merchant_uid = "hc-a" }), function() called.a = called.a + 1 end))
    wait_until(function() c:poll(5); return sb:stats().requests >= 1 end)   -- a is at the sandbox
    assert(c:create_async(request({ merchant_uid = "hc-b" }), function() called.b = called.b + 1 end))
    run(c)
    assert.same({ true, true }, got)       -- cancelled, and it had been sent
    assert.equal(0, called.a)
    assert.equal(1, called.b)              -- b still ran: a's cancel was counted once
    assert.equal(0, c:pending())
    assert.equal(-1, c:timeout())
    c:close()
  end)

  it("an on_attempt hook that closes the client: close names every call sent", function()
    sb:latency(200)
    local c, maybe
    c = client({ on_attempt = function() if not maybe then local _; _, maybe = c:close() end end })
    local called = 0
    for i = 1, 3 do
      assert(c:create_async(request({ merchant_uid = "oa" .. i }), function() called = called + 1 end))
    end
    run(c)
    assert.equal(0, called)
    assert.equal(3, #maybe)          -- the one being completed and the two others
    wait_until(function() return sb:stats().creates == 3 end)
  end)

  it("is freed by the garbage collector with calls in flight", function()
    sb:latency(200)
    local alive, called = setmetatable({}, { __mode = "k" }), 0
    for _ = 1, 3 do
      local c = client()
      for i = 1, 4 do
        c:create_async(request({ merchant_uid = "g" .. i }), function() called = called + 1 end)
      end
      c:poll(0)
      alive[c] = true
    end
    collectgarbage(); collectgarbage()
    assert.is_nil(next(alive))          -- the clients were collected
    assert.equal(0, called)             -- and no callback ran for them
  end)

  -- A loop that polls rarely (a hitch, a loading screen, a GUI that polls
  -- on events): an answer that arrived before the poll came is read, never
  -- thrown away as a timeout (libcurl checks its own timeout before it
  -- reads: the link was made and its URL lost).
  it("a poll(0) that comes after the timeout still reads an answer that arrived", function()
    sb:latency(100)
    local c = client({ timeout = 1 })
    assert(c:warm(1))
    local got = {}
    c:create_async(request({ merchant_uid = "late-poll" }), function(res, err)
      got[#got + 1] = { res = res, err = err }
    end)
    c:poll(0)                           -- sent on the warm connection
    assert.is_true(c:timeout() <= 1000) -- a loop that sleeps wakes at the deadline
    socket.sleep(1.5)                   -- the answer came after 0.1 s
    wait_until(function() c:poll(0); return #got > 0 end)
    assert.equal(1, #got)
    assert.is_nil(got[1].err and tostring(got[1].err))
    assert.equal(1, got[1].res.attempts)
    assert.equal(1, links_of(sb)["late-poll"])
    c:close()
  end)

  it("a poll(0) after the timeout: no answer yet is a timeout (sent), not a wait", function()
    local c = client({ timeout = 1 })
    assert(c:warm(1))
    sb:faults("create", { { delay_ms = 3000 } })
    local got
    c:create_async(request(), function(res, err) got = { res = res, err = err } end)
    c:poll(0)
    socket.sleep(1.3)
    local t0 = now()
    c:poll(0)
    assert.is_true(now() - t0 < 0.2)
    assert.is_nil(got.res)
    assert.equal("timeout", got.err.kind)
    assert.is_true(got.err.sent)
    assert.equal(0, c:pending())
    c:close()
  end)

  it("exposes timeout() and fds() for external loops", function()
    sb:latency(100)
    local c = client()
    assert.equal(-1, c:timeout())
    c:create_async(request(), function() end)
    assert.equal(0, c:timeout())
    c:poll(0)
    local r, w = c:fds()
    assert.is_true(#r + #w >= 1)
    -- an external loop: wait what timeout() says (capped), then poll(0)
    local deadline = now() + 5
    while c:pending() > 0 and now() < deadline do
      local t = c:timeout()
      socket.sleep(((t < 0 or t > 10) and 10 or t) / 1000)
      c:poll(0)
    end
    assert.equal(0, c:pending())
    c:close()
  end)
end)

-- C review: a finalizer can run inside perform while it builds the result
-- tables (they allocate). It must not free or recycle the transfer being
-- reported. The transfers fail fast (a closed loopback port), so no server.
describe("core.multi_new and finalizers during perform", function()
  local gc = require "helpers.gc"
  local make = gc.finalized
  -- rounds with a hit each case wants: one under valgrind, ~50x slower,
  -- where memcheck flags the first bad read anyway
  local HITS = os.getenv("PLINK_VALGRIND") and 1 or 2

  local function closed_port()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    return "http://127.0.0.1:" .. port .. "/x"
  end

  -- Rounds of N failing transfers, with garbage whose finalizer calls act(m)
  -- when it runs while perform is reporting (info().done > 0 is seen only
  -- then) and otherwise leaves new garbage behind, so that every GC cycle
  -- has a finalizer to run. Stops after a few hits; check(m, seen, ids)
  -- after each round that had one.
  local function rounds(act, check)
    local N, url, hits = 256, closed_port(), 0
    gc.eager_gc(function()                             -- GC steps all the time
      local deadline = now() + 30
      while hits < HITS and now() < deadline do
        local m = core.multi_new({ max_concurrent = N })
        local ids, seen, twice, other, hit = {}, {}, 0, 0, false
        local state = {}
        for i = 1, N do ids[i] = m:add("POST", url, JSON, "{}") end
        local fin
        fin = function()
          local ok, info = pcall(m.info, m)
          if not ok or info.closed or hit then return end
          if info.done > 0 then
            hits, hit = hits + 1, true
            pcall(act, m, state)
          else
            make(fin)
          end
        end
        for _ = 1, 20 do make(fin) end
        -- a round runs to its end (the deadline only stops new rounds): one
        -- cut short would leave transfers unreported, which check would
        -- take for lost ones
        local running, stop = 1, now() + 20
        while running > 0 do
          assert(now() < stop, "a round's transfers did not finish in 20 s")
          local list
          list, running = m:perform(100)
          for _, c in ipairs(list) do
            if seen[c.id] then twice = twice + 1 end
            seen[c.id] = true
            if not (c.err and c.err.kind == "transport") then other = other + 1 end
          end
        end
        assert.equal(0, twice, "a completion reported twice")
        assert.equal(0, other, "a completion that is not a transport error")
        if hit then check(m, seen, ids, state) end
        m:close()
      end
    end)
    assert.is_true(hits > 0, "no finalizer ran while perform reported")
  end

  it("close from a finalizer frees the handle after perform is done with it", function()
    rounds(function(m) m:close() end, function(m)
      local list, running = m:perform(0)
      assert.same({}, list)
      assert.equal(0, running)
      assert.is_true(m:info().closed)
      assert.has_error(function() m:add("GET", "http://127.0.0.1:1/") end)
    end)
  end)

  it("a nested perform reports nothing and loses nothing", function()
    local nested = 0
    rounds(function(m)
      local list = m:perform(0)
      nested = nested + #list
    end, function(_, seen, ids)
      for _, id in ipairs(ids) do assert.is_true(seen[id]) end
    end)
    assert.equal(0, nested)
  end)

  -- Lua 5.1 and LuaJIT pass an error raised by a finalizer on to the
  -- allocation that ran it: here, to perform, which raises it. The
  -- completions it had read by then must be reported by the next perform,
  -- not dropped with the table it was filling (a create's URL lost, and
  -- its call pending for ever). 5.4 only warns; nothing raises there.
  it("a finalizer that raises inside perform loses no completion", function()
    local N, url, hits, raised = 256, closed_port(), 0, 0
    gc.eager_gc(function()
      local deadline = now() + 30
      while hits < HITS and now() < deadline do
        local m = core.multi_new({ max_concurrent = N })
        local ids, seen, twice, hit = {}, {}, 0, false
        for i = 1, N do ids[i] = m:add("POST", url, JSON, "{}") end
        local fin
        fin = function()
          local ok, info = pcall(m.info, m)
          if not ok or info.closed or hit then return end
          if info.done > 0 then
            hits, hit = hits + 1, true
            error("finalizer failed")
          end
          make(fin)
        end
        for _ = 1, 20 do make(fin) end
        local running, stop = 1, now() + 20     -- to the round's end, as in rounds
        while running > 0 or m:info().done > 0 do
          assert(now() < stop, "a round's transfers did not finish in 20 s")
          local ok, list, r = pcall(m.perform, m, 100)
          if ok then
            running = r
            for _, c in ipairs(list) do
              if seen[c.id] then twice = twice + 1 end
              seen[c.id] = true
            end
          else
            assert.truthy(tostring(list):find("finalizer failed", 1, true), tostring(list))
            raised = raised + 1
          end
        end
        assert.equal(0, twice, "a completion reported twice")
        for _, id in ipairs(ids) do assert.is_true(seen[id], "transfer " .. id .. " never reported") end
        m:close()
      end
    end)
    assert.is_true(hits > 0, "no finalizer ran while perform reported")
    if _VERSION == "Lua 5.1" then assert.is_true(raised > 0, "perform never raised") end
  end)

  -- Every allocation inside perform may run finalizers, the ones before
  -- the results are built too (on 5.1 and LuaJIT pushing a C function
  -- allocates): a perform from one of them, after the transfers finished
  -- but before they were reported, took them all and the outer perform
  -- returned none. Here finalizers run at each allocation of the outer
  -- perform (helpers.gc), each making a nested perform.
  it("a perform from a finalizer at any allocation of perform reports nothing", function()
    local N, url = 64, closed_port()
    local nested, hits, seen, ids = 0, 0, {}, {}
    gc.eager_gc(function()
      for round = 1, 5 do
        local m = core.multi_new({ max_concurrent = N })
        for _ = 1, N do ids[#ids + 1] = round .. ":" .. m:add("POST", url, JSON, "{}") end
        local running, stop = 1, now() + 20
        while running > 0 do
          assert(now() < stop, "the transfers did not finish in 20 s")
          local n, list, r = gc.with_finalizers(function()
            nested = nested + #(m:perform(0))
          end, m.perform, m, 100)
          hits, running = hits + n, r
          for _, c in ipairs(list) do
            local k = round .. ":" .. c.id
            seen[k] = (seen[k] or 0) + 1
          end
        end
        m:close()
      end
    end)
    assert.is_true(hits > 0, "no finalizer ran inside perform")
    assert.equal(0, nested, "completions a nested perform took")
    for _, id in ipairs(ids) do assert.equal(1, seen[id], "transfer " .. id) end
  end)

  it("cancel leaves the transfer being reported alone", function()
    rounds(function(m, state)
      state.cancelled = {}
      for id = 1, 256 do state.cancelled[id] = m:cancel(id) end
    end, function(_, seen, ids, state)
      -- each transfer is either cancelled (never reported) or reported
      for _, id in ipairs(ids) do
        assert.is_true(seen[id] ~= (state.cancelled[id] == true), "transfer " .. id)
      end
    end)
  end)
end)
