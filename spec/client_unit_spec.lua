-- Pure tests of portone.link.protocol and portone.link.retry: no network.
local protocol = require "portone.link.protocol"
local retry = require "portone.link.retry"
local errors = require "portone.link.errors"
local cjson = require "cjson"
local client_mod = require "portone.link.client"

local cfg = {
  base_url = "https://api.iamport.co",
  user_agent = "portone-link/0.1.0",
  token = "tok-SECRET",
  encode = function(req) return req.body end,
}

describe("protocol.link_id", function()
  it("takes the id of a URL on the link host", function()
    assert.equal("4bdf239e", protocol.link_id("https://impay.link/4bdf239e"))
    assert.equal("4bdf239e", protocol.link_id("https://IMPAY.link/4bdf239e/"))
    assert.equal("ab_C-9", protocol.link_id("http://impay.link/ab_C-9"))
    local hosts = protocol.link_hosts("http://127.0.0.1:8080")
    assert.equal("x1", protocol.link_id("http://127.0.0.1:8080/x1", hosts))
    assert.is_nil(protocol.link_hosts("https://api.iamport.co")["api.iamport.co"])
  end)
  it("deactivate(url): another host, dot segments, escapes and odd authorities are bad_id", function()
    local hosts = protocol.link_hosts("http://127.0.0.1:8080")
    for _, bad in ipairs({ "https://evil.example/4bdf239e", "https://impay.link.evil/4bdf239e",
        "https://impay.link/x/../4bdf239e", "https://impay.link/a/4bdf239e",
        "https://impay.link\\@evil/4bdf239e", "https://evil@impay.link/4bdf239e",
        "https:///4bdf239e", "https://impay.link/4bdf239e?x=1", "https://impay.link/4bdf239e#f",
        "https://impay.link/%34bdf239e", "ftp://impay.link/4bdf239e", "//impay.link/4bdf239e",
        "https://127.0.0.1:9999/x1", "https://api.iamport.co/x1" }) do
      local id, err = protocol.link_id(bad, hosts)
      assert.is_nil(id, bad)
      assert.equal("bad_id", err.errors[1].code, bad)
    end
  end)
  it("deactivate(url): only the scheme's own default port is the same host", function()
    local hosts = protocol.link_hosts("http://127.0.0.1:8080")
    assert.equal("x1", protocol.link_id("https://impay.link:443/x1", hosts))
    assert.equal("x1", protocol.link_id("HTTP://IMPAY.LINK:80/x1", hosts))
    -- https on port 80, http on 443, or a second port after the host's own:
    -- another origin (or no URL at all), not a link of ours
    for _, bad in ipairs({ "https://impay.link:80/x1", "http://impay.link:443/x1",
        "http://127.0.0.1:8080:80/x1", "https://127.0.0.1:8080:443/x1",
        "https://impay.link:443:443/x1", "http://[::1]:80/x1" }) do
      local id, err = protocol.link_id(bad, hosts)
      assert.is_nil(id, bad)
      assert.equal("bad_id", err.errors[1].code, bad)
    end
    local v6 = protocol.link_hosts("http://[::1]")
    assert.equal("x1", protocol.link_id("http://[::1]:80/x1", v6))
    assert.is_nil(protocol.link_id("http://[::1]:8080:80/x1", v6))
    assert.is_nil(protocol.link_id("http://[::1]:8080:80/x1", protocol.link_hosts("http://[::1]:8080")))
  end)
  it("accepts a bare id", function()
    assert.equal("abc", protocol.link_id("abc"))
    assert.equal(("a"):rep(64), protocol.link_id(("a"):rep(64)))
  end)
  it("rejects ids outside [A-Za-z0-9_-]{1,64}", function()
    for _, bad in ipairs({ "", ("a"):rep(65), "a/b", "../x", "a b", "a%2F", "a\r\nb",
        "é", "a.b", "https://impay.link/", "https://impay.link/a.b", 42 }) do
      local id, err = protocol.link_id(bad)
      assert.is_nil(id, tostring(bad))
      assert.equal("validation", err.kind)
      assert.equal("id", err.errors[1].field)
    end
  end)
end)

