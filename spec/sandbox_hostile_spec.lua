-- The sandbox under hostile or odd requests: every one gets an answer (an
-- error where it is wrong, never a 500 from a Lua error) and none changes
-- or loses state it should not. Raw HTTP over luasocket.
local helper = require "helpers.sandbox"
local cjson = require "cjson"

local API = helper.API

local sb, token

local function call(method, path, body, headers)
  local status, raw, hdrs = helper.request(sb, method, path, body, headers)
  assert(status, raw)
  local ok, t = pcall(cjson.decode, raw)
  return status, ok and t or raw, hdrs, raw
end

local function authed(method, path, body)
  return call(method, path, body, { Authorization = "Bearer " .. token })
end

local seq = 0
local function create(over)
  seq = seq + 1
  local info = { merchant_uid = ("hostile-%d-%d"):format(os.time(), seq) }
  for k, v in pairs(over or {}) do info[k] = v end
  local status, t = call("POST", API, helper.create_body(info))
  assert.equal(200, status)
  return t.shortenedUrl:match("([^/]+)$"), info.merchant_uid
end

describe("sandbox under hostile requests", function()
  lazy_setup(function()
    sb = helper.start()
    local _, t = call("POST", "/users/getToken",
      cjson.encode({ imp_key = sb.imp_key, imp_secret = sb.imp_secret }))
    token = t.response.access_token
  end)
  lazy_teardown(function() if sb then sb:stop() end end)

  it("answers 404 to a deactivate of the creation index's keys, and the index still pages", function()
    local id = create()
    for _, bad in ipairs({ "%23seq", "%231", "%23", "%2e%2e" }) do
      local status, t = call("PUT", API .. "/" .. bad)
      assert.equal(404, status, bad)
      assert.equal(-1, t.code, bad)
    end
    local _, page = call("GET", "/__sandbox/links?limit=1")
    assert.is_table(page[id])
    assert.is_true(page[id].active)
  end)

  it("refuses a payment_info holding a number JSON cannot write back (400, not 500)", function()
    local body = helper.create_body({ merchant_uid = "inf-1" }):gsub('\\"amount\\":10000',
      '\\"amount\\":10000,\\"buyer_name\\":1e400')
    assert.matches("1e400", body, 1, true)
    local status, t = call("POST", API, body)
    assert.equal(400, status)
    assert.equal(-1, t.code)
  end)

  it("answers page/limit/from/to of inf or huge in the V1 envelope (never a 500)", function()
    for _, q in ipairs({ "page=inf", "page=-inf", "limit=inf", "page=1e300", "from=inf&to=-inf",
                         "page=nan", "limit=1e400" }) do
      local status, t, _, raw = authed("GET", "/payments/status/all?" .. q)
      assert.equal(200, status, q .. ": " .. tostring(raw))
      assert.equal(0, t.code, q)
      assert.is_nil(raw:find("e+", 1, true), q .. ": " .. raw)
      local _, mt = authed("GET", "/payments/findAll/none-such?" .. q)
      assert.equal(-1, mt.code, q)
    end
  end)

  it("keeps an amount beyond 14 digits exact, in the link and in REST V1", function()
    local amount = "9007199254740991"
    local body = helper.create_body({ merchant_uid = "big-amount" }):gsub('\\"amount\\":10000',
      '\\"amount\\":' .. amount)
    local status, t = call("POST", API, body)
    assert.equal(200, status)
    local id = t.shortenedUrl:match("([^/]+)$")
    local _, _, _, raw = call("GET", "/__sandbox/links/" .. id)
    assert.matches('"amount":' .. amount, raw, 1, true)
    local paid = assert(sb:admin("POST", "pay", { id = id }))
    -- the number ends there (a comma, or the object's end: key order varies)
    _, _, _, raw = authed("GET", "/payments/" .. paid.imp_uid)
    assert.matches('"amount":' .. amount .. "[,}]", raw)
    _, _, _, raw = authed("GET", "/payments/find/big-amount")
    assert.matches('"amount":' .. amount .. "[,}]", raw)
  end)

  it("a string shaped like the exact-integer mark stays a string (beside a 16-digit amount)", function()
    local body = helper.create_body({ merchant_uid = "mark-like", custom_data = { s = "\0int:5\0" } })
      :gsub('\\"amount\\":10000', '\\"amount\\":9007199254740991')
    local status, t = call("POST", API, body)
    assert.equal(200, status)
    local _, link = call("GET", "/__sandbox/links/" .. t.shortenedUrl:match("([^/]+)$"))
    assert.equal("\0int:5\0", link.info.custom_data.s)
    assert.equal(9007199254740991, link.amount)
  end)

  it("refuses admin calls with a missing id or a non-finite number, changing nothing", function()
    for _, c in ipairs({
      { "deposit", {} }, { "deposit", { imp_uid = { 1 } } },
      { "clock", { offset = "inf" } }, { "latency", { ms = "inf" } }, { "latency", { ms = -5 } },
      { "tamper", { next = true, amount = "inf" } }, { "tamper", { next = true, amount = "nan" } },
      { "webhook", { mode = "late", delay_ms = "inf" } }, { "webhook", { mode = "late", delay_ms = -1 } },
      { "redeliver", { imp_uid = "x", count = "nan" } },
    }) do
      local status, t = call("POST", "/__sandbox/" .. c[1], cjson.encode(c[2]))
      assert.is_true(status == 400 or status == 404, c[1] .. " " .. cjson.encode(c[2]) .. ": " .. status)
      assert.equal(-1, t.code)
    end
    assert.equal(0, assert(sb:admin("GET", "clock")).offset)
    assert.equal(0, assert(sb:stats()).latency_ms)
    assert.equal("normal", assert(sb:admin("GET", "webhook")).mode)
    local id = create()
    local paid = assert(sb:admin("POST", "pay", { id = id }))
    assert.equal(10000, paid.payment.amount)
  end)

  it("loses no payment, paid mark or link when huge bodies fill the request log and the inbox", function()
    assert(sb:reset())
    local _, t = call("POST", "/users/getToken",
      cjson.encode({ imp_key = sb.imp_key, imp_secret = sb.imp_secret }))
    token = t.response.access_token
    local id, muid = create()
    local paid = assert(sb:admin("POST", "pay", { id = id }))
    local big = string.rep("x", 7 * 1024 * 1024)
    for _ = 1, 3 do
      local status = call("POST", "/payments/cancel", big, { ["Content-Type"] = "text/plain" })
      assert.equal(401, status)
      status = call("POST", "/__sandbox/inbox", big, { ["Content-Type"] = "text/plain" })
      assert.equal(200, status)
    end
    -- the link is still paid once, its payment still there
    local again, err = sb:admin("POST", "pay", { id = id })
    assert.is_nil(again)
    assert.matches("409", err)
    assert(sb:admin("GET", "payments/" .. paid.imp_uid))
    local status, found = authed("GET", "/payments/find/" .. muid)
    assert.equal(200, status)
    assert.equal(paid.imp_uid, found.response.imp_uid)
    local _, list = authed("GET", "/payments/status/all")
    assert.equal(1, list.response.total)
    assert.equal(200, (call("GET", "/" .. id)))
    -- and the log still works
    assert.is_table(sb:requests())
  end)
end)

describe("sandbox watchdog cleanup", function()
  local server = require "portone.sandbox.server"

  -- os.execute: true/nil on 5.2+, a status number on 5.1/LuaJIT
  local function sh(cmd) local r = os.execute(cmd); return r == true or r == 0 end
  local function exists(path) return sh("test -e '" .. path:gsub("'", "'\\''") .. "'") end

  it("removes only the prefix, also when $TMPDIR holds quotes", function()
    local p = io.popen("mktemp -d \"${TMPDIR:-/tmp}/portone-wd.XXXXXXXX\"")
    local t = p:read("*l")
    p:close()
    finally(function() os.execute("rm -rf '" .. t .. "'") end)
    local victim = t .. "/victim"
    -- a prefix made under TMPDIR=<t>/a' '<t>/victim' '
    local prefix = t .. "/a' '" .. victim .. "' '/portone-sandbox.Ab12Cd34"
    assert(sh("mkdir -p '" .. victim .. "' '" .. prefix:gsub("'", "'\\''") .. "'"))
    assert.is_true(exists(prefix))
    assert.is_true(sh(assert(server.cleanup_command(prefix))))
    assert.is_false(exists(prefix))
    assert.is_true(exists(victim))
    assert.is_nil(server.cleanup_command(t .. "/elsewhere"))
    assert.is_nil(server.cleanup_command("relative/portone-sandbox.Ab12Cd34"))
  end)
end)

-- The sandbox's admin API holds what a web page must not get: the request
-- log (the Authorization header of every API call, the user's bearer token
-- when they point a real one at the sandbox) and the REST keys. A web page
-- in the developer's browser reaches 127.0.0.1 two ways: DNS rebinding (its
-- own name, rebound to 127.0.0.1: the browser then reads the answers, the
-- Host header still names the page's host) and a cross-site form or fetch
-- POST (answers unread, side effects done; the Origin header names the page).
describe("sandbox admin API and web pages", function()
  local socket = require "socket"
  local SECRET = "SECRET-browser-token-0123456789"
  local box
  lazy_setup(function() box = helper.start() end)
  lazy_teardown(function() if box then box:stop() end end)

  -- one raw request with the Host (and other) headers given; status, body
  local function raw(method, path, headers, body)
    local c = socket.tcp()
    c:settimeout(5)
    assert(c:connect(box.host, box.port))
    local req = { method .. " " .. path .. " HTTP/1.1", "Connection: close" }
    for k, v in pairs(headers) do req[#req + 1] = k .. ": " .. v end
    if body then req[#req + 1] = "Content-Length: " .. #body end
    assert(c:send(table.concat(req, "\r\n") .. "\r\n\r\n" .. (body or "")))
    local all = c:receive("*a")
    c:close()
    return tonumber(all:match("^HTTP/1%.1 (%d+)")), all:match("\r\n\r\n(.*)$")
  end

  it("refuses a Host that names anything but this machine (DNS rebinding)", function()
    assert(box:reset())
    -- an API call with the user's token lands in the request log
    helper.request(box, "POST", API, helper.create_body({ merchant_uid = "rebind-1" }),
      { Authorization = "Bearer " .. SECRET })
    for _, host in ipairs({ "rebind.attacker.example:" .. box.port, "rebind.attacker.example",
                            "127.0.0.1.nip.io:" .. box.port, "localhost.attacker.example" }) do
      for _, path in ipairs({ "/__sandbox/requests", "/__sandbox/keys" }) do
        local status, body = raw("GET", path, { Host = host })
        assert.equal(403, status, host .. path)
        assert.is_nil(body:find(SECRET, 1, true), host .. path)
        assert.is_nil(body:find(box.imp_secret, 1, true), host .. path)
      end
    end
    -- this machine's names and addresses still work
    for _, host in ipairs({ "127.0.0.1:" .. box.port, "localhost:" .. box.port, "localhost",
                            "127.0.0.1", "[::1]:" .. box.port }) do
      local status, body = raw("GET", "/__sandbox/requests", { Host = host })
      assert.equal(200, status, host)
      assert.truthy(body:find(SECRET, 1, true), host)
    end
  end)

  it("refuses a POST from another origin's page (cross-site request forgery)", function()
    assert(box:reset())
    local id = assert(helper.request(box, "POST", API, helper.create_body({ merchant_uid = "csrf-1" })))
    local links = assert(box:admin("GET", "links"))
    local link_id = next(links)
    assert.truthy(link_id, id)
    local host = "127.0.0.1:" .. box.port
    for _, origin in ipairs({ "http://attacker.example", "null", "http://127.0.0.1:1",
                              "https://" .. host }) do
      local status = raw("POST", "/__sandbox/pay", { Host = host, Origin = origin,
        ["Content-Type"] = "text/plain" }, '{"id":"' .. link_id .. '"}')
      assert.equal(403, status, origin)
      status = raw("POST", "/__sandbox/reset", { Host = host, Origin = origin,
        ["Content-Type"] = "text/plain" }, "{}")
      assert.equal(403, status, origin)
    end
    assert.equal(0, #assert(box:admin("GET", "payments")))
    assert.truthy(next(assert(box:admin("GET", "links"))))
    -- the sandbox's own origin, and tools that send none (curl, the CLI)
    local status = raw("POST", "/__sandbox/pay", { Host = host, Origin = "http://" .. host },
      '{"id":"' .. link_id .. '"}')
    assert.equal(200, status)
    status = raw("POST", "/__sandbox/reset", { Host = host }, "{}")
    assert.equal(200, status)
  end)
end)
