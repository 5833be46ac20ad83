-- client:create_many against the sandbox: order, invalid requests, progress,
-- concurrency, retries and faults. Runs under Lua 5.4 and LuaJIT.
local cases = require "helpers.cases"
local helper = require "helpers.sandbox"
local link = require "portone.link"
local socket = require "socket"

local function request(i, over)
  local mine = { title = "Bulk " .. i, amount = 1000 + i, merchant_uid = "bulk-" .. i }
  return cases.request(cases.merge(mine, over))
end

describe("client:create_many", function()
  local sb
  setup(function() sb = helper.start() end)
  teardown(function() if sb then sb:stop() end end)
  before_each(function() sb:reset() end)

  local function client(opts)
    local o = { base_url = sb.url, retry_base = 0.01, retry_cap = 0.05 }
    for k, v in pairs(opts or {}) do o[k] = v end
    return link.new(o)
  end

  it("returns one entry per request, in input order", function()
    sb:latency(10)
    local c = client()
    local reqs = {}
    for i = 1, 60 do reqs[i] = request(i) end
    local results = c:create_many(reqs, { concurrency = 8 })
    assert.equal(60, #results)
    local links = sb:admin("GET", "links")
    for i, r in ipairs(results) do
      assert.is_nil(r.err)
      assert.equal(200, r.res.status)
      assert.equal("bulk-" .. i, links[r.res.id].merchant_uid)
    end
    c:close()
  end)

  it("reports invalid requests without sending them", function()
    local c = client()
    local reqs = { request(1), request(2, { amount = 0 }), request(3), request(4, { merchant_id = "x" }) }
    local results = c:create_many(reqs)
    assert.truthy(results[1].res)
    assert.equal("validation", results[2].err.kind)
    assert.equal("amount", results[2].err.errors[1].field)
    assert.truthy(results[3].res)
    assert.equal("validation", results[4].err.kind)
    assert.equal(2, sb:stats().requests)
    c:close()
  end)

  it("reports non-table entries as validation errors", function()
    local c = client()
    local results = c:create_many({ request(1), "nope" })
    assert.truthy(results[1].res)
    assert.equal("validation", results[2].err.kind)
    c:close()
  end)

  -- A merchant_uid already used by an earlier entry of the call: that entry
  -- is not sent (a second link for one order), as `batch` refuses it.
  local function check_duplicate(r, first)
    local e = r.err
    assert.is_nil(r.res)
    assert.equal("validation", e.kind)
    assert.equal(1, #e.errors)
    assert.equal("merchant_uid", e.errors[1].field)
    assert.equal("duplicate", e.errors[1].code)
    assert.truthy(e.errors[1].message:find("[" .. first .. "]", 1, true), e.errors[1].message)
    assert.truthy(tostring(e):find("allow_duplicates", 1, true), tostring(e))
    assert.is_false(e.sent)
    assert.equal(0, e.attempts)
    assert.is_false(e.retryable)
    assert.is_false(link.errors.may_exist(e))
  end

  it("sends a merchant_uid listed twice once; the later entry is a duplicate error", function()
    local c = client()
    local reqs = { request(1), request(2), request(3, { merchant_uid = "bulk-1", amount = 7 }),
      request(4), request(5, { merchant_uid = "bulk-1" }), request(6, { merchant_uid = "bulk-4" }) }
    local seen = {}
    -- concurrency 1: the duplicates come up after their first is answered
    local results, stop = c:create_many(reqs, { concurrency = 1,
      on_progress = function(done, total, failed) seen[#seen + 1] = { done, total, failed } end })
    assert.is_nil(stop)
    assert.equal(6, #results)
    for _, i in ipairs({ 1, 2, 4 }) do assert.truthy(results[i].res, tostring(results[i].err)) end
    check_duplicate(results[3], 1)
    check_duplicate(results[5], 1)      -- the first entry, not the other duplicate
    check_duplicate(results[6], 4)
    assert.equal(3, sb:stats().creates)
    local uids = {}
    for _, l in pairs(sb:admin("GET", "links")) do
      assert.is_nil(uids[l.merchant_uid], "two links for " .. tostring(l.merchant_uid))
      uids[l.merchant_uid] = true
    end
    -- one progress call per entry, the duplicates counted as failed
    assert.equal(6, #seen)
    assert.same({ 6, 6, 3 }, seen[6])
    c:close()
  end)

  it("sends the same request table listed twice once", function()
    local c = client()
    local r = request(1)
    local results = c:create_many({ r, request(2), r }, { concurrency = 4 })
    assert.truthy(results[1].res and results[2].res)
    check_duplicate(results[3], 1)
    assert.equal(2, sb:stats().creates)
    c:close()
  end)

  it("sends every duplicate with allow_duplicates = true", function()
    local c = client()
    local r = request(1)
    local results = c:create_many({ r, request(2, { merchant_uid = "bulk-1" }), r },
      { allow_duplicates = true })
    for i = 1, 3 do assert.truthy(results[i].res, tostring(results[i].err)) end
    assert.equal(3, sb:stats().creates)
    -- false is the default: they are refused
    sb:reset()
    results = c:create_many({ r, r }, { allow_duplicates = false })
    assert.truthy(results[1].res)
    check_duplicate(results[2], 1)
    assert.equal(1, sb:stats().creates)
    assert.has_error(function() c:create_many({ r }, { allow_duplicates = 1 }) end,
      "bad argument #2 to 'create_many' (allow_duplicates must be a boolean)")
    assert.has_error(function() c:create_many({ r }, { allow_duplicate = true }) end, "bad argument #2"
      .. " to 'create_many' (option 'allow_duplicate' is unknown: did you mean 'allow_duplicates'?)")
    c:close()
  end)

  it("leaves entries with no string merchant_uid to validation; an invalid first still counts", function()
    local c = client()
    local reqs = { request(1, { merchant_uid = 5 }), request(2, { merchant_uid = 5 }), "x", "x",
      request(3, { merchant_uid = "bulk-a" }), request(4, { merchant_uid = "bulk-A" }),
      request(5, { amount = 0 }), request(6, { merchant_uid = "bulk-5" }) }
    local results = c:create_many(reqs)
    for i = 1, 2 do
      assert.equal("merchant_uid", results[i].err.errors[1].field)
      assert.equal("type", results[i].err.errors[1].code)
    end
    for i = 3, 4 do assert.equal("[" .. i .. "]", results[i].err.errors[1].field) end
    -- case matters: two orders
    assert.truthy(results[5].res and results[6].res)
    -- the check comes before validation (as batch's): an invalid first
    -- entry still makes the later one a duplicate, whose result says so
    assert.equal("amount", results[7].err.errors[1].field)
    check_duplicate(results[8], 7)
    assert.equal(2, sb:stats().creates)
    c:close()
  end)

  it("calls on_progress once per request with done, total, failed", function()
    local c = client()
    local reqs = {}
    for i = 1, 10 do reqs[i] = request(i, i == 5 and { amount = -1 } or nil) end
    local seen = {}
    c:create_many(reqs, { concurrency = 4, on_progress = function(done, total, failed)
      seen[#seen + 1] = { done, total, failed }
    end })
    assert.equal(10, #seen)
    for k, s in ipairs(seen) do
      assert.equal(k, s[1]); assert.equal(10, s[2])
    end
    assert.equal(1, seen[10][3])
    c:close()
  end)

  it("keeps `concurrency` in flight over that many keep-alive connections", function()
    sb:latency(50)
    local c = client()
    local reqs = {}
    for i = 1, 64 do reqs[i] = request(i) end
    local t0 = socket.gettime()
    local results = c:create_many(reqs, { concurrency = 16 })
    local took = socket.gettime() - t0
    for _, r in ipairs(results) do assert.truthy(r.res) end
    -- 4 rounds of 50 ms (0.2 s), far from 64 x 50 ms
    assert.is_true(took < 1.2, "took " .. took)
    local st = sb:stats()
    assert.is_true(st.connections <= 16, "connections " .. st.connections)
    c:close()
  end)

  it("retries what the policy allows and reports the rest", function()
    sb:faults("create", { { status = 503 }, { status = 500 }, { status = 429 } })
    local c = client()
    local reqs = {}
    for i = 1, 6 do reqs[i] = request(i) end
    local results = c:create_many(reqs, { concurrency = 1 })
    -- 503 and 429 are retried; the 500 reached the server: not retried
    local failed = {}
    for i, r in ipairs(results) do if r.err then failed[#failed + 1] = i end end
    assert.equal(1, #failed)
    assert.equal(500, results[failed[1]].err.status)
    c:close()
  end)

  it("survives dropped connections, garbage and timeouts", function()
    sb:faults("create", { { garbage = true }, { delay_ms = 1500 }, { truncate = true } })
    local c = client({ timeout = 0.5 })
    local reqs = {}
    for i = 1, 8 do reqs[i] = request(i) end
    local results = c:create_many(reqs, { concurrency = 4 })
    local kinds = {}
    for _, r in ipairs(results) do
      local k = r.res and "ok" or r.err.kind
      kinds[k] = (kinds[k] or 0) + 1
    end
    assert.equal(5, kinds.ok)
    assert.equal(1, kinds.decode)
    assert.equal(1, kinds.timeout)
    assert.equal(8, #results)
    c:close()
  end)

  it("checks its arguments", function()
    local c = client()
    assert.has_error(function() c:create_many("x") end)
    assert.has_error(function() c:create_many({}, { concurrency = 0 }) end)
    assert.has_error(function() c:create_many({}, { on_progress = 1 }) end)
    -- a misspelt concurrency would run at the default
    assert.has_error(function() c:create_many({}, { concurency = 4 }) end,
      "bad argument #2 to 'create_many' (option 'concurency' is unknown: did you mean 'concurrency'?)")
    assert.same({}, c:create_many({}))
    c:close()
    local results = c:create_many({ request(1) })
    assert.equal("transport", results[1].err.kind)
  end)

  it("refuses a list with an entry past #reqs (after a hole) before it sends anything", function()
    local c = client()
    for _, bad in ipairs({ -1, 1.5, 4097, 1 / 0, 0 / 0, "4" }) do
      assert.has_error(function() c:create_many({ request(1) }, { concurrency = bad }) end,
        "bad argument #2 to 'create_many' (concurrency must be an integer in [1, 4096])")
    end
    -- reqs[10] lives in the hash part: #reqs is 1 on 5.4 and LuaJIT, and
    -- requests 2..10 were dropped: never sent, no entry in the results
    local reqs = { request(1) }
    reqs[10] = request(10)
    assert.has_error(function() c:create_many(reqs) end,
      "bad argument #1 to 'create_many' (an array expected: [2] is nil, [10] is not)")
    assert.equal(0, sb:stats().requests)
    -- keys other than positive integers are not entries (table.pack's n)
    local results = c:create_many(table.pack and table.pack(request(1), request(2))
      or { request(1), request(2), n = 2 })
    assert.equal(2, #results)
    assert.truthy(results[1].res and results[2].res)
    c:close()
  end)

  -- on_progress raising or closing the client stops create_many; what was
  -- done is returned, created URLs included, and the rest is marked.
  local function check_stopped(results, stop, n, why)
    assert.equal(n, #results)
    assert.truthy(stop, "a second value says why it stopped")
    assert.truthy(stop.message:find(why, 1, true), stop.message)
    local created, never = 0, 0
    for i = 1, n do
      local r = results[i]
      if r.res then
        created = created + 1
        assert.matches("^http", r.res.url)
      else
        assert.is_true(r.not_started, tostring(r.err))
        assert.equal(0, r.err.attempts)
        assert.is_false(r.err.sent)
        never = never + 1
      end
    end
    assert.equal(sb:stats().creates, created)   -- every link made is reported
    assert.is_true(created >= 1 and never >= 1)
    return created, never
  end

  it("keeps the results when on_progress raises, and marks the calls never started", function()
    local c = client()
    local reqs = {}
    for i = 1, 10 do reqs[i] = request(i) end
    local ok, results, stop = pcall(c.create_many, c, reqs, { concurrency = 2,
      on_progress = function(done) if done == 3 then error("stop here") end end })
    assert.is_true(ok, tostring(results))
    check_stopped(results, stop, 10, "stop here")
    -- the client still works
    assert.truthy(c:create_many({ request(11) })[1].res)
    c:close()
  end)

  it("keeps the results when on_progress raises an error value tostring fails on", function()
    local c = client()
    local reqs = {}
    for i = 1, 10 do reqs[i] = request(i) end
    local bad = setmetatable({}, { __tostring = function() error("no text") end })
    local ok, results, stop = pcall(c.create_many, c, reqs, { concurrency = 2,
      on_progress = function(done) if done == 3 then error(bad) end end })
    assert.is_true(ok, "create_many raised: its results (created links) lost")
    check_stopped(results, stop, 10, "on_progress raised")
    c:close()
  end)

  it("an on_attempt hook that closes the client stops it: no retry, no send after the close", function()
    -- as the sync create: a close from on_attempt ends the call's retries
    sb:faults("create", { { status = 503, retry_after = 0 } })
    local c
    c = client({ on_attempt = function(ev) if ev.status == 503 then c:close() end end })
    local reqs = {}
    for i = 1, 4 do reqs[i] = request(i) end
    local results, stop = c:create_many(reqs, { concurrency = 1 })
    assert.equal(4, #results)
    assert.truthy(stop and stop.message:find("closed", 1, true))
    assert.equal(1, sb:stats().requests)          -- the 503, and nothing after it
    assert.equal(503, results[1].err.status)
    assert.equal(1, results[1].err.attempts)
    for i = 2, 4 do
      assert.is_true(results[i].not_started, tostring(results[i].err))
    end
  end)

  it("keeps the results when on_progress closes the client", function()
    local c = client()
    local reqs = {}
    for i = 1, 10 do reqs[i] = request(i) end
    local ok, results, stop = pcall(c.create_many, c, reqs, { concurrency = 2,
      on_progress = function(done) if done == 2 then c:close() end end })
    assert.is_true(ok, tostring(results))
    check_stopped(results, stop, 10, "closed")
  end)
end)

describe("client:create_many inside nginx (ngx.thread path, simulated)", function()
  local sb
  local saved
  setup(function() sb = helper.start() end)
  teardown(function() if sb then sb:stop() end end)
  before_each(function()
    saved = rawget(_G, "ngx")
    -- light threads as coroutines; the sync create never yields here
    local fake = { get_phase = function() return "timer" end, thread = {} }
    -- spawn runs a thread to its first yield, wait runs it to its end (an
    -- on_progress that yields, as a cosocket call would, lets the others run)
    function fake.thread.spawn(fn)
      local co = coroutine.create(fn)
      local ok, e = coroutine.resume(co)
      return { co = co, ok = ok, e = e }
    end
    function fake.thread.wait(t)
      while t.ok and coroutine.status(t.co) ~= "dead" do
        t.ok, t.e = coroutine.resume(t.co)
      end
      return t.ok, t.e
    end
    rawset(_G, "ngx", fake)
  end)
  after_each(function() rawset(_G, "ngx", saved) end)

  it("runs workers over the sync create, results in input order", function()
    local c = link.new({ base_url = sb.url, transport = "curl" })
    local reqs = { request(1), request(2, { amount = -1 }), request(3), "x" }
    local progress = 0
    local results = c:create_many(reqs, { concurrency = 2,
      on_progress = function(done) progress = done end })
    assert.equal(4, progress)
    local links = sb:admin("GET", "links")
    assert.equal("bulk-1", links[results[1].res.id].merchant_uid)
    assert.equal("validation", results[2].err.kind)
    assert.equal("bulk-3", links[results[3].res.id].merchant_uid)
    assert.equal("validation", results[4].err.kind)
    local h, err = c:create_async(request(5), function() end)
    assert.is_nil(h)
    assert.truthy(err.message:find("inside nginx", 1, true))
    c:close()
  end)

  it("sends a merchant_uid listed twice once (light threads); allow_duplicates sends both", function()
    sb:reset()
    local c = link.new({ base_url = sb.url, transport = "curl" })
    local r = request(1)
    local reqs = { r, request(2, { merchant_uid = "bulk-1" }), request(3), r }
    local progress = 0
    local results = c:create_many(reqs, { concurrency = 2,
      on_progress = function(done) progress = done end })
    assert.equal(4, progress)
    assert.truthy(results[1].res and results[3].res)
    for _, i in ipairs({ 2, 4 }) do
      local e = results[i].err
      assert.equal("validation", e.kind)
      assert.equal("duplicate", e.errors[1].code)
      assert.truthy(e.errors[1].message:find("[1]", 1, true), e.errors[1].message)
      assert.is_false(e.sent)
      assert.equal(0, e.attempts)
    end
    assert.equal(2, sb:stats().creates)
    sb:reset()
    results = c:create_many(reqs, { concurrency = 2, allow_duplicates = true })
    for i = 1, 4 do assert.truthy(results[i].res, tostring(results[i].err)) end
    assert.equal(4, sb:stats().creates)
    c:close()
  end)

  -- create_many of six requests on a fresh client, under pcall: ok,
  -- results, stop
  local function many6(concurrency, on_progress)
    sb:reset()
    local c = link.new({ base_url = sb.url, transport = "curl" })
    local reqs = {}
    for i = 1, 6 do reqs[i] = request(i) end
    local ok, results, stop = pcall(c.create_many, c, reqs, { concurrency = concurrency,
      on_progress = on_progress })
    c:close()
    return ok, results, stop
  end

  it("keeps the results when on_progress raises (light threads)", function()
    local ok, results, stop = many6(2, function(done) if done == 2 then error("stop here") end end)
    assert.is_true(ok, tostring(results))
    assert.equal(6, #results)
    assert.truthy(stop.message:find("stop here", 1, true))
    assert.truthy(results[1].res and results[2].res)
    for i = 3, 6 do assert.is_true(results[i].not_started) end
    assert.equal(2, sb:stats().creates)
  end)

  it("in a phase without cosockets it sends nothing and says why, rather than raise", function()
    sb:reset()
    ngx.get_phase = function() return "log" end   -- luacheck: ignore (the fake ngx)
    local c = link.new({ base_url = sb.url, transport = "curl" })
    local ok, results, stop = pcall(c.create_many, c, { request(1), request(2) })
    assert.is_true(ok, tostring(results))
    assert.equal(2, #results)
    for i = 1, 2 do
      assert.is_true(results[i].not_started)
      assert.is_false(results[i].err.sent)
      assert.equal(0, results[i].err.attempts)
    end
    assert.equal("transport", stop.kind)
    assert.truthy(stop.message:find("'log' phase", 1, true), stop.message)
    assert.equal(0, sb:stats().requests)
    c:close()
  end)

  -- PUC Lua 5.1 cannot yield across pcall (on_progress runs under one);
  -- LuaJIT, which OpenResty runs, and 5.4 can
  local can_yield = _VERSION ~= "Lua 5.1" or rawget(_G, "jit") ~= nil
  local it_yield = can_yield and it or pending
  it_yield("a raise in an on_progress that yields is not undone by another thread's", function()
    local ok, results, stop = many6(3, function(done)
      coroutine.yield()                   -- a cosocket call: the other threads run
      if done == 1 then error("stop here") end
    end)
    assert.is_true(ok, tostring(results))
    assert.truthy(stop and stop.message:find("stop here", 1, true), "the raise was lost")
    local started = 0
    for i = 1, 6 do if not results[i].not_started then started = started + 1 end end
    assert.is_true(started <= 3, "started " .. started)   -- the three threads' first calls
    assert.equal(started, sb:stats().creates)
  end)
end)