describe("protocol requests", function()
  it("builds a create request", function()
    local r = assert(protocol.create_request(cfg, { body = "{}" }, 0))
    assert.equal("POST", r.method)
    assert.equal("https://api.iamport.co/api/supplements/v1/link/payment", r.url)
    assert.equal("{}", r.body)
    assert.same({
      "Content-Type: application/json;charset=UTF-8",
      "User-Agent: " .. cfg.user_agent,
      "Authorization: Bearer tok-SECRET",
    }, r.headers)
  end)
  it("turns an encode failure into a validation error", function()
    local c = setmetatable({ encode = function() return nil, { { field = "title", code = "missing",
      message = "required" } } end }, { __index = cfg })
    local r, err = protocol.create_request(c, {}, 0)
    assert.is_nil(r)
    assert.equal("validation", err.kind)
  end)
  it("builds a deactivate request without a body or Content-Type", function()
    local r = assert(protocol.deactivate_request(cfg, "https://impay.link/4bdf239e"))
    assert.equal("PUT", r.method)
    assert.equal("https://api.iamport.co/api/supplements/v1/link/payment/4bdf239e", r.url)
    assert.is_nil(r.body)
    for _, h in ipairs(r.headers) do assert.is_nil(h:find("^Content%-Type")) end
  end)
  it("omits Authorization without a token", function()
    local r = assert(protocol.deactivate_request({ base_url = "http://127.0.0.1:1" }, "x"))
    assert.same({}, r.headers)
  end)
  it("rejects CR/LF in header values without quoting them", function()
    for _, field in ipairs({ "token", "user_agent" }) do
      local c = { base_url = "https://x", token = "t", user_agent = "u" }
      c[field] = "evil\r\nX-Injected: 1"
      local r, err = protocol.deactivate_request(c, "abc")
      assert.is_nil(r)
      assert.equal("validation", err.kind)
      assert.equal(field, err.errors[1].field)
      assert.is_nil(tostring(err):find("evil", 1, true))
    end
  end)
end)

