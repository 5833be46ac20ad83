-- The guides' code snippets run as written (against a sandbox), so that they
-- cannot drift from the library: getting started's first link, and the
-- errors guide's create_many loop (never-started entries are requeued, the
-- created ones saved, the rest reported) and its error branches.
local link = require "portone.link"
local cases = require "helpers.cases"
local helper = require "helpers.sandbox"

-- The `n`th ```lua block of a guide that contains `marker`.
local function snippet(file, marker)
  local f = assert(io.open("docs/guide/" .. file, "rb"))
  local s = f:read("*a")
  f:close()
  for code in s:gmatch("```lua\n(.-)```") do
    if code:find(marker, 1, true) then return code end
  end
  error(file .. ": no lua block with " .. marker)
end

-- Runs code with `env` over _G (5.1 and 5.4).
local function run(code, name, env)
  env = setmetatable(env, { __index = _G })
  local chunk
  if setfenv then -- luacheck: ignore 113 (5.1)
    chunk = assert(loadstring(code, "=" .. name)) -- luacheck: ignore 113
    setfenv(chunk, env) -- luacheck: ignore 113
  else
    chunk = assert(load(code, "=" .. name, "t", env))
  end
  return chunk()
end

describe("guide snippets", function()
  local sb

  lazy_setup(function() sb = helper.start() end)
  lazy_teardown(function() if sb then sb:stop() end end)

  it("getting started: a first link, made and deactivated", function()
    local code = snippet("getting-started.md", "client:create{")
    local n
    code, n = code:gsub('"http://127%.0%.0%.1:8080"', ("%q"):format(sb.url))
    assert.equal(1, n)
    local printed = {}
    run(code, "getting-started", { print = function(s) printed[#printed + 1] = s end })
    assert.equal(1, #printed)
    local id = printed[1]:match("^" .. sb.url:gsub("%p", "%%%0") .. "/(%x+)$")
    assert.truthy(id, printed[1])
    local rec = assert(sb:admin("GET", "links/" .. id))
    assert.is_false(rec.active)
  end)

  it("errors and retries: create_many's loop requeues exactly the entries never sent", function()
    local code = snippet("errors-and-retries.md", "create_many(reqs")
    local real = link.new{ base_url = sb.url, transport = "curl" }
    -- the client, stopped by its on_progress after the first result: the
    -- snippet's concurrency (32) is in flight then, the rest never starts
    local client = setmetatable({
      create_many = function(_, reqs, opts)
        opts.on_progress = function(done) if done == 1 then error("stop here") end end
        return real:create_many(reqs, opts)
      end,
    }, { __index = function(_, k) return function(_, ...) return real[k](real, ...) end end })
    local reqs = {}
    for i = 1, 40 do reqs[i] = cases.request() end
    reqs[2] = cases.request{ amount = 0 }                   -- invalid: reported, never sent
    local saved, requeued, reported, logged = {}, {}, {}, {}
    run(code, "errors-and-retries", {
      client = client, reqs = reqs,
      save = function(i, url) saved[#saved + 1] = i; assert.is_string(url) end,
      requeue = function(i) requeued[#requeued + 1] = i end,
      report = function(i, err) reported[#reported + 1] = i; assert.is_table(err) end,
      log = function(s) logged[#logged + 1] = s end,
    })
    real:close()
    assert.equal(40, #saved + #requeued + #reported)
    assert.same({ 2 }, reported)
    assert.is_true(#requeued >= 1)
    local created = sb:stats().creates
    assert.is_true(created >= #saved)
    for _, i in ipairs(requeued) do assert.is_true(i > 2) end
    assert.equal(1, #logged)
    assert.truthy(logged[1]:find("create_many stopped: ", 1, true), logged[1])
    assert.truthy(logged[1]:find("stop here", 1, true), logged[1])
  end)

  it("errors and retries: the branches of a failed create", function()
    local code = snippet("errors-and-retries.md", 'err.kind == "validation"')
    local client = link.new{ base_url = sb.url, transport = "curl", retries = 0 }
    local function go(req)
      local printed, logged = {}, {}
      run(code, "errors-and-retries", { client = client, req = req,
        print = function(...) printed[#printed + 1] = table.concat({ ... }, " ") end,
        log = function(s) logged[#logged + 1] = s end })
      return printed, logged
    end
    local printed, logged = go(cases.request{ amount = 0 })
    assert.same({ "amount range must be greater than 0" }, printed)
    assert.same({}, logged)
    -- a 503 may be tried later: neither printed nor logged
    assert(sb:faults("create", { { status = 503 } }))
    printed, logged = go(cases.request())
    assert.same({}, printed)
    assert.same({}, logged)
    -- a 500 after the send is final: logged
    assert(sb:faults("create", { { status = 500 } }))
    printed, logged = go(cases.request())
    assert.same({}, printed)
    assert.equal(1, #logged)
    assert.truthy(logged[1]:find("HTTP 500", 1, true), logged[1])
    client:close()
  end)
end)
