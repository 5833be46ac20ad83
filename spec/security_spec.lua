-- Security rules of the link client (DESIGN §4), one spec each.
local link = require "portone.link"
local core = require "portone.link.core"
local cases = require "helpers.cases"
local helper = require "helpers.sandbox"

local FAST = cases.FAST

describe("TLS verification", function()
  local sb, cert
  lazy_setup(function()
    cert = helper.tls_cert()
    sb = helper.start({ tls = cert })
  end)
  lazy_teardown(function() if sb then sb:stop() end end)
  before_each(function() sb:reset() end)

  it("serves https", function()
    assert.matches("^https://127%.0%.0%.1:%d+$", sb.url)
  end)

  it("rejects the sandbox's self-signed certificate without cainfo", function()
    local c = link.new(cases.merge(FAST, { base_url = sb.url }))
    local res, err = c:create(cases.request())
    assert.is_nil(res)
    assert.equal("transport", err.kind)
    assert.equal(60, err.curl_code) -- CURLE_PEER_FAILED_VERIFICATION
    assert.is_false(err.sent)
    assert.is_false(err.retryable) -- a retry cannot fix a certificate
    assert.equal(0, err.attempts)  -- attempts counts sends: nothing was sent
    assert.equal(0, sb:stats().requests)
    c:close()
  end)

  it("accepts it with cainfo", function()
    local c = link.new({ base_url = sb.url, cainfo = cert.cert })
    local res = assert(c:create(cases.request()))
    assert.equal(200, res.status)
    assert.is_true(c:deactivate(res.url))
    c:close()
  end)

  it("rejects a trusted certificate for another host name", function()
    local wrong = helper.wrong_host_cert()
    local sb2 = helper.start({ tls = wrong })
    local c = link.new(cases.merge(FAST, { base_url = sb2.url, cainfo = wrong.cert }))
    local res, err = c:create(cases.request())
    sb2:stop()
    c:close()
    assert.is_nil(res)
    assert.equal("transport", err.kind)
    assert.equal(60, err.curl_code)
  end)
end)

describe("https only", function()
  it("refuses plain http to a non-loopback host", function()
    for _, u in ipairs({ "http://api.iamport.co", "http://10.0.0.1:8080", "http://example.com/x",
        "HTTP://api.iamport.co", "http://127.0.0.1.nip.io", "http://[::2]",
        -- 127.x.x.x look-alikes that are no address: libcurl and nginx
        -- look them up in DNS, whose answer could be any host
        "http://127.999.0.1", "http://127.0.0.256", "http://127.0.0.099:8080", "http://127.0.0.0400" }) do
      local ok, msg = pcall(link.new, { base_url = u })
      assert.is_false(ok, u)
      assert.truthy(tostring(msg):find("base_url", 1, true))
    end
  end)

  it("allows plain http to loopback, and elsewhere only with insecure_http = true", function()
    for _, u in ipairs({ "http://127.0.0.1:1", "http://localhost:8080", "http://[::1]:9",
        "http://127.1.2.3" }) do
      link.new({ base_url = u }):close()
    end
    link.new({ base_url = "http://example.com", insecure_http = true }):close()
  end)

  it("refuses other schemes", function()
    for _, u in ipairs({ "ftp://api.iamport.co", "file:///etc/passwd", "gopher://x", "//x" }) do
      assert.is_false((pcall(link.new, { base_url = u })), u)
    end
  end)

  -- such a host passed link.new and raised inside every later call (libcurl
  -- refuses the URL): the CLI died with a traceback
  it("refuses a host with white space, control characters or escapes, at new", function()
    local rest = require "portone.link.rest"
    for _, u in ipairs({ "https://api.iamport.co x", "https://evil\r\nX-Evil", "https://a\0b",
        "https://api.iamport.co\t", "https://ex%41mple.com", "http://127.0.0.%31",
        "https://api.iamport.co%0d%0aX-A", "https://a\\b", "https://[::1" }) do
      local ok, msg = pcall(link.new, { base_url = u })
      assert.is_false(ok, u)
      assert.truthy(tostring(msg):find("base_url", 1, true), u)
      ok, msg = pcall(rest.new, { base_url = u, imp_key = "k", imp_secret = "s" })
      assert.is_false(ok, u)
      assert.truthy(tostring(msg):find("base_url", 1, true), u)
    end
    -- names, addresses and ports as they are written
    for _, u in ipairs({ "https://api.iamport.co", "https://my_host.internal:8443", "https://10.0.0.1",
        "https://[2001:db8::1]:443", "http://localhost:1" }) do
      link.new({ base_url = u }):close()
    end
  end)

  it("the C transport speaks http and https only", function()
    local h = core.http_new({ timeout = 2 })
    local status, info = h:request("GET", "file:///etc/passwd")
    assert.is_nil(status)
    assert.equal("transport", info.kind)
    assert.equal(1, info.curl_code) -- CURLE_UNSUPPORTED_PROTOCOL
    assert.is_false(info.sent)
    h:close()
  end)
end)

