-- What keeps TLS work out of poll(0): the CA file parsed once per process
-- (not per connection), a bounded number of connections opened at once,
-- and client:warm(n) opening them ahead of time.
local helper = require "helpers.sandbox"
local cases = require "helpers.cases"
local link = require "portone.link"
local core = require "portone.link.core"

local function drain(client, budget_s)
  local t_end = core.monotonic() + (budget_s or 20)
  while client:pending() > 0 and core.monotonic() < t_end do
    client:poll(0)
    core.sleep(0.0005)
  end
end

-- k creates on the client's async engine, drained: how many succeeded, and
-- the first error
local function async_creates(client, k)
  local n, first = 0, nil
  for _ = 1, k do
    assert(client:create_async(cases.request(), function(res, err)
      if res then n = n + 1 else first = first or err end
    end))
  end
  drain(client)
  return n, first
end

describe("TLS set-up of the curl transports", function()
  local sb, cert, bundle

  lazy_setup(function()
    cert = helper.tls_cert()
    sb = helper.start({ tls = cert })
    -- a system-sized bundle with the sandbox's certificate appended
    bundle = cert.dir .. "/bundle.pem"
    local out = assert(io.open(bundle, "w"))
    local sys = io.open("/etc/ssl/certs/ca-certificates.crt")
    if sys then out:write(sys:read("*a")); sys:close() end
    local own = assert(io.open(cert.cert))
    out:write(own:read("*a")); own:close(); out:close()
  end)

  lazy_teardown(function()
    if sb then sb:stop() end
  end)

  it("parses a CA file once per process, in new, not for each connection", function()
    local before = core.ca_loads()
    local client = link.new({ base_url = sb.url, cainfo = bundle })
    local after_new = core.ca_loads()
    assert.is_true(after_new <= before + 1)
    local results = client:create_many({ cases.request(), cases.request(), cases.request(),
      cases.request() }, { concurrency = 4 })
    for _, r in ipairs(results) do assert.truthy(r.res, tostring(r.err)) end
    assert.equal(8, (async_creates(client, 8)))
    -- a second client of the same file shares the parsed store
    local other = link.new({ base_url = sb.url, cainfo = bundle })
    assert.truthy(other:create(cases.request()))
    assert.equal(after_new, core.ca_loads())
    client:close(); other:close()
  end)

  it("new connections use the store parsed when the handle was made, not the file again", function()
    local copy = cert.dir .. "/copy.pem"
    assert(os.execute("cp " .. bundle .. " " .. copy))
    local client = link.new({ base_url = sb.url, cainfo = copy, max_concurrent = 8 })
    assert.is_true(client:warm(1))             -- makes the async engine
    local f = assert(io.open(copy, "w")); f:write("not a certificate\n"); f:close()
    local n, first = async_creates(client, 8)  -- 7 more connections
    assert.equal(8, n, tostring(first))
    assert.truthy(client:create(cases.request()))
    client:close()
  end)

  it("still refuses a server whose certificate the CA file does not hold", function()
    local client = link.new({ base_url = sb.url, retries = 0 })   -- system bundle only
    local res, err = client:create(cases.request())
    assert.is_nil(res)
    assert.equal("transport", err.kind)
    assert.equal(60, err.curl_code)
    assert.is_false(err.sent)
    assert.equal(0, err.attempts)
    local done
    assert(client:create_async(cases.request(), function(r, e) done = { r, e } end))
    drain(client)
    assert.is_nil(done[1])
    assert.equal(60, done[2].curl_code)
    assert.is_false(done[2].sent)             -- never retried, nothing sent
    assert.equal(0, done[2].attempts)
    assert.is_false(done[2].retryable)
    client:close()
  end)

  it("a CA file that cannot be read fails each call like libcurl did, not new", function()
    local client = link.new({ base_url = sb.url, cainfo = cert.dir .. "/missing.pem", retries = 0 })
    local res, err = client:create(cases.request())
    assert.is_nil(res)
    assert.equal("transport", err.kind)
    assert.equal(77, err.curl_code)           -- CURLE_SSL_CACERT_BADFILE
    client:close()
  end)

  it("opens at most max_opening connections at once in the async engine", function()
    local client = link.new({ base_url = sb.url, cainfo = bundle, max_concurrent = 16 })
    local n, most = 0, 0
    for _ = 1, 32 do
      assert(client:create_async(cases.request(), function(res) if res then n = n + 1 end end))
    end
    local t_end = core.monotonic() + 20
    while client:pending() > 0 and core.monotonic() < t_end do
      client:poll(0)
      local info = client._async.engine.m:info()
      if info.opening > most then most = info.opening end
    end
    assert.equal(32, n)
    -- without the cap the first poll(0) leaves all 16 handshakes in flight
    assert.is_true(most <= require("portone.link.async").MAX_OPENING, "opening: " .. most)
    client:close()
  end)

  it("connect_timeout bounds a connection whose TLS handshake never completes (sync and async)",
      function()
    -- the kernel completes TCP on a listening socket that never accepts; the
    -- handshake never does. With timeout = 30 s only connect_timeout ends it
    -- in well under 3 s: its option is set on every handle.
    local socket = require "socket"
    local silent = assert(socket.bind("127.0.0.1", 0))
    local _, port = silent:getsockname()
    local client = link.new({ base_url = "https://127.0.0.1:" .. port, connect_timeout = 0.3,
      timeout = 30, retries = 0 })
    local t0 = socket.gettime()
    local res, err = client:create(cases.request())
    assert.is_nil(res)
    assert.equal("timeout", err.kind, tostring(err))
    assert.is_false(err.sent)
    assert.equal(0, err.attempts)
    assert.is_true(socket.gettime() - t0 < 3, "connect_timeout not applied (sync)")
    local done
    t0 = socket.gettime()
    assert(client:create_async(cases.request(), function(r, e) done = { r, e } end))
    drain(client, 10)
    assert.is_nil(done[1])
    assert.equal("timeout", done[2].kind, tostring(done[2]))
    assert.is_false(done[2].sent)
    assert.is_true(socket.gettime() - t0 < 3, "connect_timeout not applied (async)")
    client:close()
    silent:close()
  end)

  it("holds the queue while a connection opens, and timeout() then does not say 0", function()
    -- a listening socket that never accepts: the kernel completes TCP, the
    -- TLS handshake never does, so the first connection stays "opening"
    local socket = require "socket"
    local silent = assert(socket.bind("127.0.0.1", 0))
    local _, port = silent:getsockname()
    local client = link.new({ base_url = "https://127.0.0.1:" .. port, cainfo = bundle,
      max_concurrent = 8, connect_timeout = 10, retries = 0 })
    for _ = 1, 6 do assert(client:create_async(cases.request(), function() end)) end
    for _ = 1, 5 do client:poll(0); core.sleep(0.01) end
    local info = client._async.engine.m:info()
    assert.equal(1, info.opening)          -- without the cap: 6
    assert.equal(1, info.in_flight)
    assert.equal(5, info.queued)
    local t = client:timeout()
    assert.is_true(t > 0, "timeout " .. t)   -- libcurl's connect timer, not "now"
    client:close()
    silent:close()
  end)

  it("warm(n) opens n verified connections that later calls reuse", function()
    local client = link.new({ base_url = sb.url, cainfo = bundle, max_concurrent = 8 })
    assert.is_true(client:warm(8))
    local m = client._async.engine.m
    assert.equal(8, m:info().connections)
    assert.equal(8, (async_creates(client, 8)))
    assert.equal(8, m:info().connections)     -- no new connection
    client:close()
  end)

  it("warm(n) keeps at most max_concurrent connections", function()
    local client = link.new({ base_url = sb.url, cainfo = bundle, max_concurrent = 2 })
    assert.is_true(client:warm(5))
    assert.equal(2, client._async.engine.m:info().connections)
    client:close()
  end)

  it("the budgets README promises are the module's defaults", function()
    local async = require "portone.link.async"
    local f = assert(io.open("README.md"))
    local readme = f:read("*a"):gsub("%s+", " ")
    f:close()
    local budget = ("less than %s ms (`async.POLL_BUDGET_MS`)"):format(async.POLL_BUDGET_MS)
    assert.truthy(readme:find(budget, 1, true))
    assert.equal(1, async.MAX_OPENING)
    assert.truthy(readme:find("it opens one new connection at a time", 1, true))
    assert.truthy(readme:find(("| `max_concurrent` | %d |"):format(async.DEFAULT_CONCURRENT), 1, true))
  end)

  it("a poll(0) sends queued calls a batch at a time within its budget, the rest later", function()
    local async = require "portone.link.async"
    local saved = async.POLL_BUDGET_MS
    async.POLL_BUDGET_MS = 0.001        -- spent at once: one batch per poll
    local client = link.new({ base_url = sb.url, cainfo = bundle, max_concurrent = 16 })
    -- warm makes the engine (reading the budget), and opens 16 idle
    -- connections: nothing waits on a handshake
    local ok, err = client:warm(16)
    async.POLL_BUDGET_MS = saved
    assert.is_true(ok, tostring(err))
    local m = client._async.engine.m
    local n = 0
    for _ = 1, 16 do
      assert(client:create_async(cases.request(), function(res) if res then n = n + 1 end end))
    end
    client:poll(0)
    local info = m:info()
    -- without the budget all 16 go out in this poll (the next spec)
    assert.equal(4, info.in_flight + info.done + n)
    assert.equal(12, info.queued)
    assert.equal(0, client:timeout())   -- the rest are due now: the loop polls again
    drain(client)
    assert.equal(16, n)
    assert.equal(16, m:info().connections)
    client:close()
  end)

  it("without a budget one poll(0) sends every queued call a slot allows", function()
    local m = core.multi_new({ cainfo = bundle, max_concurrent = 16 })
    local url = sb.url .. "/__sandbox/health"
    for _ = 1, 16 do m:add("GET", url, {}) end
    local list = m:perform(0)
    local info = m:info()
    assert.equal(16, info.in_flight + #list)
    assert.equal(0, info.queued)
    m:close()
  end)

  it("warm drives pending calls too; their callback errors come back, not raised", function()
    local client = link.new({ base_url = sb.url, cainfo = bundle, max_concurrent = 4 })
    local ran = false
    assert(client:create_async(cases.request(), function(res)
      ran = res ~= nil
      error("callback failed")
    end))
    local ok, err, errs = client:warm(2)
    assert.is_true(ok, tostring(err))
    -- the pending create may finish inside warm or at the next poll
    if not ran then
      local _, perrs = client:poll(1000)
      errs = perrs
    end
    assert.is_true(ran)
    assert.truthy(errs and errs[1]:find("callback failed", 1, true))
    client:close()
  end)

  it("warm reports a connection that cannot be verified like any call", function()
    local client = link.new({ base_url = sb.url })   -- the sandbox's cert is not trusted
    local ok, err = client:warm(2)
    assert.is_nil(ok)
    assert.equal("transport", err.kind)
    assert.equal(60, err.curl_code)
    assert.equal(0, client:pending())
    client:close()
  end)

  it("warm checks its argument and refuses a closed client", function()
    local client = link.new({ base_url = sb.url, cainfo = bundle })
    assert.has_error(function() client:warm(0) end)
    assert.has_error(function() client:warm(1.5) end)
    assert.has_error(function() client:warm("2") end)
    client:close()
    local ok, err = client:warm(1)
    assert.is_nil(ok)
    assert.equal("client is closed", err.message)
  end)
end)

describe("TLS sessions shared by a client's handles", function()
  -- openssl s_server -www answers with the session state: "New, TLSv1.3"
  -- for a full handshake, "Reused, TLSv1.3" for a resumed session.
  local socket = require "socket"
  local cert, port, pidf

  lazy_setup(function()
    cert = helper.tls_cert()
    port = require("portone.sandbox").free_port("127.0.0.1")
    pidf = cert.dir .. "/s_server.pid"
    os.execute(("env -u LD_PRELOAD openssl s_server -accept 127.0.0.1:%d -cert %s -key %s -www -quiet"
      .. " >/dev/null 2>&1 & echo $! > %s"):format(port, cert.cert, cert.key, pidf))
    for _ = 1, 200 do
      local c = socket.connect("127.0.0.1", port)
      if c then c:close(); return end
      socket.sleep(0.02)
    end
    error("openssl s_server did not start")
  end)

  lazy_teardown(function()
    if pidf then os.execute("kill $(cat " .. pidf .. ") 2>/dev/null") end
  end)

  local function state(body) return body and body:match("(%a+), TLSv1%.%d") end

  local function multi_get(m, url)
    m:add("GET", url)
    for _ = 1, 200 do
      local list = m:perform(50)
      if list[1] then return list[1] end
    end
  end

  it("a new connection of the async engine resumes the session the sync handle made", function()
    local url = ("https://127.0.0.1:%d/"):format(port)
    local sh = core.share_new()
    local h = core.http_new({ cainfo = cert.cert, share = sh })
    local status, body = h:request("GET", url)
    assert.equal(200, status)
    assert.equal("New", state(body))
    local r = multi_get(core.multi_new({ cainfo = cert.cert, share = sh }), url)
    assert.equal(200, r.status)
    assert.equal("Reused", state(r.body))
    -- without the share the multi handle has no session to resume
    r = multi_get(core.multi_new({ cainfo = cert.cert }), url)
    assert.equal("New", state(r.body))
    h:close()
  end)
end)

describe("core.share_new", function()
  it("is refused where a share is expected unless it is one", function()
    assert.has_error(function() core.http_new({ share = {} }) end,
      "http_new: option 'share' must be a core.share_new() value")
    assert.has_error(function() core.multi_new({ share = io.stdout }) end,
      "multi_new: option 'share' must be a core.share_new() value")
  end)

  it("outlives the handles that use it, whatever order they are collected in", function()
    local sh = core.share_new()
    local h = core.http_new({ share = sh })
    local m = core.multi_new({ share = sh })
    sh = nil -- luacheck: ignore 311
    collectgarbage(); collectgarbage()
    h:close(); m:close()
    h, m = nil, nil -- luacheck: ignore 311
    collectgarbage(); collectgarbage()
    -- the other order: handles collected unclosed (their __gc drops the
    -- share) while the share's userdata lives on, then the share. What
    -- fails here is memory: the ASan and valgrind suites run this file.
    sh = core.share_new()
    core.http_new({ share = sh }); core.multi_new({ share = sh })   -- dropped at once
    collectgarbage(); collectgarbage()
    assert.truthy(core.http_new({ share = sh }))   -- the share still serves a new handle
    sh = nil -- luacheck: ignore 311
    collectgarbage(); collectgarbage()
  end)
end)
