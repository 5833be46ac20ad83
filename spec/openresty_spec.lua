-- The client inside nginx, on cosockets (lua/portone/link/transport/ngx.lua).
--
-- A private nginx with lua-nginx-module (spec/nginx/harness.lua) runs the
-- client; this spec, running under lua5.4 or luajit as a separate host,
-- drives it over HTTP with luasocket:
--
--  * the shared integration cases (spec/helpers/cases.lua) run unchanged: the
--    client they get is a stand-in whose every call executes inside nginx on
--    a real client over the ngx transport (spec/nginx/handlers.lua, /t/proxy);
--  * raw transport behaviour against fake upstreams in the same nginx:
--    framing, size cap, keep-alive reuse, TLS verification and SNI;
--  * the phase rule: outside cosocket phases the client fails with an error
--    that points at ngx.timer.at, it never blocks.
local cjson = require "cjson"
local harness = require "nginx.harness"
local helper = require "helpers.sandbox"
local cases = require "helpers.cases"

local srv -- the test nginx, shared by every describe below

local request = harness.request
local function post(path, body) return srv:post(path, body) end

local function get_text(path)
  local code, text = request("GET", srv.url .. path)
  assert.equal(200, code, text)
  return text
end

-- A client whose calls run inside nginx; same interface as link.new's.
local Proxy = {}
Proxy.__index = Proxy

local function back(v)
  if type(v) ~= "table" then return v end
  return setmetatable(v, { __tostring = function(e) return e.text or e.message end })
end

function Proxy:_call(op, ...)
  local token
  if self.token_fn then token = self.token_fn() end
  local r = post("/t/proxy/call", { id = self.id, op = op, args = { ... }, token = token })
  if r.raised then error(r.raised, 2) end
  if r.ok ~= nil then return r.ok end
  return nil, back(r.err)
end
function Proxy:create(req, opts) return self:_call("create", req, opts) end
function Proxy:deactivate(id) return self:_call("deactivate", id) end
function Proxy:close() return self:_call("close") end

local function ngx_client(base_url, opts)
  opts = cases.merge({ base_url = base_url, transport = "ngx" }, opts)
  local token_fn
  if type(opts.token) == "function" then token_fn, opts.token = opts.token, nil end
  local r = post("/t/proxy/new", { opts = opts, token_fn = token_fn ~= nil, fresh = true })
  if r.raised then error(r.raised, 2) end
  return setmetatable({ id = r.id, token_fn = token_fn }, Proxy)
end

-- Raw transport call inside nginx: returns the decoded list of results.
local function transport(args)
  return post("/t/transport", args)
end