describe("responses", function()
  local sb
  lazy_setup(function() sb = helper.start() end)
  lazy_teardown(function() if sb then sb:stop() end end)
  before_each(function() sb:reset() end)

  it("never follows a redirect", function()
    local c = link.new(cases.merge(FAST, { base_url = sb.url }))
    assert(sb:faults("any", { { redirect = sb.url .. helper.API } }))
    local res, err = c:create(cases.request())
    assert.is_nil(res)
    assert.equal("http", err.kind)
    assert.equal(302, err.status)
    assert.equal(1, sb:stats().requests) -- the Location was not fetched
    c:close()
  end)

  it("caps the response size while reading", function()
    local c = link.new(cases.merge(FAST, { base_url = sb.url, max_response_bytes = 16 * 1024 }))
    assert(sb:faults("create", { { oversize = 64 * 1024 * 1024 } }))
    local res, err = c:create(cases.request())
    assert.is_nil(res)
    assert.equal("transport", err.kind)
    assert.is_true(err.too_large)
    assert.equal(23, err.curl_code) -- CURLE_WRITE_ERROR: aborted by the write callback
    assert.equal(1, err.attempts)
    -- the client still works afterwards
    assert(c:create(cases.request()))
    c:close()
  end)

  it("keeps the default cap at 1 MiB", function()
    local c = link.new(cases.merge(FAST, { base_url = sb.url }))
    assert(sb:faults("create", { { oversize = 1024 * 1024 + 1 }, { oversize = 1024 * 1024 } }))
    local res, err = c:create(cases.request())
    assert.is_nil(res)
    assert.is_true(err.too_large)
    res = c:create(cases.request()) -- exactly 1 MiB fits
    assert.truthy(res)
    c:close()
  end)
end)

describe("header values", function()
  local sb
  lazy_setup(function() sb = helper.start() end)
  lazy_teardown(function() if sb then sb:stop() end end)
  before_each(function() sb:reset() end)

  it("raises at link.new on CR or LF in a static token or user agent", function()
    for _, o in ipairs({ { token = "abc\r\nX-Evil: 1" }, { token = "abc\n" }, { token = "a\rb" },
        { user_agent = "ua\r\nX-Evil: 1" }, { user_agent = "ua\n" }, { token = "" },
        { token = "a\0b" } }) do
      local ok, msg = pcall(link.new, o)
      assert.is_false(ok)
      assert.is_nil(tostring(msg):find("abc", 1, true)) -- the value is not echoed
    end
  end)

  it("rejects CR/LF from a token function before sending", function()
    local c = link.new({ base_url = sb.url, token = function() return "abc\r\nX-Evil: 1" end })
    local res, err = c:create(cases.request())
    assert.is_nil(res)
    assert.equal("validation", err.kind)
    assert.equal("token", err.errors[1].field)
    local ok, err2 = c:deactivate("abc")
    assert.is_nil(ok)
    assert.equal("validation", err2.kind)
    assert.equal(0, sb:stats().requests)
    c:close()
  end)

  it("the C transport raises on CR/LF in a header", function()
    local h = core.http_new({})
    assert.has_error(function() h:request("GET", sb.url, { "X-A: b\r\nX-Evil: 1" }) end)
    assert.has_error(function() h:request("GET", sb.url, { "X-A: b\n" }) end)
    assert.has_error(function() core.http_new({ user_agent = "a\r\nb" }) end)
    assert.has_error(function() core.http_new({ cainfo = "a\nb" }) end)
    h:close()
    assert.equal(0, sb:stats().requests)
  end)
end)

