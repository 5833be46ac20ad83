-- h:bind_create, the client's usual create as one C call (src/http_easy.c):
-- a function of the request alone that is h:encode_create with the method,
-- URL, headers, max_sends = 2 and now = os.time() bound. client:create(req)
-- with no options on an open client without token function or hook goes
-- through it and runs no other Lua function; every other call takes the
-- general path, with the same answers and errors as before.
local helper = require "helpers.sandbox"
local cases = require "helpers.cases"
local core = require "portone.link.core"
local link = require "portone.link"
local protocol = require "portone.link.protocol"
local cjson = require "cjson"

local HEADERS = { "Content-Type: application/json" }

local function pack(...) return { n = select("#", ...), ... } end

-- The library's Lua functions (under portone/) that fn calls, but `except`
-- (busted's environment runs Lua code for every global fn reads).
local function library_calls(fn, except)
  local n = 0
  debug.sethook(function()
    local i = debug.getinfo(2, "Sf")
    if i.what == "Lua" and i.func ~= except and i.source:find("portone/", 1, true) then n = n + 1 end
  end, "c")
  local ok, err = pcall(fn)
  debug.sethook()
  assert(ok, err)
  return n
end

describe("h:bind_create", function()
  local sb, url
  lazy_setup(function()
    sb = helper.start()
    url = sb.url .. protocol.PATH
  end)
  lazy_teardown(function() if sb then sb:stop() end end)
  before_each(function() assert(sb:reset()) end)

  it("is h:encode_create with the method, URL, headers, 2 sends and os.time() bound", function()
    local h = core.http_new({ error_headers_only = true })
    local create = h:bind_create(url, HEADERS)
    assert.equal("function", type(create))
    local req = cases.request()
    local res = create(req)
    assert.equal("table", type(res))
    assert.same({ status = 200, attempts = 1 }, { status = res.status, attempts = res.attempts })
    assert.equal(sb.url .. "/" .. res.id, res.url)
    -- now is the clock's: a request that expires in 30 minutes passes, one
    -- that expired a minute ago does not
    local now = os.time()
    local _, want = core.encode(cases.request({ expired_at = now - 60 }), now)
    assert.same({ false, want, n = 2 }, pack(create(cases.request({ expired_at = now - 60 }))))
    -- every other outcome ends with the wire body, as encode_create's
    local other = '{"shortenedUrl":"https://impay.link/a/b"}'
    assert(sb:faults("create", { { status = 201, body = other }, { status = 503 } }))
    local r1 = pack(create(req))
    assert.same({ 201, other, nil, 1, n = 5 }, { r1[1], r1[2], r1[3], r1[4], n = r1.n })
    assert.same(cjson.decode(core.encode(req, os.time())), cjson.decode(r1[5]))
    local status, body, heads, sends = create(req)
    assert.same({ 503, "string", "table", 1 }, { status, type(body), type(heads), sends })
    assert.equal(1, sb:stats().creates)      -- links made: the 201 and 503 made none
    h:close()
    local s, info, _, _, wire = create(req)
    assert.is_nil(s)
    assert.equal("transport", info.kind)
    assert.equal("string", type(wire))
    assert.equal(1, sb:stats().creates)
  end)

  it("returns nothing for a request that is not a table, and sends nothing", function()
    local h = core.http_new({})
    local create = h:bind_create(url, HEADERS)
    for _, v in ipairs({ "req", 1, true }) do
      assert.same({ n = 0 }, pack(create(v)))
    end
    assert.same({ n = 0 }, pack(create()))
    assert.equal(0, sb:stats().creates)
    h:close()
  end)

  it("raises on bad arguments", function()
    local h = core.http_new({})
    assert.has_error(function() h:bind_create(nil, HEADERS) end)
    assert.has_error(function() h:bind_create(url, "Content-Type: x") end)
    assert.has_error(function() core.http_new({}).bind_create({}, url, HEADERS) end)
    -- a URL the handle refuses is refused when used, as encode_create's
    local create = h:bind_create("http://127.0.0.1/a b", HEADERS)
    local ok, e = pcall(create, cases.request())
    assert.is_false(ok)
    assert.matches("URL contains white space, CR/LF or NUL", e, 1, true)
    assert.equal(0, sb:stats().creates)
    h:close()
  end)
end)

describe("client:create over curl", function()
  local sb
  lazy_setup(function() sb = helper.start() end)
  lazy_teardown(function() if sb then sb:stop() end end)
  before_each(function() assert(sb:reset()) end)

  it("runs no Lua function of the library but create for the usual call", function()
    local c = link.new({ base_url = sb.url, token = "tok" })
    local req = cases.request()
    assert(c:create(req))
    local res
    assert.equal(0, library_calls(function() res = c:create(req) end, c.create))
    assert.equal("table", type(res))
    assert.equal(2, sb:stats().creates)
    -- the bound call is in no field of the client: its headers hold the
    -- token (only _token's upvalue may)
    for k, v in pairs(c) do
      for i = 1, type(v) == "function" and k ~= "_token" and 255 or 0 do
        local name, up = debug.getupvalue(v, i)
        if not name then break end
        for _, x in pairs(type(up) == "table" and up or {}) do
          assert.is_falsy(type(x) == "string" and x:find("tok", 1, true), k)
        end
      end
    end
    c:close()
  end)

  it("takes the general path with options, a token function or a hook, with the same results", function()
    local tokens = 0
    local events = {}
    local clients = {
      link.new({ base_url = sb.url, token = function() tokens = tokens + 1; return "t" end }),
      link.new({ base_url = sb.url, on_attempt = function(ev) events[#events + 1] = ev end }),
    }
    for _, c in ipairs(clients) do
      local res = assert(c:create(cases.request()))
      assert.same({ status = 200, attempts = 1 }, { status = res.status, attempts = res.attempts })
      c:close()
    end
    assert.equal(1, tokens)
    assert.equal(1, #events)
    -- options: now moves the expiry check
    local c = link.new({ base_url = sb.url })
    local now = os.time()
    local req = cases.request({ expired_at = now + 60 })
    assert(c:create(req, { now = now }))
    local res, err = c:create(req, { now = now + 3600 })
    assert.is_nil(res)
    assert.equal("validation", err.kind)
    assert.equal(0, err.attempts)
    assert.equal(3, sb:stats().creates)
    c:close()
  end)

  it("answers a closed client, a bad request and errors after sending as before", function()
    local c = link.new({ base_url = sb.url })
    local res, err = c:create(cases.request({ amount = -1 }))
    assert.is_nil(res)
    assert.equal("validation", err.kind)
    assert.equal(0, err.attempts)
    assert.equal("amount", err.errors[1].field)
    assert(sb:faults("create", { { status = 503 }, { status = 503 }, { status = 503 } }))
    c = link.new({ base_url = sb.url, retries = 1, retry_base = 0.001 })
    res, err = c:create(cases.request())
    assert.is_nil(res)
    assert.equal("http", err.kind)
    assert.equal(503, err.status)
    assert.equal(2, err.attempts)
    c:close()
    res, err = c:create(cases.request())
    assert.is_nil(res)
    assert.same({ "transport", "client is closed", 0 }, { err.kind, err.message, err.attempts })
  end)

  -- The bound call is kept in a weak table keyed by the client (close
  -- clears it): a client dropped without close must go, with its handle,
  -- on 5.1 and LuaJIT too (weak keys there are no ephemerons: the bound
  -- call must not reach its client).
  it("lets a client dropped without close be collected with its handle", function()
    local handles = setmetatable({}, { __mode = "k" })
    for i = 1, 20 do
      local c = link.new({ base_url = sb.url, token = "tok" .. i })
      assert(c:create(cases.request()))
      handles[c._h] = true
    end
    for _ = 1, 4 do collectgarbage() end
    assert.is_nil(next(handles))
    assert.equal(20, sb:stats().creates)
  end)

  -- The general path hands its own token (resolved for this call) to what
  -- reads a sent create's answer: a token function's nil (no header) is
  -- that call's token, not the function.
  it("reads and retries an answer other than the usual one for a token function's nil", function()
    local calls = 0
    local c = link.new({ base_url = sb.url, retries = 1, retry_base = 0.001,
                         token = function() calls = calls + 1; return nil end })
    assert(sb:faults("create", { { status = 503 }, { status = 503 } }))
    local res, err = c:create(cases.request())
    assert.is_nil(res)
    assert.same({ "http", 503, 2 }, { err.kind, err.status, err.attempts })
    assert(sb:faults("create", { { status = 503 } }))
    res = assert(c:create(cases.request()))
    assert.same({ 200, 2 }, { res.status, res.attempts })
    assert.equal(2, calls)
    assert.equal(1, sb:stats().creates)
    c:close()
  end)

  -- (not tail calls: a tail call leaves no caller's line to point at)
  it("raises argument errors at the caller's line", function()
    local c = link.new({ base_url = sb.url })
    -- calls fn (its call on the line after the caller's) and matches the error
    local function raises_at(want, fn)
      local line = debug.getinfo(2, "l").currentline + 1
      local ok, e = pcall(fn)
      assert.is_false(ok)
      assert.matches("bound_create_spec.lua:" .. line .. ": " .. want, e)
    end
    raises_at("bad argument #1 to 'create' %(table expected, got string%)", function()
      local r = c:create("req"); return r end)
    raises_at("bad self to 'create'", function()
      local r = c.create(cases.request()); return r end)
    raises_at("bad self to 'create'", function()
      local r = c.create(5); return r end)
    raises_at("bad argument #2 to 'create'", function()
      local r = c:create(cases.request(), { later = 1 }); return r end)
    assert.equal(0, sb:stats().creates)
    c:close()
  end)
end)
