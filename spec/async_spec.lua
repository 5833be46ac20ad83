-- Async transfers: the C multi transport (core.multi_new) and the client's
-- create_async / deactivate_async / poll, against the sandbox with latency
-- and faults. Runs under Lua 5.4 and LuaJIT.
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
  local r = {
    title = "Async test", user_code = "imp12345678", amount = 10000,
    merchant_uid = "order-1", name = "Item", currency = "KRW", buyer_tel = "010-1234-5678",
    pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "Card" } },
  }
  for k, v in pairs(over or {}) do r[k] = v end
  return r
end

describe("core.multi_new", function()
  local sb
  setup(function() sb = helper.start() end)
  teardown(function() if sb then sb:stop() end end)
  before_each(function() sb:reset() end)

  it("runs transfers concurrently and reuses connections", function()
    sb:latency(50)
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
    -- 24 transfers of 50 ms, 8 at a time: 3 rounds (~150 ms), not 24 x 50.
    assert.is_true(took < 0.9, "took " .. took)
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
    sb:latency(300)
    local m = core.multi_new()
    m:add("POST", sb.url .. API, JSON, helper.create_body())
    local t0 = now()
    for _ = 1, 5 do
      local list, running = m:perform(0)
      assert.equal(0, #list)
      assert.equal(1, running)
    end
    assert.is_true(now() - t0 < 0.1)
    -- perform(timeout) waits at most about timeout
    t0 = now()
    local list = m:perform(50)
    assert.equal(0, #list)
    assert.is_true(now() - t0 < 0.25)
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
    assert.is_true(m:cancel(a))
    assert.is_true(m:cancel(c))
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
    for _ = 1, 5 do
      local m = core.multi_new()
      for _ = 1, 4 do m:add("POST", sb.url .. API, JSON, helper.create_body()) end
      m:perform(0)
    end
    collectgarbage(); collectgarbage()
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
    assert.equal(0, m:info().queued)
    m:close()
  end)
end)