describe("client inside nginx (ngx cosocket transport)", function()
  local tls_sb_cert = helper.tls_cert()          -- the sandbox's self-signed cert
  lazy_setup(function()
    srv = harness.start { extra_ca = { tls_sb_cert.cert } }
  end)
  lazy_teardown(function()
    if srv then srv:stop() end
  end)

  -- The [client] issue's integration cases, one list for both transports.
  cases.run("shared client cases over ngx cosockets", ngx_client, { tags = "#ngx" })

  describe("transport", function()
    local up
    before_each(function() up = srv.upstream end)

    it("keeps connections alive: 20 requests, one connect", function()
      local r = transport { url = up.http .. "/echo?ka", n = 20, method = "POST", body = "x",
        headers = { "X-A: b" } }
      local first
      for i, res in ipairs(r.results) do
        assert.equal(200, res.status)
        local echo = cjson.decode(res.body)
        assert.equal("x", echo.body)
        assert.equal("1", echo.headers["content-length"])
        assert.equal("b", echo.headers["x-a"])
        first = first or echo
        assert.equal(first.connection, echo.connection)
        assert.equal(first.connection_requests + i - 1, echo.connection_requests)
      end
      assert.is_true(r.reuses >= 19)
    end)

    it("reads Content-Length, chunked (with extensions and trailers) and read-to-close bodies", function()
      local r = transport { url = up.http .. "/chunked?n=4" }
      assert.equal("chunk1;chunk2;chunk3;chunk4;", r.results[1].body)
      assert.equal("chunked", r.results[1].headers["transfer-encoding"])
      r = transport { url = up.http .. "/raw/chunked_ext" }
      assert.equal("hello world", r.results[1].body)
      r = transport { url = up.http .. "/raw/close" }
      assert.equal("read until close", r.results[1].body)
      r = transport { url = up.http .. "/raw/http10" }
      assert.equal("old server", r.results[1].body)
      r = transport { url = up.http .. "/raw/continue" }
      assert.equal(201, r.results[1].status)
      assert.equal("a, b", r.results[1].headers["x-multi"])
    end)

    -- libcurl refuses such a URL (the curl transport raises): over cosockets
    -- its CR/LF went into the request line, so a URL could add headers
    it("refuses a URL with CR, LF, white space or other control characters, sending nothing", function()
      for _, u in ipairs({ up.http .. "/echo HTTP/1.1\r\nX-Injected: 1\r\nX-Pad: z",
                           up.http .. "/echo\nX-Injected: 1", up.http .. "/echo?a b",
                           up.http .. "/echo\tx", up.http .. "/echo\0x" }) do
        local r = transport { url = u, method = "POST", body = "x" }
        local res = r.results[1]
        assert.is_nil(res.status, u)
        assert.is_nil(res.body, u)
        assert.equal("transport", res.info.kind, u)
        assert.is_false(res.info.sent, u)
        assert.equal(0, res.info.sends, u)
        assert.truthy(res.info.message:find("URL", 1, true), u)
        assert.equal(0, r.connects + r.reuses, u)
      end
    end)

    it("a HEAD answer has no body whatever its Content-Length says; the connection is kept", function()
      local r = transport { method = "HEAD", url = up.http .. "/echo", n = 2, opts = { timeout = 2 } }
      for _, res in ipairs(r.results) do
        assert.equal(200, res.status, cjson.encode(res.info))
        assert.equal("", res.body)
        assert.truthy(tonumber(res.headers["content-length"]) > 0)
      end
      assert.equal(1, r.connects)
    end)

    it("a closed transport sends nothing, as the curl one", function()
      local r = post("/t/transport/closed", { url = up.http .. "/echo" })
      assert.equal("transport", r.info.kind)
      assert.is_false(r.info.sent)
      assert.equal(0, r.info.sends)
      assert.matches("closed", r.info.message)
    end)

    it("returns lower-case header names", function()
      local r = transport { url = up.http .. "/echo" }
      assert.equal("application/json", r.results[1].headers["content-type"])
      assert.is_nil(r.results[1].headers["Content-Type"])
    end)

    it("enforces the size cap while reading (Content-Length and chunked)", function()
      for _, u in ipairs { "/big?n=5000", "/big?n=5000&chunked=1" } do
        local r = transport { url = up.http .. u, opts = { max_response_bytes = 4096 } }
        local info = r.results[1].info
        assert.equal("transport", info.kind)
        assert.is_true(info.too_large)
        assert.is_true(info.sent)
      end
      local r = transport { url = up.http .. "/big?n=4096", opts = { max_response_bytes = 4096 } }
      assert.equal(4096, #r.results[1].body)
    end)

    it("reports malformed, truncated and reset answers as transport errors, sent", function()
      for _, k in ipairs { "bad_chunk", "truncated", "reset", "garbage", "many_headers", "long_line",
          "two_lengths" } do
        local r = transport { url = up.http .. "/raw/" .. k }
        local info = r.results[1].info
        assert.equal("transport", info.kind, k)
        assert.is_true(info.sent, k)
      end
    end)

    it("a header block over libcurl's caps (256 KB, a 100 KB line) is too_large, as over curl", function()
      for _, k in ipairs { "many_headers", "long_line" } do
        local info = transport({ url = up.http .. "/raw/" .. k }).results[1].info
        assert.is_true(info.too_large, k)
        assert.matches("response header too large", info.message)
      end
    end)

    it("reads what libcurl reads: 150 header lines, 200 KB of headers, a repeated Content-Length, "
        .. "chunk sizes with leading zeros, chunks ended by a bare LF", function()
      for k, want in pairs { lines_150 = "ok", kb_200 = "ok", dup_length = "hello", chunk_zeros = "hello",
          chunk_lf = "hello" } do
        local res = transport({ url = up.http .. "/raw/" .. k }).results[1]
        assert.equal(200, res.status, k .. ": " .. cjson.encode(res.info))
        assert.equal(want, res.body, k)
      end
    end)

    it("a reused connection closed before any answer is sent again on another one", function()
      -- /echo leaves a pooled connection; /raw/reset on it closes with no
      -- answer; the transport sends again, on a fresh connection, which the
      -- server resets too: that failure is reported, sent = true.
      local r = transport { urls = { up.http .. "/echo", up.http .. "/raw/reset" }, drain = true }
      assert.equal(200, r.results[1].status)
      local info = r.results[2].info
      assert.equal("transport", info.kind)
      assert.is_true(info.sent)
      assert.equal(1, r.reuses)
      assert.equal(2, r.connects)
      -- a fresh connection that dies is not re-sent
      r = transport { url = up.http .. "/raw/reset", drain = true }
      assert.is_true(r.results[1].info.sent)
      assert.equal(1, r.connects)
    end)

    it("timeout is one deadline per attempt, even when the body or the header trickles in", function()
      for _, u in ipairs({ "/trickle?n=40&ms=100", "/trickle?n=40&ms=100&head=1" }) do
        local t0 = require("socket").gettime()
        local r = transport { url = up.http .. u, opts = { timeout = 0.5 } }
        local took = require("socket").gettime() - t0
        local info = r.results[1].info
        assert.truthy(info, u)
        assert.equal("timeout", info.kind, u)
        assert.is_true(info.sent)
        assert.is_true(took < 2, u .. " took " .. took .. " s; the answer lasts 4 s")
      end
    end)

    it("max_sends bounds the re-sends over dead pooled connections; sends counted", function()
      -- the pooled connection dies under the request; so does the fresh one
      local r = transport { urls = { up.http .. "/echo?sleep_ms=1", up.http .. "/raw/reset",
        up.http .. "/raw/reset" }, drain = true, opts = {} }
      assert.equal(200, r.results[1].status)
      assert.equal(2, r.results[2].info.sends)        -- reused + one fresh
      assert.is_true(r.results[2].info.sent)
      r = transport { urls = { up.http .. "/echo", up.http .. "/raw/reset" }, drain = true,
        max_sends = 1 }
      assert.equal(1, r.results[2].info.sends)
      assert.equal(1, r.connects)
    end)

    it("connection refused is not sent; a read timeout is kind timeout", function()
      local port = harness.free_port()
      local r = transport { url = "http://127.0.0.1:" .. port .. "/" }
      assert.equal("transport", r.results[1].info.kind)
      assert.is_false(r.results[1].info.sent)
      assert.matches("refused", r.results[1].info.message)
      r = transport { url = up.http .. "/echo?sleep_ms=1000", opts = { timeout = 0.2 } }
      assert.equal("timeout", r.results[1].info.kind)
      assert.is_true(r.results[1].info.sent)
    end)

    it("a host name without a resolver fails with a hint, nothing sent", function()
      local r = transport { url = "https://api.iamport.invalid/x" }
      local info = r.results[1].info
      assert.is_false(info.sent)
      assert.matches("resolver", info.message)
    end)

    it("a resolver that does not answer is a timeout before sending (nginx's resolver_timeout)", function()
      local r = post("/t/slowdns/transport", { url = "https://api.iamport.invalid/x",
        opts = { timeout = 30, connect_timeout = 5 } })
      local info = r.results[1].info
      assert.equal("timeout", info.kind, info.message)
      assert.is_false(info.sent)
      assert.matches("could not be resolved", info.message)
    end)

    it("TLS: verifies the certificate (lua_ssl_trusted_certificate) with SNI, keeps it alive", function()
      local r = transport { url = up.https .. "/echo", n = 3 }
      for _, res in ipairs(r.results) do
        assert.equal(200, res.status)
        assert.equal("https", cjson.decode(res.body).scheme)
      end
      assert.is_true(r.reuses >= 2)
    end)

    it("TLS: an untrusted certificate fails the handshake, nothing sent, permanent", function()
      local r = transport { url = up.rogue .. "/echo", n = 3 }
      assert.equal(3, #r.results)
      for _, res in ipairs(r.results) do
        local info = res.info
        assert.equal("transport", info.kind)
        assert.is_false(info.sent)
        assert.equal(0, info.sends)
        assert.is_true(info.permanent)
        assert.matches("certificate", info.message)
      end
    end)

    it("TLS: a host-name mismatch fails cleanly (no raise), nothing sent, permanent", function()
      local r = transport { url = up.other .. "/echo", n = 3 }
      assert.equal(3, #r.results)
      for _, res in ipairs(r.results) do
        local info = res.info
        assert.equal("transport", info.kind)
        assert.is_false(info.sent)
        assert.is_true(info.permanent)
        assert.matches("TLS handshake", info.message)
      end
    end)

    it("TLS: the client never retries a certificate failure and reports it unsent", function()
      for _, u in ipairs({ up.rogue, up.other }) do
        local r = post("/t/client", { opts = { base_url = u, retries = 2, retry_base = 0.01 },
          calls = { { op = "create" }, { op = "create" } } })
        assert.equal(2, #r.results, u)
        for _, res in ipairs(r.results) do
          local err = res.err
          assert.equal("transport", err.kind, u)
          assert.is_false(err.sent, err.message)
          assert.is_false(err.retryable)
          assert.equal(0, err.attempts)
          assert.is_nil(err.message:find("send failed", 1, true), err.message)
        end
      end
    end)

    it("is available in the content phase", function()
      local r = cjson.decode(get_text("/t/available"))
      assert.is_true(r.ok)
    end)
  end)

  describe("concurrency inside one worker", function()
    local sb
    lazy_setup(function() sb = helper.start() end)
    lazy_teardown(function() if sb then sb:stop() end end)

    it("create_many over ngx.thread: 10 links at 200 ms latency, 5 at a time, in ~0.4 s", function()
      assert(sb:latency(200))
      local c = ngx_client(sb.url, {})
      local reqs = {}
      for i = 1, 10 do reqs[i] = cases.request() end
      local t0 = require("socket").gettime()
      local results = assert(c:_call("create_many", reqs, { concurrency = 5 }))
      local elapsed = require("socket").gettime() - t0
      assert.equal(10, #results)
      for i, r in ipairs(results) do assert.truthy(r.res and r.res.id, "result " .. i) end
      assert.equal(10, assert(sb:stats()).creates)
      -- one at a time would take 2 s; the bound leaves room for a loaded machine
      assert.is_true(elapsed < 1.4, "took " .. elapsed .. " s: the calls did not overlap")
      c:close()
    end)
  end)

  describe("create_many of a merchant_uid listed twice, inside nginx", function()
    local sb
    lazy_setup(function() sb = helper.start() end)
    lazy_teardown(function() if sb then sb:stop() end end)

    it("sends it once, the later entry a duplicate error; allow_duplicates sends both", function()
      local c = ngx_client(sb.url, {})
      local first, other = cases.request(), cases.request()
      local again = cases.request({ merchant_uid = first.merchant_uid })
      local reqs = { first, other, again }
      local results = assert(c:_call("create_many", reqs, { concurrency = 3 }))
      assert.equal(3, #results)
      assert.truthy(results[1].res and results[2].res)
      local e = results[3].err
      assert.equal("validation", e.kind)
      assert.equal("merchant_uid", e.errors[1].field)
      assert.equal("duplicate", e.errors[1].code)
      assert.truthy(e.errors[1].message:find("[1]", 1, true), e.errors[1].message)
      assert.is_false(e.sent)
      assert.equal(0, e.attempts)
      assert.equal(2, assert(sb:stats()).creates)
      assert(sb:reset())
      results = assert(c:_call("create_many", reqs, { concurrency = 3, allow_duplicates = true }))
      for i = 1, 3 do assert.truthy(results[i].res, "result " .. i) end
      assert.equal(3, assert(sb:stats()).creates)
      c:close()
    end)
  end)

  describe("sends per call over a pool of dead connections", function()
    local sb
    lazy_setup(function() sb = helper.start() end)
    lazy_teardown(function() if sb then sb:stop() end end)

    it("a create is sent at most twice though five pooled connections die under it", function()
      assert(sb:latency(150))
      local c = ngx_client(sb.url, {})
      local reqs = {}
      for i = 1, 6 do reqs[i] = cases.request() end
      assert(c:_call("create_many", reqs, { concurrency = 6 }))  -- six pooled connections
      assert(sb:latency(0))
      local faults = {}
      for i = 1, 5 do faults[i] = { reset_after = true } end
      assert(sb:faults("create", faults))
      local res, err = c:create(cases.request())
      assert.is_nil(res)
      assert.is_true(err.sent)
      assert.equal(2, err.attempts, err.message)
      assert.equal(6 + 2, assert(sb:stats()).creates)
      c:close()
    end)
  end)

  describe("the OpenResty example's on_attempt counter", function()
    local sb, ex
    lazy_setup(function()
      sb = helper.start()
      ex = harness.start { env = { PORTONE_LINK_BASE_URL = sb.url } }
    end)
    lazy_teardown(function()
      if ex then ex:stop() end
      if sb then sb:stop() end
    end)

    it("counts every attempt in a lua_shared_dict; a 503 then a 200", function()
      assert(sb:faults("create", { { status = 503 } }))
      local code, body = request("POST", ex.url .. "/orders/link", cjson.encode({ order_id = "A-1",
        amount = 15000, name = "T-shirt", buyer_tel = "010-1234-5678" }), "application/json")
      assert.equal(201, code, body)
      local _, text = request("GET", ex.url .. "/orders/metrics")
      assert.matches("create.attempts.http 1", text, 1, true)
      assert.matches("create.attempts.200 1", text, 1, true)
      assert.matches("create.sends 2", text, 1, true)
    end)
  end)

  describe("client over TLS to the sandbox", function()
    local sb
    lazy_setup(function() sb = helper.start { tls = tls_sb_cert } end)
    lazy_teardown(function() if sb then sb:stop() end end)

    it("creates and deactivates over verified TLS, reusing one connection", function()
      local c = ngx_client("https://localhost:" .. sb.port, {})
      for _ = 1, 5 do
        local res, err = c:create(cases.request())
        assert.is_nil(err)
        assert.is_true(c:deactivate(res.id))
      end
      local s = assert(sb:stats())
      assert.equal(10, s.requests)
      assert.equal(1, s.connections)
      c:close()
    end)
  end)

  describe("client over TLS to an untrusted sandbox", function()
    local sb
    lazy_setup(function() sb = helper.start { tls = helper.wrong_host_cert() } end)
    lazy_teardown(function() if sb then sb:stop() end end)

    it("fails with a transport error and never sends the request", function()
      local c = ngx_client("https://localhost:" .. sb.port, { retries = 0 })
      local res, err = c:create(cases.request())
      assert.is_nil(res)
      assert.equal("transport", err.kind)
      assert.is_false(err.sent)
      assert.equal(0, assert(sb:stats()).requests)
      c:close()
    end)
  end)

  describe("phases without cosockets", function()
    local function check(text, phase)
      assert.matches("ngx.timer.at", text, 1, true)
      assert.matches("'" .. phase .. "' phase", text, 1, true)
      -- no cosockets is permanent: one attempt, no back-off (ngx.sleep is
      -- not allowed in these phases either)
      assert.is_nil(text:find("attempts", 1, true))
    end

    it("init_by_lua: the client fails with a pointer to ngx.timer.at", function()
      check(get_text("/t/phase?name=init"), "init")
    end)

    it("init_worker_by_lua: the same", function()
      check(get_text("/t/phase?name=init_worker"), "init_worker")
    end)

    it("set_by_lua: the same", function()
      check(get_text("/t/phase/set"), "set")
    end)

    it("log_by_lua and header_filter_by_lua: the same", function()
      assert.equal("ok\n", get_text("/t/phase/log"))
      assert.equal("ok\n", get_text("/t/phase/header_filter"))
      -- the log phase runs after the answer was sent
      local socket = require "socket"
      local text
      local deadline = socket.gettime() + 5
      repeat
        text = get_text("/t/phase?name=log")
        if not text:find("nothing recorded", 1, true) then break end
        socket.sleep(0.02)
      until socket.gettime() > deadline
      check(text, "log")
      check(get_text("/t/phase?name=header_filter"), "header_filter")
    end)
  end)
end)
