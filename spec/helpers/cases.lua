--- Integration cases for a link client, shared by every transport.
--
--   require("helpers.cases").run("client over curl", function(base_url, opts)
--     return link.new(merge({ base_url = base_url }, opts))
--   end)
--
-- `make_client(base_url, opts)` must return a client whose create/deactivate
-- follow the contract; `opts` holds client options (timeout, retries,
-- retry_base, max_response_bytes, ...). `run_opts.skip` is a set of case
-- names to leave out, `run_opts.tags` is appended to every case name (e.g.
-- "#ngx"). Each `describe` starts its own sandbox on a free loopback port.
local helper = require "helpers.sandbox"
-- A helper module does not see the spec file's busted globals.
local busted = require "busted"
local describe, it = busted.describe, busted.it
local lazy_setup, lazy_teardown, before_each = busted.lazy_setup, busted.lazy_teardown, busted.before_each
local assert = require "luassert"

local M = {}

-- Short back-off so that retried cases stay fast.
M.FAST = { retry_base = 0.01, retry_cap = 0.05 }

local seq = 0
--- A valid create request with a fresh merchant_uid.
function M.request(over)
  seq = seq + 1
  local req = {
    title = "Spec link", user_code = "imp12345678", amount = 10000,
    merchant_uid = ("spec-%d-%d"):format(os.time(), seq), name = "Item",
    currency = "KRW", buyer_tel = "010-1234-5678",
    pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "Card" } },
    expired_at = os.time() + 3600,
  }
  for k, v in pairs(over or {}) do req[k] = v end
  return req
end

local function merge(a, b)
  local t = {}
  for k, v in pairs(a or {}) do t[k] = v end
  for k, v in pairs(b or {}) do t[k] = v end
  return t
end
M.merge = merge

local function now() return require("socket").gettime() end