describe("link ids", function()
  local sb
  lazy_setup(function() sb = helper.start() end)
  lazy_teardown(function() if sb then sb:stop() end end)
  before_each(function() sb:reset() end)

  it("rejects ids outside [A-Za-z0-9_-]{1,64} before they reach a path", function()
    local c = link.new({ base_url = sb.url })
    for _, bad in ipairs({ "", "../../admin", "a/b", "a?b", "a#b", "a%2e", "a b", "a.b",
        ("x"):rep(65), "a\r\nb", "https://impay.link/x/..", "https://impay.link/", "ünï" }) do
      local ok, err = c:deactivate(bad)
      assert.is_nil(ok, bad)
      assert.equal("validation", err.kind)
      assert.equal("id", err.errors[1].field)
      assert.equal(0, err.attempts)
    end
    assert.equal(0, sb:stats().requests)
    assert.is_true(c:deactivate(("x"):rep(64)) == nil) -- valid shape, unknown link: 404
    assert.equal(1, sb:stats().requests)
    c:close()
  end)
end)

describe("the token", function()
  local SECRET = "SECRET-token-0123456789"
  local sb
  lazy_setup(function() sb = helper.start() end)
  lazy_teardown(function() if sb then sb:stop() end end)
  before_each(function() sb:reset() end)

  local function check(err)
    assert.truthy(err)
    local s = tostring(err)
    assert.is_nil(s:find(SECRET, 1, true), s)
    for k, v in pairs(err) do
      if type(v) == "string" then assert.is_nil(v:find(SECRET, 1, true), k) end
    end
  end

  it("never appears in an error or tostring", function()
    for _, tok in ipairs({ SECRET, function() return SECRET end }) do
      local c = link.new(cases.merge(FAST, { base_url = sb.url, token = tok, timeout = 0.3 }))
      assert.is_nil(tostring(c):find(SECRET, 1, true))
      -- a server that echoes the token back in its error body
      assert(sb:faults("create", { { status = 500, body = '{"code":-1,"message":"bad token '
        .. SECRET .. '"}' } }))
      local _, err = c:create(cases.request())
      check(err)
      assert.truthy(err.body:find("[token]", 1, true))
      -- an echo that the 512-byte cut of err.body splits: no start of it stays
      assert(sb:faults("create", { { status = 500, body = ("x"):rep(500) .. SECRET } }))
      _, err = c:create(cases.request())
      check(err)
      assert.is_nil(err.body:find(SECRET:sub(1, 8), 1, true), err.body)
      assert.equal(("x"):rep(500) .. "[token]", err.body)
      assert(sb:faults("create", { { garbage = true } }))
      check(select(2, c:create(cases.request())))
      assert(sb:faults("create", { { delay_ms = 1000 } }))
      check(select(2, c:create(cases.request())))
      check(select(2, c:create(cases.request({ amount = -1 }))))
      check(select(2, c:deactivate("../x")))
      c:close()
      check(select(2, c:create(cases.request())))
    end
    local c = link.new(cases.merge(FAST, { base_url = "http://127.0.0.1:1", token = SECRET }))
    check(select(2, c:create(cases.request())))
    c:close()
  end)

  it("a token function's bad value does not leak the token either", function()
    for _, f in ipairs({ function() return 42 end, function() return SECRET .. "\r\nX-Evil: 1" end,
                         function() return SECRET .. "\0" end }) do
      local c = link.new({ base_url = sb.url, token = f })
      local res, err = c:create(cases.request())
      assert.is_nil(res)
      assert.equal("validation", err.kind)
      check(err)
      c:close()
    end
    assert.equal(0, sb:stats().requests)
  end)
end)

-- C review: libcurl reads URLs as C strings, so a NUL would cut the URL
-- short (a different host or path than the Lua string names).
describe("C transports and NUL bytes in URLs", function()
  it("http_new's request and multi_new's add raise before sending", function()
    local h, m = core.http_new({}), core.multi_new({})
    for _, u in ipairs({ "http://127.0.0.1:1/\0x", "http://127.0.0.1\0.example.com/" }) do
      local ok, msg = pcall(h.request, h, "GET", u)
      assert.is_false(ok)
      assert.truthy(tostring(msg):find("NUL", 1, true), msg)
      ok, msg = pcall(m.add, m, "GET", u)
      assert.is_false(ok)
      assert.truthy(tostring(msg):find("NUL", 1, true), msg)
    end
    assert.equal(0, m:info().queued)
    h:close(); m:close()
  end)
end)

