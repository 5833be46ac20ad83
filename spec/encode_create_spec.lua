-- h:encode_create, the client's create in one C call: the request is
-- validated and encoded into the codec's buffer and sent from there
-- (src/http_easy.c, plink_http_encode_create). The body must be exactly
-- core.encode's, every outcome other than the usual answer must hand the
-- client that body back for its retries, and nothing may overwrite the
-- buffer while the body is held in it (finalizers that encode, or raise).
local helper = require "helpers.sandbox"
local cases = require "helpers.cases"
local core = require "portone.link.core"
local link = require "portone.link"
local protocol = require "portone.link.protocol"
local gc = require "helpers.gc"
local with_finalizers, eager_gc = gc.with_finalizers, gc.eager_gc

local HEADERS = { "Content-Type: application/json" }

local function pack(...) return { n = select("#", ...), ... } end

describe("h:encode_create", function()
  local sb, url
  lazy_setup(function()
    sb = helper.start()
    url = sb.url .. protocol.PATH
  end)
  lazy_teardown(function() if sb then sb:stop() end end)
  before_each(function() assert(sb:reset()) end)

  local function send(h, req, now)
    return h:encode_create("POST", url, HEADERS, req, 2, now or os.time())
  end

  it("sends core.encode's body: the usual answer's result, else the results and that body", function()
    local h = core.http_new({ error_headers_only = true })
    local req, now = cases.request(), os.time()
    local res = send(h, req, now)
    assert.equal("table", type(res))
    assert.same({ status = 200, attempts = 1 }, { status = res.status, attempts = res.attempts })
    assert.equal(sb.url .. "/" .. res.id, res.url)
    assert.equal(1, sb:stats().creates)
    local wire = assert(core.encode(req, now))
    local other = '{"shortenedUrl":"https://impay.link/a/b"}'
    assert(sb:faults("create", { { status = 201, body = other }, { status = 503 } }))
    assert.same({ 201, other, nil, 1, wire, n = 5 }, pack(send(h, req, now)))
    local status, body, heads, sends, w = send(h, req, now)
    assert.same({ 503, "string", "table", 1 }, { status, type(body), type(heads), sends })
    assert.equal(wire, w)
    -- a client: the same body on its retry after an error answer
    local c = link.new({ base_url = sb.url })
    assert(sb:faults("create", { { status = 503 } }))
    local r = assert(c:create(req, { now = now }))
    assert.equal(2, r.attempts)
    c:close()
    h:close()
  end)

  it("a request that is not valid: false and core.encode's list, nothing sent", function()
    local h = core.http_new({})
    local req, now = cases.request({ amount = -1, currency = "XYZ" }), os.time()
    local _, want = core.encode(req, now)
    assert.same({ false, want, n = 2 }, pack(send(h, req, now)))
    assert.equal(0, sb:stats().creates)
    h:close()
  end)

  it("a closed handle: nil, info and the body, nothing sent", function()
    local h = core.http_new({})
    h:close()
    local req, now = cases.request(), os.time()
    local s, info, heads, sends, wire = send(h, req, now)
    assert.is_nil(s)
    assert.equal("transport", info.kind)
    assert.same({ nil, nil }, { heads, sends })
    assert.equal(core.encode(req, now), wire)
    assert.equal(0, sb:stats().creates)
  end)

  it("a connection that fails: nil, info and the body", function()
    local h = core.http_new({ connect_timeout = 2 })
    local req, now = cases.request(), os.time()
    local s, info, _, _, wire = h:encode_create("POST", "http://127.0.0.1:1/x", HEADERS, req, 2, now)
    assert.is_nil(s)
    assert.equal("transport", info.kind)
    assert.equal(core.encode(req, now), wire)
    h:close()
  end)

  it("raises on bad arguments, and sends nothing", function()
    local h = core.http_new({})
    local req = cases.request()
    assert.has_error(function() h:encode_create("POST", url, HEADERS, "body", 2, 0) end,
      "bad argument #4 to 'encode_create' (table expected, got string)")
    assert.has_error(function() h:encode_create("POST", url, HEADERS, req, 2, 0 / 0) end,
      "bad argument #6 to 'encode_create' (now must not be NaN)")
    assert.has_error(function() h:encode_create("POST", url, HEADERS, req, 2) end)
    assert.has_error(function() h:encode_create("POST", url, HEADERS, req, 0, 0) end)
    assert.has_error(function() h:encode_create("POST", url .. " x", HEADERS, req, 2, os.time()) end)
    assert.has_error(function() h:encode_create("POST", url, { "X: a\r\nY: b" }, req, 2, os.time()) end)
    assert.has_error(function() h:encode_create("BREW", url, HEADERS, req, 2, os.time()) end)
    assert.equal(0, sb:stats().creates)
    -- the raises after the walk left the codec's buffer marked busy: the
    -- next create takes it back, and the handle still works
    assert.equal("table", type(send(h, req)))
    h:close()
  end)

  -- Creates answered 503, with finalizers that run while the body is held
  -- and call act(h): the body handed back must still be this request's.
  -- (A finalizer's error is only a warning on 5.4: act records, the spec
  -- asserts after.)
  -- With `bound`, through h:bind_create's function (the client's usual
  -- create), which runs encode_create in its own frame.
  local function rounds(act, bound)
    local h, hits, bad = core.http_new({}), 0, nil
    local fast = h:bind_create(url, HEADERS)
    local faults = {}
    for i = 1, 8 do faults[i] = { status = 503, body = ("e"):rep(512) } end
    eager_gc(function()
      -- up to 100 creates: LuaJIT's collector lands in the window about
      -- one time in eight
      for _ = 1, 100 do
        if hits >= 3 then break end
        local req, now = cases.request(), os.time()
        local wire = core.encode(req, now)
        -- a finalizer's create during our walk goes out first: faults for
        -- those too (two at most a window)
        assert(sb:faults("create", faults))
        local k = 0
        local function act2()
          k = k + 1
          if k <= 2 then act(h) end
        end
        local r
        if bound then
          r = pack(with_finalizers(act2, fast, req))
        else
          r = pack(with_finalizers(act2, h.encode_create, h, "POST", url, HEADERS, req, 2, now))
        end
        local n, s, w = r[1], r[2], r[6]
        hits = hits + n
        if not bad and (s ~= 503 or w ~= wire) then bad = { s, w, wire } end
      end
    end)
    assert(sb:reset())
    h:close()
    assert.is_nil(bad)
    assert.is_true(hits > 0, "no finalizer ran while the body was held")
  end

  for _, bound in ipairs({ false, true }) do
    it("a finalizer that encodes while the body is held leaves it intact"
      .. (bound and " (h:bind_create)" or ""), function()
      local got, other, now = {}, cases.request({ title = "from a finalizer" }), os.time()
      local want = core.encode(other, now)
      rounds(function() got[#got + 1] = core.encode(other, now) or "nil" end, bound)
      assert.is_true(#got > 0)
      for _, g in ipairs(got) do assert.equal(want, g) end
    end)
  end

  -- (A finalizer that runs during the walk, before the send, finds the
  -- handle free: its create goes out before ours.)
  it("a finalizer's create on the same handle is refused while ours is held, with its own body", function()
    local got = {}
    rounds(function(h)
      local other, now = cases.request({ title = "nested" }), os.time()
      local r = pack(h:encode_create("POST", url, HEADERS, other, 2, now))
      r.want = core.encode(other, now)
      got[#got + 1] = r
    end)
    assert.is_true(#got > 0)
    for _, r in ipairs(got) do
      if r[1] == nil then
        assert.truthy(r[2].message:find("in use", 1, true))
      else
        assert.equal(503, r[1])
      end
      assert.equal(r.want, r[5])
    end
  end)
end)

-- 5.1 and LuaJIT pass a finalizer's error on to the call that ran the
-- collector: a raise while the body is held must not leave the codec's
-- shared buffers busy for good (each later call would make its own).
if newproxy then -- luacheck: ignore 113
  describe("h:encode_create after a raise while the body is held", function()
    local sb
    lazy_setup(function() sb = helper.start() end)
    lazy_teardown(function() if sb then sb:stop() end end)

    local function bytes_per_encode(n)
      local req, now = cases.request(), os.time()
      return gc.bytes_per_call(n, function() assert(core.encode(req, now)) end)
    end

    -- Creates whose result building (a 503) runs finalizers that raise,
    -- until one did.
    local function raise_once(h, url)
      local raised
      eager_gc(function()
        for _ = 1, 100 do
          assert(sb:faults("create", { { status = 503, body = ("e"):rep(16384) } }))
          local req, now = cases.request(), os.time()
          local _, ok, e = with_finalizers(function() error("finalizer failed") end,
            pcall, h.encode_create, h, "POST", url, HEADERS, req, 2, now)
          if not ok then raised = e; break end
        end
      end)
      return raised
    end

    local function bytes_per_create(h, url, n)
      local req = cases.request()
      return gc.bytes_per_call(n, function()
        assert(type(h:encode_create("POST", url, HEADERS, req, 2, os.time())) == "table")
      end)
    end

    it("takes the shared buffers back", function()
      local h, url = core.http_new({}), sb.url .. protocol.PATH
      local base = bytes_per_encode(100)
      local cbase = math.min(bytes_per_create(h, url, 50), bytes_per_create(h, url, 50))
      local raised = raise_once(h, url)
      assert.truthy(raised and tostring(raised):find("finalizer failed", 1, true),
        "no finalizer raised inside encode_create: " .. tostring(raised))
      -- the next creates and encodes run on the shared buffers again
      assert(sb:reset())                  -- a fault a raise left unused
      assert.equal("table", type(h:encode_create("POST", url, HEADERS, cases.request(), 2, os.time())))
      -- the create first: an encode would take the buffers back itself
      local cafter = math.min(bytes_per_create(h, url, 50), bytes_per_create(h, url, 50))
      local after = bytes_per_encode(100)
      assert.is_true(after <= base * 1.5 + 16,
        ("%.0f bytes an encode after, %.0f before"):format(after, base))
      assert.is_true(cafter <= cbase + 48,
        ("%.0f bytes a create after, %.0f before"):format(cafter, cbase))
      h:close()
    end)
  end)
end