describe("protocol.create_result", function()
  it("returns url, id and status on 200", function()
    local r = assert(protocol.create_result(200, '{"shortenedUrl":"https://impay.link/4bdf239e"}', {}))
    assert.same({ url = "https://impay.link/4bdf239e", id = "4bdf239e", status = 200 }, r)
  end)
  it("accepts code 0 (also as a float, as lua-cjson gives it on 5.4)", function()
    assert.truthy(protocol.create_result(200, '{"code":0,"shortenedUrl":"https://impay.link/a"}', {}))
    assert.truthy(protocol.create_result(200, '{"code":0.0,"shortenedUrl":"https://impay.link/a"}', {}))
  end)
  it("non-2xx is kind http with status and a body cut to 512 bytes", function()
    local body = ("x"):rep(2000)
    local r, err = protocol.create_result(500, body, {})
    assert.is_nil(r)
    assert.equal("http", err.kind)
    assert.equal(500, err.status)
    assert.equal(512, #err.body)
  end)
  it("non-2xx carries the JSON message and code", function()
    local _, err = protocol.create_result(400, '{"code":-1,"message":"bad title"}', {})
    assert.equal("http", err.kind)
    assert.equal(-1, err.code)
    assert.truthy(err.message:find("bad title", 1, true))
  end)
  it("a non-zero code is kind api", function()
    local _, err = protocol.create_result(200, '{"code":-1,"message":"nope","response":null}', {})
    assert.equal("api", err.kind)
    assert.equal(-1, err.code)
    assert.equal("nope", err.message)
  end)
  it("garbage, non-objects and missing URLs are kind decode", function()
    for _, b in ipairs({ "<html>", "", "null", "[1]", '"s"', "{}", '{"shortenedUrl":5}',
        '{"shortenedUrl":"ftp://x/y"}', '{"shortenedUrl":"https://impay.link/"}',
        '{"shortenedUrl":"https://impay.link/a b"}' }) do
      local r, err = protocol.create_result(200, b, {})
      assert.is_nil(r, b)
      assert.equal("decode", err.kind, b)
    end
  end)
  it("takes the id from the URL's path only: a URL without one, or without a host, is kind decode", function()
    -- the host of a path-less URL is no link id (a one-label host passed
    -- the id rule: {"shortenedUrl":"https://sandbox"} gave id "sandbox")
    for _, u in ipairs({ "https://sandbox", "https://sandbox/", "http://localhost",
        "https://sandbox?x=1", "https://sandbox#abc", "https:///abc", "https:///abc/",
        "https://impay.link//", "https://impay.link/?x=abc", "https://impay.link/#abc" }) do
      local r, err = protocol.create_result(200, cjson.encode({ shortenedUrl = u }), {})
      assert.is_nil(r, u)
      assert.equal("decode", err.kind, u)
      r, err = client_mod._create_result(200, cjson.encode({ shortenedUrl = u }), {})
      assert.is_nil(r, u)
      assert.equal("decode", err.kind, u)
    end
    for u, id in pairs({ ["https://impay.link/4bdf239e"] = "4bdf239e",
        ["https://impay.link/4bdf239e/"] = "4bdf239e", ["https://impay.link/4bdf239e?x=1/y"] = "4bdf239e",
        ["https://impay.link/4bdf239e#/y"] = "4bdf239e", ["https://impay.link/p/4bdf239e"] = "4bdf239e",
        ["http://127.0.0.1:8080/ab_c-9"] = "ab_c-9" }) do
      local r = assert(protocol.create_result(200, cjson.encode({ shortenedUrl = u }), {}), u)
      assert.equal(id, r.id, u)
      assert.equal(u, r.url, u)
    end
  end)
  it("keeps Retry-After as seconds", function()
    local _, err = protocol.create_result(429, "", { ["retry-after"] = "3" })
    assert.equal(3, err.retry_after)
  end)
end)

describe("protocol.deactivate_result", function()
  it("{} and an empty body are success", function()
    assert.is_true(protocol.deactivate_result(200, "{}", {}))
    assert.is_true(protocol.deactivate_result(204, "", {}))
    assert.is_true(protocol.deactivate_result(200, '{"code":0}', {}))
  end)
  it("errors keep their kinds", function()
    assert.equal("http", select(2, protocol.deactivate_result(404, "{}", {})).kind)
    assert.equal("api", select(2, protocol.deactivate_result(200, '{"code":1}', {})).kind)
    assert.equal("decode", select(2, protocol.deactivate_result(200, "garbage", {})).kind)
  end)
end)

describe("protocol.transport_error", function()
  it("maps timeout and transport infos", function()
    local e = protocol.transport_error({ kind = "timeout", message = "t", curl_code = 28, sent = true })
    assert.equal("timeout", e.kind)
    assert.equal(28, e.curl_code)
    e = protocol.transport_error({ kind = "transport", message = "refused", curl_code = 7, sent = false })
    assert.equal("transport", e.kind)
    assert.is_false(e.sent)
    assert.is_true(errors.is(e))
  end)
  it("passes a transport's permanent flag on", function()
    assert.is_true(protocol.transport_error({ kind = "transport", message = "no cosockets", sent = false,
      permanent = true }).permanent)
    assert.is_nil(protocol.transport_error({ kind = "transport", message = "x" }).permanent)
  end)
  it("treats an unknown sent as sent", function()
    assert.is_true(protocol.transport_error({ kind = "transport", message = "x" }).sent)
  end)
end)

describe("protocol.parse_retry_after", function()
  it("parses delta-seconds", function()
    assert.equal(0, protocol.parse_retry_after("0"))
    assert.equal(120, protocol.parse_retry_after(" 120 "))
  end)
  it("parses an HTTP-date against now", function()
    -- 2015-10-21T07:28:00Z = 1445412480
    assert.equal(30, protocol.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412450))
    assert.equal(0, protocol.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412490))
    assert.equal(1, protocol.parse_retry_after("Thu, 29 Feb 2024 00:00:00 GMT", 1709164799))
  end)
  it("ignores anything else", function()
    for _, v in ipairs({ "soon", "-1", "1.5", "", "Wed, 21 Foo 2015 07:28:00 GMT" }) do
      assert.is_nil(protocol.parse_retry_after(v, 0), v)
    end
    assert.is_nil(protocol.parse_retry_after(nil, 0))
  end)
end)

describe("retry.retryable", function()
  local function E(kind, f) return errors.new(kind, "x", f) end
  it("create: only unsent transport failures and 429/503", function()
    assert.is_true(retry.retryable("create", E("transport", { sent = false, curl_code = 7 })))
    assert.is_true(retry.retryable("create", E("timeout", { sent = false, curl_code = 28 })))
    assert.is_false(retry.retryable("create", E("transport", { sent = true, curl_code = 56 })))
    assert.is_false(retry.retryable("create", E("timeout", { sent = true, curl_code = 28 })))
    assert.is_true(retry.retryable("create", E("http", { status = 429 })))
    assert.is_true(retry.retryable("create", E("http", { status = 503 })))
    assert.is_false(retry.retryable("create", E("http", { status = 500 })))
    assert.is_false(retry.retryable("create", E("http", { status = 502 })))
  end)
  it("deactivate: also 5xx, timeouts and sent transport failures", function()
    assert.is_true(retry.retryable("deactivate", E("http", { status = 500 })))
    assert.is_true(retry.retryable("deactivate", E("http", { status = 502 })))
    assert.is_true(retry.retryable("deactivate", E("timeout", { sent = true, curl_code = 28 })))
    assert.is_true(retry.retryable("deactivate", E("transport", { sent = true, curl_code = 52 })))
    assert.is_false(retry.retryable("deactivate", E("http", { status = 404 })))
  end)
  it("never: certificates, size cap, validation, api, decode", function()
    for _, op in ipairs({ "create", "deactivate" }) do
      assert.is_false(retry.retryable(op, E("transport", { sent = false, curl_code = 60 })))
      assert.is_false(retry.retryable(op, E("transport", { sent = true, curl_code = 23, too_large = true })))
      assert.is_false(retry.retryable(op, E("transport", { sent = false, permanent = true })))
      assert.is_false(retry.retryable(op, E("validation")))
      assert.is_false(retry.retryable(op, E("api", { code = 1 })))
      assert.is_false(retry.retryable(op, E("decode")))
    end
  end)
end)