-- libcurl takes a proxy from the environment (http_proxy, https_proxy,
-- ALL_PROXY) for any host, loopback too: a plain-http request to the
-- sandbox would carry the bearer token (and getToken's imp_secret) in clear
-- to that proxy, a host that is not loopback, and never reach the sandbox.
describe("a loopback base URL and the environment's proxy", function()
  local SECRET = "SECRET-proxy-token-0123456789"
  local sb, px
  lazy_setup(function()
    sb = helper.start()
    px = helper.start() -- stands for the proxy: its request log shows what reached it
  end)
  lazy_teardown(function()
    if sb then sb:stop() end
    if px then px:stop() end
  end)
  before_each(function() sb:reset(); px:reset() end)

  -- runs `code` in a child interpreter of this build with the proxy variables
  -- set; returns its stdout
  local function child(code)
    local lua = os.getenv("PLINK_LUA") or (jit and "luajit") -- luacheck: ignore 113
      or (_VERSION == "Lua 5.1" and "lua5.1") or "lua5.4"
    local proxy = "http://127.0.0.1:" .. px.port
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(code)
    f:close()
    local p = io.popen("env -u LD_PRELOAD http_proxy=" .. proxy .. " https_proxy=" .. proxy
      .. " ALL_PROXY=" .. proxy .. " " .. lua .. " " .. script .. " 2>&1")
    local out = p:read("*a")
    p:close()
    os.remove(script)
    return out
  end

  local function nothing_reached_the_proxy()
    local log = assert(px:requests())
    for _, r in ipairs(log) do
      assert.is_nil(tostring(r.headers.authorization):find(SECRET, 1, true))
      assert.is_nil(tostring(r.body):find(sb.imp_secret, 1, true))
    end
    assert.equal(0, #log)
  end

  it("link.new: create, create_many and deactivate go to the sandbox, not the proxy", function()
    local out = child(([[
      local link = require "portone.link"
      local cases = require "helpers.cases"
      local c = link.new{ base_url = %q, token = %q, retries = 0, timeout = 2 }
      local res, err = c:create(cases.request())
      print("create " .. (res and res.url or tostring(err)))
      local rs = c:create_many({ cases.request() })
      print("many " .. (rs[1].res and rs[1].res.url or tostring(rs[1].err)))
      print("deactivate " .. tostring((c:deactivate(res and res.url or "x"))))
      c:close()
    ]]):format(sb.url, SECRET))
    assert.truthy(out:find("create http://", 1, true), out)
    assert.truthy(out:find("many http://", 1, true), out)
    assert.truthy(out:find("deactivate true", 1, true), out)
    nothing_reached_the_proxy()
    assert.equal(3, sb:stats().requests)
  end)

  it("link.rest.new: getToken and the lookup go to the sandbox, not the proxy", function()
    local out = child(([[
      local rest = require("portone.link.rest").new{ base_url = %q, imp_key = %q,
        imp_secret = %q, timeout = 2 }
      local p, err = rest:payment("imp_000000000000")
      print("payment " .. (p and "found" or err.kind .. " " .. tostring(err.status)))
    ]]):format(sb.url, sb.imp_key, sb.imp_secret))
    assert.truthy(out:find("payment http 404", 1, true), out)
    nothing_reached_the_proxy()
  end)

  it("an explicit proxy option is still used", function()
    local out = child(([[
      local link = require "portone.link"
      local c = link.new{ base_url = %q, proxy = "http://127.0.0.1:%d", retries = 0, timeout = 2 }
      local res, err = c:create(require("helpers.cases").request())
      print("create " .. (res and res.url or tostring(err)))
    ]]):format(sb.url, px.port))
    assert.truthy(out:find("create http://", 1, true), out)
    assert.equal(1, #assert(px:requests()))
    assert.equal(0, sb:stats().requests)
  end)
end)
