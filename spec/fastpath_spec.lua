-- The create fast paths (client.lua) answer exactly as the general path:
-- the anchored read of the usual {"shortenedUrl": ...} body, and the URL and
-- header list built once per token.
local client_mod = require "portone.link.client"
local protocol = require "portone.link.protocol"
local link = require "portone.link"
local cjson = require "cjson"

local fast = client_mod._create_result

local function same(status, body)
  local a, ae = fast(status, body, {}, 0)
  local b, be = protocol.create_result(status, body, {}, 0)
  if b then
    assert.same(b, a)
  else
    assert.is_nil(a)
    assert.equal(be.kind, ae.kind)
    assert.equal(be.message, ae.message)
  end
  return a, ae
end

describe("create fast paths", function()
  it("reads the usual answer by an anchored match, as the general path does", function()
    local r = same(200, '{"shortenedUrl":"https://impay.link/4bdf239e"}')
    assert.same({ url = "https://impay.link/4bdf239e", id = "4bdf239e", status = 200 }, r)
    same(200, '{"shortenedUrl": "https://impay.link/4bdf239e"}\n')
    same(200, '{"shortenedUrl":"https://impay.link/4bdf239e"}\r\n')
    same(200, '{"shortenedUrl":"https://impay.link/4bdf239e"} ')
    same(201, ' { "shortenedUrl" : "HTTP://impay.link/a_b-C" } ')
    same(200, '{"shortenedUrl":"https://impay.link:8443/x"}')
  end)

  it("reads the usual answer with escaped slashes (a cjson-encoded body, the sandbox's) in C", function()
    local core = require "portone.link.core"
    for _, b in ipairs({ '{"shortenedUrl":"https:\\/\\/impay.link\\/4bdf239e"}',
        '{"shortenedUrl":"https:/\\/impay.link/4bdf239e"}',
        '{"shortenedUrl":"https://impay.link\\/4bdf239e"}' }) do
      assert.same({ "https://impay.link/4bdf239e", "4bdf239e" }, { core.usual_answer(b) }, b)
      assert.same({ url = "https://impay.link/4bdf239e", id = "4bdf239e", status = 200 }, same(200, b))
    end
    -- a host too long for the C side's stack buffer
    local long = ("h"):rep(300)
    assert.same({ "https://" .. long .. "/x", "x" },
      { core.usual_answer('{"shortenedUrl":"https:\\/\\/' .. long .. '\\/x"}') })
    assert.same({ "http://127.0.0.1:8080/a-b", "a-b" },
      { core.usual_answer('{"shortenedUrl":"http:\\/\\/127.0.0.1:8080\\/a-b"}') })
    -- any other escape, or an escaped slash elsewhere, is the general path's
    for _, b in ipairs({ '{"shortenedUrl":"https:\\/\\/impay.link\\/4bdf\\/239e"}',
        '{"shortenedUrl":"https:\\u002f\\/impay.link/x"}', '{"shortenedUrl":"https:\\\\/impay.link/x"}',
        '{"shortenedUrl":"https:\\/\\/impay.link\\/x\\/"}', '{"shortenedUrl":"https:\\/\\/impay.link\\"}',
        '{"shortenedUrl":"https:\\/\\/\\/x"}', '{"shortenedUrl":"https:\\/"}' }) do
      assert.is_nil(core.usual_answer(b), b)
      same(200, b)
    end
  end)

  it("leaves every other body to the general path, with the same result", function()
    local bodies = {
      '{"shortenedUrl":"https://impay.link/4bdf239e","code":-1,"message":"no"}',
      '{"code":0,"shortenedUrl":"https://impay.link/4bdf239e"}',
      '{"shortenedUrl":"https://impay.link/a/b"}',
      '{"shortenedUrl":"https://impay.link/4bdf239e/"}',
      '{"shortenedUrl":"https://impay.link/4bdf239e?x=1"}',
      '{"shortenedUrl":"https://impay.link/' .. ("a"):rep(65) .. '"}',
      '{"shortenedUrl":"https://impay.link/' .. ("a"):rep(64) .. '"}',
      '{"shortenedUrl":"https://impay.link/caf\195\169"}',
      '{"shortenedUrl":"ftp://impay.link/x"}',
      '{"shortenedUrl":"https://impay.link/"}',
      '{"shortenedUrl":"https://impay.link/x"}\v',
      '{"shortenedUrl":"https://impay.link/x"',
      '{"shortenedUrl":12}',
      '[]', '', 'null',
    }
    for _, b in ipairs(bodies) do same(200, b) end
    same(500, '{"shortenedUrl":"https://impay.link/4bdf239e"}')
    same(404, "")
  end)

  it("core.usual_answer reads only the usual shape, in C", function()
    local core = require "portone.link.core"
    assert.same({ "https://impay.link/4bdf239e", "4bdf239e" },
      { core.usual_answer('{"shortenedUrl":"https://impay.link/4bdf239e"}') })
    assert.same({ "HtTpS://h/" .. ("a"):rep(64), ("a"):rep(64) },
      { core.usual_answer(' {\t"shortenedUrl" :\r\n"HtTpS://h/' .. ("a"):rep(64) .. '" }\n') })
    for _, b in ipairs({ '{"shortenedUrl":"https://h/' .. ("a"):rep(65) .. '"}',
        '{"shortenedUrl":"https://h/a"} x', '{"shortenedUrl":"https:/h/a"}', '{"shortenedUrl":"https://h/"}',
        '{"shortenedUrl":"https:///a"}', '{"shortenedUrl":"https://h/a"', '{"shortenedUrl":"htt://h/a"}',
        '{"shortenedUrl":"https://h h/a"}', '{"shortenedurl":"https://h/a"}', "", "{" }) do
      assert.is_nil(core.usual_answer(b), b)
    end
    assert.has_error(function() core.usual_answer({}) end)
  end)

  it("agrees with the general path on mutations of the usual answer", function()
    local bases = { '{"shortenedUrl":"https://impay.link/4bdf239e"}',
      '{"shortenedUrl":"https:\\/\\/impay.link\\/4bdf239e"}' }
    local pool = { " ", "\t", "\n", "\v", "/", "?", "#", "\\", '"', "\0", "\200", "a", "Z", "-", "_",
      ".", ":", "{", "}", ",", "H", "s", "\127", "\1" }
    local rnd = math.random
    math.randomseed(7)
    for n = 1, 6000 do
      local b = bases[n % 2 + 1]
      for _ = 1, rnd(1, 3) do
        local i, c = rnd(1, #b + 1), pool[rnd(1, #pool)]
        local op = rnd(1, 3)
        if op == 1 then b = b:sub(1, i - 1) .. c .. b:sub(i + 1)
        elseif op == 2 then b = b:sub(1, i - 1) .. c .. b:sub(i)
        else b = b:sub(1, i - 1) .. b:sub(i + 1) end
      end
      same(200, b)
    end
  end)

  it("builds the request once per token and rebuilds it when the token changes", function()
    local tokens = { "tok-a", "tok-a", "tok-b" }
    local seen = {}
    local calls = 0
    local client = link.new({ base_url = "https://api.example.test",
      token = function() calls = calls + 1; return tokens[calls] end,
      transport = { request = function(_, method, url, headers, body)
        seen[#seen + 1] = { method = method, url = url, headers = headers, body = body }
        return 200, '{"shortenedUrl":"https://impay.link/abc"}', {}
      end } })
    local req = { title = "T", user_code = "imp12345678", amount = 1000, merchant_uid = "o-1",
      name = "N", currency = "KRW", buyer_tel = "010-1234-5678", expired_at = os.time() + 3600,
      pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "Card" } } }
    for _ = 1, 3 do assert.same("abc", client:create(req).id) end
    assert.equal(seen[1].headers, seen[2].headers)       -- the same list, reused
    assert.are_not.equal(seen[2].headers, seen[3].headers)
    local want = protocol.create_request(client:_cfg("tok-b"), req, os.time())
    assert.same(want.headers, seen[3].headers)
    assert.equal(want.url, seen[3].url)
    assert.same(cjson.decode(want.body), cjson.decode(seen[3].body))
    -- the token is in no field of the client
    for k, v in pairs(client) do
      assert.is_falsy(type(v) == "table" and v.token, k)
    end
  end)

  it("reports a bad token value before anything is sent, as before", function()
    local client = link.new({ base_url = "https://api.example.test",
      token = function() return "bad\ntoken" end,
      transport = { request = function() error("must not send") end } })
    local res, err = client:create({ title = "T", user_code = "imp12345678", amount = 1000,
      merchant_uid = "o-1", name = "N", currency = "KRW", buyer_tel = "010-1234-5678",
      expired_at = os.time() + 3600,
      pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "Card" } } })
    assert.is_nil(res)
    assert.equal("validation", err.kind)
    assert.equal("token", err.errors[1].field)
  end)
