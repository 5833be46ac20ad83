-- Integration: the link client over the curl transport, against a sandbox on
-- a free loopback port (the shared cases in spec/helpers/cases.lua), plus what
-- only the curl transport and the client's options can show.
local link = require "portone.link"
local cases = require "helpers.cases"
local helper = require "helpers.sandbox"

cases.run("link client over curl", function(base_url, opts)
  return link.new(cases.merge({ base_url = base_url, transport = "curl" }, opts))
end)

describe("link.new options", function()
  it("has documented defaults", function()
    local d = require("portone.link.client").DEFAULTS
    assert.equal("https://api.iamport.co", d.base_url)
    assert.equal(10, d.timeout)
    assert.equal(3, d.connect_timeout)
    assert.equal(2, d.retries)
    assert.equal(1024 * 1024, d.max_response_bytes)
  end)

  it("raises on a wrong type, naming the option", function()
    for opt, v in pairs({ timeout = "10", connect_timeout = {}, retries = "x", cainfo = 1,
        proxy = true, max_response_bytes = "1", user_agent = 5, token = 5, base_url = 5,
        transport = 5, retry_base = "1", insecure_http = "yes" }) do
      local ok, msg = pcall(link.new, { [opt] = v })
      assert.is_false(ok, opt)
      assert.truthy(tostring(msg):find("'" .. opt .. "'", 1, true), msg)
    end
    assert.has_error(function() link.new("x") end)
  end)

  it("raises on bad values and unknown options", function()
    for _, o in ipairs({ { timeout = 0 }, { connect_timeout = -1 }, { retries = 1.5 },
        { retries = -1 }, { max_response_bytes = 0 }, { transport = "carrier-pigeon" },
        { transport = {} }, { base_url = "ftp://x" }, { base_url = "nonsense" },
        { base_url = "https://u:p@host" }, { timout = 5 } }) do
      assert.is_false((pcall(link.new, o)))
    end
  end)

  it("tostring(client) shows the base URL, never the token", function()
    local c = link.new({ token = "sekrit-token-value" })
    local s = tostring(c)
    assert.truthy(s:find("https://api.iamport.co", 1, true))
    assert.is_nil(s:find("sekrit", 1, true))
    for _, v in pairs(c) do
      assert.are_not.equal("sekrit-token-value", v)
    end
    c:close()
  end)

  it("the curl handle survives close, __gc and a second close", function()
    local c = link.new({})
    c:close()
    c:close()
    link.new({}) -- dropped at once: its curl handle's __gc frees libcurl
    collectgarbage()
    collectgarbage()
  end)

  it("closes a to-be-closed client on Lua 5.4 #lua54", function()
    if not _VERSION:find("5.4") then return end
    local chunk = assert(load([[
      local link = ...
      local outer
      do
        local c <close> = link.new({})
        outer = c
      end
      return outer
    ]]))
    local c = chunk(link)
    local res, err = c:create({})
    assert.is_nil(res)
    assert.equal("transport", err.kind)
  end)
end)

describe("link client misc over curl", function()
  local sb
  lazy_setup(function() sb = helper.start() end)
  lazy_teardown(function() if sb then sb:stop() end end)
  before_each(function() sb:reset() end)

  it("raises on wrong argument types (programmer errors)", function()
    local c = link.new({ base_url = sb.url })
    assert.has_error(function() c:create("x") end)
    local want = "bad argument #2 to 'create' (table {now = number} expected)"
    for _, opts in ipairs({ 1, { now = "1" }, { now = false }, { now = 0 / 0 } }) do
      assert.has_error(function() c:create(cases.request(), opts) end, want)
    end
    -- a misspelt option is not dropped (a create that meant a clock of its own)
    assert.has_error(function() c:create(cases.request(), { noww = 1 }) end,
      "bad argument #2 to 'create' (option 'noww' is unknown: did you mean 'now'?)")
    assert.equal(0, sb:stats().creates)
    assert.has_error(function() c:deactivate(42) end)
    assert.has_error(function() c:deactivate() end)
    c:close()
  end)

  it("passes on an error object returned by a token function", function()
    local errors = require "portone.link.errors"
    local c = link.new({ base_url = sb.url, token = function()
      return nil, errors.new("auth", "getToken failed") end })
    local res, err = c:create(cases.request())
    assert.is_nil(res)
    assert.equal("auth", err.kind)
    assert.equal(0, sb:stats().requests)
    c:close()
  end)

  it("a raising token function is kind transport, nothing sent", function()
    local c = link.new({ base_url = sb.url, token = function() error("vault down") end })
    local res, err = c:create(cases.request())
    assert.is_nil(res)
    assert.equal("transport", err.kind)
    assert.truthy(err.message:find("vault down", 1, true))
    assert.equal(0, sb:stats().requests)
    c:close()
  end)

  it("runs many clients side by side, each on its own connection", function()
    local a = link.new({ base_url = sb.url })
    local b = link.new({ base_url = sb.url })
    for _ = 1, 5 do assert(a:create(cases.request())); assert(b:create(cases.request())) end
    assert.equal(2, sb:stats().connections)
    a:close(); b:close()
  end)
end)

-- C review: a finalizer can run inside h:request while it builds the result
-- (body string, header table). Closing the handle there, or making a nested
-- request on it, must not free or overwrite what is being read.
describe("core.http_new and finalizers during request", function()
  local core = require "portone.link.core"
  local gc = require "helpers.gc"
  local sb
  lazy_setup(function() sb = helper.start() end)
  lazy_teardown(function() if sb then sb:stop() end end)

  -- Requests with finalizers pending (helpers.gc) that call act(h) when
  -- they run inside h:request (only the result building allocates there:
  -- a 503 with a 16 KB body, so that 5.1 and LuaJIT, which step once a
  -- KB, step there), until that happened a few times.
  local function rounds(act)
    local hits, url = 0, sb.url .. helper.API
    local body = assert(link.encode(cases.request()))
    gc.eager_gc(function()
      for _ = 1, 100 do
        if hits >= 3 then break end
        assert(sb:faults("create", { { status = 503, body = ("e"):rep(16384) } }))
        local h = core.http_new({})
        local n, status, answer, headers = gc.with_finalizers(function()
          if hits < 100 then pcall(act, h) end
        end, h.request, h, "POST", url, { "Content-Type: application/json" }, body)
        hits = hits + n
        assert(status == 503 and #answer == 16384 and type(headers) == "table")
        assert(headers["content-type"], "headers were read")
        h:close()
      end
    end)
    assert(sb:reset())
    assert.is_true(hits > 0, "no finalizer ran inside request")
  end

  it("close from a finalizer frees the handle once request is done with it", function()
    local after
    rounds(function(h)
      h:close()
      after = { h:request("GET", sb.url .. "/__sandbox/stats") }
    end)
    assert.is_nil(after[1])
    assert.equal("transport", after[2].kind)
  end)

  it("a nested request on the same handle is refused", function()
    local nested
    rounds(function(h) nested = { h:request("GET", sb.url .. "/__sandbox/stats") } end)
    assert.is_nil(nested[1])
    assert.truthy(nested[2].message:find("in use", 1, true))
  end)
end)