--- Every string reachable from v, keys too (metatables skipped), depth
-- first: what a secret must be in none of.
function M.strings(v, out, seen)
  out, seen = out or {}, seen or {}
  if type(v) == "string" then out[#out + 1] = v
  elseif type(v) == "table" and not seen[v] then
    seen[v] = true
    for k, x in pairs(v) do M.strings(k, out, seen); M.strings(x, out, seen) end
  end
  return out
end

function M.run(name, make_client, run_opts)
  run_opts = run_opts or {}
  local skip = run_opts.skip or {}
  local tags = run_opts.tags and (" " .. run_opts.tags) or ""

  describe(name, function()
    local sb
    local clients = {}

    lazy_setup(function() sb = helper.start() end)
    lazy_teardown(function()
      for _, c in ipairs(clients) do c:close() end
      if sb then sb:stop() end
    end)
    before_each(function() assert(sb:reset()) end)

    local function client(opts)
      local c = make_client(sb.url, merge(M.FAST, opts))
      clients[#clients + 1] = c
      return c
    end
    local function case(cname, fn)
      if skip[cname] then return end
      it(cname .. tags, fn)
    end
    local function stats() return assert(sb:stats()) end

    local function create_fails(opts, faults, kind, attempts)
      local c = client(opts)
      assert(sb:faults("create", faults))
      local res, err = c:create(M.request())
      assert.is_nil(res)
      assert.equal(kind, err.kind, tostring(err))
      assert.equal(attempts, err.attempts, tostring(err))
      assert.equal(attempts, stats().requests)
      return err
    end

    -- ----------------------------------------------------------------- create
    case("create returns url, id and status", function()
      local res, err = client():create(M.request())
      assert.is_nil(err)
      assert.equal(200, res.status)
      assert.matches("^[A-Za-z0-9_-]+$", res.id)
      assert.equal(sb.url .. "/" .. res.id, res.url)
      assert.equal(1, stats().creates)
    end)

    case("create sends the contract's headers and a double-encoded body", function()
      local c = client({ token = "tok-123", user_agent = "spec/1" })
      assert(c:create(M.request()))
      local r = assert(sb:requests())[1]
      assert.equal("POST", r.method)
      assert.equal(helper.API, r.uri)
      assert.equal("application/json;charset=UTF-8", r.headers["content-type"])
      -- no Accept of ours: libcurl's default, or none over cosockets
      assert.is_true(r.headers["accept"] == nil or r.headers["accept"] == "*/*",
        tostring(r.headers["accept"]))
      assert.equal("Bearer tok-123", r.headers["authorization"])
      assert.matches("^portone%-link/%d+%.%d+%.%d+ spec/1$", r.headers["user-agent"])
      local body = require("cjson").decode(r.body)
      assert.equal("string", type(body.payment_info))
      assert.equal("number", type(body.expired_at))
    end)

    case("a token function is called for every request", function()
      local n = 0
      local c = client({ token = function() n = n + 1; return "t" .. n end })
      assert(c:create(M.request()))
      assert(c:create(M.request()))
      local rs = assert(sb:requests())
      assert.equal("Bearer t1", rs[1].headers["authorization"])
      assert.equal("Bearer t2", rs[2].headers["authorization"])
    end)

    -- ------------------------------------------------------------- deactivate
    case("deactivate by url and by id; twice is success", function()
      local c = client()
      local res = assert(c:create(M.request()))
      assert.is_true(c:deactivate(res.url))
      assert.is_true(c:deactivate(res.id))
      assert.equal(2, stats().deactivates)
      local rs = assert(sb:requests())
      assert.equal("PUT", rs[2].method)
      assert.equal(helper.API .. "/" .. res.id, rs[2].uri)
      assert.equal("0", tostring(rs[2].headers["content-length"] or "0"))
      assert.is_nil(rs[2].headers["content-type"])
    end)

    case("deactivate of an unknown link is http 404, not retried", function()
      local ok, err = client():deactivate("nosuchlink")
      assert.is_nil(ok)
      assert.equal("http", err.kind)
      assert.equal(404, err.status)
      assert.equal(1, err.attempts)
      assert.is_false(err.retryable)
    end)

    -- ----------------------------------------------------------------- expiry
    case("expired: a past expired_at never leaves the client", function()
      local res, err = client():create(M.request({ expired_at = os.time() - 10 }))
      assert.is_nil(res)
      assert.equal("validation", err.kind)
      assert.equal(0, stats().requests)
    end)

    case("expired: the server's clock says the expiry passed -> http 400, one attempt", function()
      assert(sb:clock(7200))
      local res, err = client():create(M.request({ expired_at = os.time() + 3600 }))
      assert.is_nil(res)
      assert.equal("http", err.kind)
      assert.equal(400, err.status)
      assert.equal(1, err.attempts)
      assert.truthy(err.body and err.body:find("expired_at", 1, true))
    end)

    -- ----------------------------------------------------------- create faults
    case("create: 500 is not retried", function()
      local err = create_fails(nil, { { status = 500 } }, "http", 1)
      assert.equal(500, err.status)
      assert.is_false(err.retryable)
    end)

    case("create: 502 is not retried", function()
      local err = create_fails(nil, { { status = 502 } }, "http", 1)
      assert.equal(502, err.status)
    end)

    case("create: 503 is retried up to `retries`", function()
      local err = create_fails({ retries = 2 }, { { status = 503 }, { status = 503 }, { status = 503 } },
        "http", 3)
      assert.equal(503, err.status)
      assert.is_true(err.retryable)
    end)

    case("create: 503 then success", function()
      local c = client()
      assert(sb:faults("create", { { status = 503 } }))
      local res = assert(c:create(M.request()))
      assert.equal(200, res.status)
      assert.equal(2, stats().requests)
      assert.equal(1, stats().creates)
    end)

    case("create: 429 with Retry-After waits that long, then succeeds", function()
      local c = client()
      assert(sb:faults("create", { { status = 429, retry_after = 1 } }))
      local t0 = now()
      assert(c:create(M.request()))
      assert.is_true(now() - t0 >= 0.9)
      assert.equal(2, stats().requests)
    end)

    case("create: a Retry-After beyond retry_after_max is not waited for", function()
      local err = create_fails({ retry_after_max = 2 }, { { status = 429, retry_after = 60 } }, "http", 1)
      assert.equal(429, err.status)
      assert.equal(60, err.retry_after)
      assert.is_true(err.retryable)
    end)

    case("create: connection reset is not retried (it may have reached the server)", function()
      local err = create_fails(nil, { { reset = true } }, "transport", 1)
      assert.is_true(err.sent)
      assert.is_false(err.retryable)
    end)

    case("create: delay beyond the timeout is kind timeout, not retried", function()
      local err = create_fails({ timeout = 0.3 }, { { delay_ms = 1500 } }, "timeout", 1)
      assert.is_false(err.retryable)
    end)

    case("create: slow body beyond the timeout is kind timeout", function()
      create_fails({ timeout = 0.3 }, { { slow_body_ms = 1500 } }, "timeout", 1)
    end)

    case("create: truncated body is kind transport", function()
      create_fails(nil, { { truncate = true } }, "transport", 1)
    end)

    case("create: garbage body is kind decode", function()
      local err = create_fails(nil, { { garbage = true } }, "decode", 1)
      assert.equal(200, err.status)
      assert.truthy(#err.body <= 512)
    end)

    case("create: oversized body is cut off while reading", function()
      local err = create_fails({ max_response_bytes = 64 * 1024 }, { { oversize = 2 * 1024 * 1024 } },
        "transport", 1)
      assert.is_true(err.too_large)
      assert.is_false(err.retryable)
    end)

    case("create: a redirect is not followed", function()
      local err = create_fails(nil, { { redirect = sb.url .. helper.API } }, "http", 1)
      assert.equal(302, err.status)
      assert.equal(1, stats().requests)
      assert.equal(0, stats().creates)
    end)

    case("create: connection refused is retried (never reached the server)", function()
      local port = require("portone.sandbox").free_port("127.0.0.1")
      local c = make_client("http://127.0.0.1:" .. port, merge(M.FAST, { retries = 2 }))
      clients[#clients + 1] = c
      local res, err = c:create(M.request())
      assert.is_nil(res)
      assert.equal("transport", err.kind)
      assert.is_false(err.sent)
      assert.is_true(err.retryable)
      assert.equal(0, err.attempts)       -- attempts counts sends: none
    end)

    -- ---------------------------------------------------------- sends per call
    -- reset_after: the sandbox handles the request (a create makes its link),
    -- then closes the connection without an answer.
    case("sends: a reused connection reset after the request was read is sent at most twice, both counted",
        function()
      local c = client()
      assert(c:create(M.request()))             -- leaves a kept-alive connection
      assert(sb:faults("create", { { reset_after = true }, { reset_after = true }, { reset_after = true } }))
      local res, err = c:create(M.request())
      assert.is_nil(res)
      assert.equal("transport", err.kind, tostring(err))
      assert.is_true(err.sent)
      assert.is_false(err.retryable)
      assert.equal(2, err.attempts, tostring(err))
      local s = stats()
      assert.equal(3, s.requests)
      assert.equal(3, s.creates)                -- the caller is told of both sends
    end)

    case("sends: a success after a silent re-send says attempts = 2", function()
      local c = client()
      assert.equal(1, assert(c:create(M.request())).attempts)
      assert(sb:faults("create", { { reset_after = true } }))
      local res = assert(c:create(M.request()))
      assert.equal(2, res.attempts)
      assert.equal(3, stats().creates)
    end)

    case("sends: a 503 after a send that got no answer ends a create: the link may exist", function()
      local c = client({ retries = 2 })
      assert(c:create(M.request()))
      assert(sb:faults("create", { { reset_after = true }, { status = 503 } }))
      local res, err = c:create(M.request())
      assert.is_nil(res)
      assert.equal("http", err.kind, tostring(err))
      assert.equal(503, err.status)
      assert.equal(1, err.unanswered)     -- the reset one: the sandbox made its link
      assert.is_false(err.retryable)      -- retrying could make a second link
      assert.equal(2, err.attempts, tostring(err))
      assert.equal(1 + 2, stats().requests)
      assert.equal(1 + 1, stats().creates)   -- the first create and the reset one
    end)

    case("sends: an answered retry carries no unanswered count", function()
      local c = client({ retries = 1 })
      assert(c:create(M.request()))
      assert(sb:faults("create", { { status = 503 }, { status = 503 } }))
      local res, err = c:create(M.request())
      assert.is_nil(res)
      assert.equal(503, err.status)
      assert.is_nil(err.unanswered)
      assert.is_true(err.retryable)
      assert.equal(2, err.attempts)
    end)

    case("sends: the one re-send is per call, not per retry (503 between two resets)", function()
      -- a deactivate (idempotent) is retried after an unanswered send; one
      -- retry, so a second re-send would show as a 4th send
      local c = client({ retries = 1 })
      local made = assert(c:create(M.request()))
      assert(sb:faults("deactivate", { { reset_after = true }, { status = 503 }, { reset_after = true },
        { reset_after = true } }))
      local before = stats().requests
      local ok, err = c:deactivate(made.id)
      assert.is_nil(ok)
      assert.equal("transport", err.kind, tostring(err))
      assert.equal(3, err.attempts, tostring(err))   -- reset, 503, reset: not sent a 4th time
      assert.equal(2, err.unanswered)
      assert.equal(before + 3, stats().requests)
    end)

    -- ------------------------------------------------------------- secrets
    case("secrets: a token echoed in code, message and body (also as \\/) reaches no field", function()
      local token = "tok/en-12345"
      local c = client({ token = token, retries = 0 })
      local body = '{"code":"tok/en-12345","message":"token tok\\/en-12345 refused",'
        .. '"echo":"tok\\/en-12345 tok%2Fen-12345"}'
      for _, status in ipairs({ 400, 200 }) do
        assert(sb:faults("create", { { status = status, body = body } }))
        local res, err = c:create(M.request())
        assert.is_nil(res)
        local text = tostring(err)
        for _, form in ipairs({ "tok/en", "tok\\/en", "tok%2Fen" }) do
          assert.is_nil(text:find(form, 1, true), text)
          for _, v in ipairs(M.strings(err)) do assert.is_nil(v:find(form, 1, true), v) end
        end
        assert.equal("[token]", err.code)
      end
    end)

    -- ---------------------------------------------------------- Retry-After
    -- Ignored, not waited for: with retry_after_max = 0 any Retry-After read
    -- as a number of seconds would end the call (err.retry_after) instead of
    -- the backoff retry that succeeds; no wall clock needed for that. The
    -- parse's own cost is bounded in delivery_spec ("linear time"); the 10 s
    -- here only catches a hang, with room for the sanitizer runs.
    case("Retry-After: a 60 KB value is ignored at once (no quadratic trim)", function()
      local c = client({ timeout = 5, retry_after_max = 0 })
      assert(sb:faults("create", { { status = 429, retry_after = "1" .. (" "):rep(60000) .. "1" } }))
      local t0 = now()
      local res, err = c:create(M.request())
      assert.truthy(res, tostring(err))
      assert.equal(2, res.attempts)
      assert.is_true(now() - t0 < 10)
    end)

    case("a 200 KB response header reads 'response header too large', not out of memory", function()
      local c = client({ retries = 0 })
      assert(sb:faults("create", { { status = 429, retry_after = ("1"):rep(200000) } }))
      local res, err = c:create(M.request())
      assert.is_nil(res)
      assert.equal("transport", err.kind)
      assert.truthy(err.message:find("header too large", 1, true), err.message)
      assert.is_nil(err.message:lower():find("out of memory", 1, true))
      assert.is_true(err.sent)
      assert.equal(1, err.attempts)
    end)

    case("deactivate: a response header too large is too_large and not retried", function()
      -- a 200 KB line: over libcurl's 100 KB line limit and the ngx
      -- transport's; both say too_large, which no retry can fix
      local c = client()
      local res = assert(c:create(M.request()))
      assert(sb:faults("deactivate", { { status = 500, retry_after = ("1"):rep(200000) } }))
      local before = stats().requests
      local ok, err = c:deactivate(res.id)
      assert.is_nil(ok)
      assert.equal("transport", err.kind)
      assert.is_true(err.too_large, tostring(err))
      assert.is_false(err.retryable)
      assert.equal(1, err.attempts)
      assert.equal(1, stats().requests - before)
    end)

    -- ------------------------------------------------------ deactivate URLs
    case("deactivate(url): only a bare id or a URL on the link host", function()
      local c = client()
      local res = assert(c:create(M.request()))
      for _, bad in ipairs({ "https://evil.example/" .. res.id, sb.url .. "/x/../" .. res.id,
          sb.url .. "\\@evil/" .. res.id, "https:///" .. res.id, sb.url .. "/a/" .. res.id }) do
        local ok, err = c:deactivate(bad)
        assert.is_nil(ok, bad)
        assert.equal("bad_id", err.errors[1].code, bad)
      end
      assert.equal(0, stats().deactivates)
      assert.is_true(c:deactivate(res.url))
      assert.is_true(c:deactivate(res.id))
    end)

    -- ------------------------------------------------------- deactivate faults
    local function deactivate_with(opts, faults)
      local c = client(opts)
      local res = assert(c:create(M.request()))
      assert(sb:faults("deactivate", faults))
      local before = stats().requests
      local ok, err = c:deactivate(res.id)
      return ok, err, stats().requests - before
    end

    case("deactivate: 500 and 502 are retried, then success", function()
      local ok, err, n = deactivate_with(nil, { { status = 500 }, { status = 502 } })
      assert.is_true(ok, tostring(err))
      assert.equal(3, n)
    end)

    case("deactivate: 503 on every attempt gives up after `retries`", function()
      local ok, err, n = deactivate_with({ retries = 1 }, { { status = 503 }, { status = 503 } })
      assert.is_nil(ok)
      assert.equal("http", err.kind)
      assert.equal(2, err.attempts)
      assert.equal(2, n)
    end)

    case("deactivate: 429 with Retry-After, then success", function()
      local ok, _, n = deactivate_with(nil, { { status = 429, retry_after = 0 } })
      assert.is_true(ok)
      assert.equal(2, n)
    end)

    case("deactivate: timeouts are retried", function()
      local ok, err, n = deactivate_with({ timeout = 0.3 }, { { delay_ms = 1000 }, { slow_body_ms = 1000 } })
      assert.is_true(ok, tostring(err))
      assert.equal(3, n)
    end)

    case("deactivate: timeout on every attempt is kind timeout", function()
      local ok, err = deactivate_with({ timeout = 0.3, retries = 1 },
        { { delay_ms = 1000 }, { delay_ms = 1000 } })
      assert.is_nil(ok)
      assert.equal("timeout", err.kind)
      assert.equal(2, err.attempts)
      assert.is_true(err.retryable)
    end)

    case("deactivate: connection reset is retried", function()
      local ok, err = deactivate_with(nil, { { reset = true }, { reset = true } })
      assert.is_true(ok, tostring(err))
    end)

    case("deactivate: truncated, garbage, oversize and redirect answers", function()
      local ok, err = deactivate_with({ retries = 0 }, { { truncate = true } })
      assert.is_nil(ok); assert.equal("transport", err.kind)
      ok, err = deactivate_with(nil, { { garbage = true } })
      assert.is_nil(ok); assert.equal("decode", err.kind); assert.equal(1, err.attempts)
      ok, err = deactivate_with({ max_response_bytes = 4096 }, { { oversize = 100000 } })
      assert.is_nil(ok); assert.is_true(err.too_large); assert.equal(1, err.attempts)
      ok, err = deactivate_with(nil, { { redirect = "http://127.0.0.1:1/" } })
      assert.is_nil(ok); assert.equal(302, err.status); assert.equal(1, err.attempts)
    end)

    -- ------------------------------------------------------------ keep-alive
    case("100 creates on one client use one TCP connection", function()
      local c = client()
      for _ = 1, 100 do assert(c:create(M.request())) end
      local s = stats()
      assert.equal(100, s.creates)
      assert.equal(1, s.connections)
      if c.connections then assert.equal(1, c:connections()) end
    end)

    -- ---------------------------------------------------------------- closing
    case("a closed client returns an error and never crashes", function()
      local c = client()
      assert(c:create(M.request()))
      c:close()
      c:close()
      local res, err = c:create(M.request())
      assert.is_nil(res)
      assert.equal("transport", err.kind)
      assert.matches("closed", err.message)
      local ok, err2 = c:deactivate("abc")
      assert.is_nil(ok)
      assert.equal("transport", err2.kind)
    end)
  end)
end

return M