end)

describe("create's fast C call over curl (h:create)", function()
  local helper = require "helpers.sandbox"
  local cases = require "helpers.cases"
  local core = require "portone.link.core"
  local sb
  lazy_setup(function() sb = helper.start() end)
  lazy_teardown(function() if sb then sb:stop() end end)
  before_each(function() assert(sb:reset()) end)

  local function post(h)
    local body = assert(link.encode(cases.request()))
    return h:create("POST", sb.url .. protocol.PATH, { "Content-Type: application/json" }, body, 2)
  end

  it("returns the result table for the usual answer, else what request returns", function()
    local h = core.http_new({ error_headers_only = true })
    local res = post(h)
    assert.equal("table", type(res))
    assert.equal(200, res.status)
    assert.equal(1, res.attempts)
    assert.truthy(protocol.valid_id(res.id))
    assert.equal(sb.url .. "/" .. res.id, res.url)      -- the sandbox's \/ decoded
    local keys = 0
    for _ in pairs(res) do keys = keys + 1 end
    assert.equal(4, keys)
    local other = '{"shortenedUrl":"https://impay.link/a/b"}'
    assert(sb:faults("create", { { status = 201, body = other }, { status = 503 } }))
    local status, body, heads, sends = post(h)
    assert.same({ 201, other, nil, 1 }, { status, body, heads, sends })
    status, body, heads, sends = post(h)
    assert.equal(503, status)
    assert.equal("string", type(body))
    assert.equal("table", type(heads))
    assert.equal(1, sends)
    h:close()
    local info
    status, info = post(h)
    assert.is_nil(status)
    assert.equal("transport", info.kind)
  end)

  it("gives the client the same results as the general path, retries included", function()
    local c = link.new({ base_url = sb.url })
    local general = link.new({ base_url = sb.url,
      transport = require("portone.link.transport.curl").new({ error_headers_only = true }) })
    local a, b = assert(c:create(cases.request())), assert(general:create(cases.request()))
    assert.same({ status = b.status, attempts = b.attempts }, { status = a.status, attempts = a.attempts })
    assert.equal(sb.url .. "/" .. a.id, a.url)
    -- not the usual shape: decoded by the general path after the C call
    assert(sb:faults("create", { { status = 200, body = '{"shortenedUrl":"https://impay.link/x_1/"}' } }))
    assert.same({ url = "https://impay.link/x_1/", id = "x_1", status = 200, attempts = 1 },
      assert(c:create(cases.request())))
    -- an error answer to the C call, then a retry: two attempts
    assert(sb:faults("create", { { status = 503 } }))
    local r = assert(c:create(cases.request(), {}))
    assert.equal(2, r.attempts)
    assert(sb:faults("create", { { status = 400, body = '{"code":-1,"message":"bad"}' } }))
    local res, err = c:create(cases.request())
    assert.is_nil(res)
    assert.equal("http", err.kind)
    assert.equal(400, err.status)
    assert.equal(1, err.attempts)
    assert(sb:faults("create", { { status = 200, body = '{"code":-1,"message":"no"}' } }))
    res, err = c:create(cases.request())
    assert.is_nil(res)
    assert.equal("api", err.kind)
    c:close()
    general:close()
  end)
end)