describe("retry.delay", function()
  local function E(kind, f) return errors.new(kind, "x", f) end
  it("full jitter: within [0, min(cap, base*2^(n-1))]", function()
    local p = { retries = 10, base = 0.5, cap = 3 }
    for attempt = 1, 8 do
      local window = math.min(3, 0.5 * 2 ^ (attempt - 1))
      for _ = 1, 50 do
        local d = retry.delay("deactivate", E("http", { status = 500 }), attempt, p)
        assert.is_true(d >= 0 and d <= window)
      end
    end
    -- the ends of the window, with an injected random source
    assert.equal(0, retry.delay("create", E("http", { status = 503 }), 1,
      { base = 1, cap = 5, random = function() return 0 end }))
    assert.equal(4, retry.delay("create", E("http", { status = 503 }), 3,
      { retries = 5, base = 1, cap = 5, random = function() return 1 end }))
    assert.equal(5, retry.delay("create", E("http", { status = 503 }), 5,
      { retries = 5, base = 1, cap = 5, random = function() return 1 end }))
  end)
  it("stops after `retries` retries", function()
    local p = { retries = 2, base = 0 }
    assert.truthy(retry.delay("create", E("http", { status = 503 }), 1, p))
    assert.truthy(retry.delay("create", E("http", { status = 503 }), 2, p))
    assert.is_nil(retry.delay("create", E("http", { status = 503 }), 3, p))
    assert.is_nil(retry.delay("create", E("http", { status = 503 }), 1, { retries = 0 }))
  end)
  it("honours Retry-After up to retry_after_max", function()
    local p = { retries = 2, retry_after_max = 5 }
    assert.equal(2, retry.delay("create", E("http", { status = 429, retry_after = 2 }), 1, p))
    local e = E("http", { status = 429, retry_after = 60 })
    assert.is_nil(retry.delay("create", e, 1, p))
    assert.is_true(e.retryable)
  end)
  it("sets err.retryable truthfully", function()
    local e = E("http", { status = 500 })
    assert.is_nil(retry.delay("create", e, 1))
    assert.is_false(e.retryable)
    e = E("http", { status = 500 })
    retry.delay("deactivate", e, 1, { retries = 0 })
    assert.is_true(e.retryable)
  end)
end)

describe("transports.check_base_url (shared by link.new and link.rest.new)", function()
  local transports = require "portone.link.transports"
  it("keeps https and loopback http, drops trailing slashes", function()
    assert.equal("https://api.iamport.co", transports.check_base_url("https://api.iamport.co/"))
    assert.equal("http://127.0.0.1:8080", transports.check_base_url("http://127.0.0.1:8080"))
    assert.equal("http://[::1]:1", transports.check_base_url("http://[::1]:1"))
  end)
  it("refuses plain http elsewhere unless insecure, and a path unless allowed", function()
    local ok, why = transports.check_base_url("http://example.com")
    assert.is_nil(ok)
    assert.matches("plain http", why, 1, true)
    assert.equal("http://example.com", transports.check_base_url("http://example.com", { insecure = true }))
    assert.is_nil((transports.check_base_url("https://x.test/v1")))
    assert.equal("https://x.test/v1", transports.check_base_url("https://x.test/v1/", { path = true }))
  end)
  it("refuses user info, queries, bad ports and other schemes", function()
    for _, u in ipairs({ "https://u:p@x.test", "https://x.test/?a=1", "https://x.test:8x",
                         "ftp://x.test", "x.test", "https://" }) do
      assert.is_nil((transports.check_base_url(u, { path = true })), u)
    end
  end)
end)
