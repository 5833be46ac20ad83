-- The sandbox's settings (clock offset, latency, webhook and test mode) live
-- in a shared dict of their own, written with safe_set: a setting that does
-- not fit is refused (the admin call answers 507 and the old value stays),
-- never made room for by an eviction. A dict that full cannot be made with
-- the few small keys the sandbox writes, so these cases run the modules
-- outside nginx with a fake ngx whose settings dict refuses a value (the
-- surviving of a full stats dict is in spec/sandbox_spec.lua, "admin").
local cjson = require "cjson"

-- a shared dict double (`refuse(key, value)` makes a value not fit)
local fake_dict = require("helpers.fake_dict").new

local MODULES = { "portone.sandbox.state", "portone.sandbox.admin", "portone.sandbox.webhooks",
                  "portone.sandbox.payments", "portone.sandbox.reqlog", "portone.sandbox.faults",
                  "portone.sandbox.tokens" }

describe("sandbox settings", function()
  local saved, settings, answer, state, admin

  before_each(function()
    saved = rawget(_G, "ngx")
    settings = fake_dict()
    answer = {}
    local body
    rawset(_G, "ngx", {
      shared = { portone_settings = settings },
      var = { host = "127.0.0.1", scheme = "http", http_host = "127.0.0.1" },
      req = { read_body = function() end, get_body_data = function() return body end,
              get_body_file = function() end },
      header = {}, OK = 0, ERR = 4,
      print = function(s) answer.body = s end,
      exit = function() answer.status = ngx.status end,
      log = function() end,
      update_time = function() end, time = function() return 1000000 end,
    })
    for _, m in ipairs(MODULES) do package.loaded[m] = nil end
    state = require "portone.sandbox.state"
    admin = require "portone.sandbox.admin"
    -- one admin request: its HTTP status and decoded answer
    answer.call = function(method, what, req)
      body = req and cjson.encode(req) or nil
      answer.status, answer.body = nil, nil
      admin.handle(method, "/__sandbox/" .. what)
      return answer.status, cjson.decode(answer.body)
    end
  end)

  after_each(function()
    rawset(_G, "ngx", saved)
    for _, m in ipairs(MODULES) do package.loaded[m] = nil end
  end)

  it("state.safe_set puts the old value back when the new one does not fit", function()
    assert.is_true(state.safe_set(settings, "wh_mode", '{"mode":"drop"}'))
    settings.refuse = function(_, v) return v:find("twice", 1, true) ~= nil end
    local ok, err = state.safe_set(settings, "wh_mode", '{"mode":"twice","format":"form"}')
    assert.is_nil(ok)
    assert.equal("no memory", err)
    assert.equal('{"mode":"drop"}', settings:get("wh_mode"))
  end)

  it("set_setting names the setting it could not store and keeps the old value", function()
    assert.is_true(state.set_setting("clock_offset", 60))
    settings.refuse = function(_, v) return v == 120 end
    local ok, err = state.set_setting("clock_offset", 120)
    assert.is_nil(ok)
    assert.matches("sandbox settings dict is full", err, 1, true)
    assert.matches("clock_offset is unchanged", err, 1, true)
    assert.equal(60, state.setting("clock_offset"))
  end)

  it("an admin call whose setting does not fit answers 507 and changes nothing", function()
    local call = answer.call
    assert.same({ 200, { ms = 5 } }, { call("POST", "latency", { ms = 5 }) })
    assert.equal(200, (call("POST", "clock", { offset = 30 })))
    assert.equal(200, (call("POST", "test_mode", { on = true })))
    assert.equal(200, (call("POST", "webhook", { mode = "drop" })))
    -- every new value is refused; the old ones (put back) are taken
    settings.refuse = function(_, v)
      return v == 7 or v == false or (type(v) == "string" and v:find("late", 1, true) ~= nil)
    end
    for _, c in ipairs({ { "latency", { ms = 7 } }, { "clock", { offset = 7 } },
                         { "test_mode", { on = false } }, { "webhook", { mode = "late" } } }) do
      local status, t = call("POST", c[1], c[2])
      assert.equal(507, status, c[1])
      assert.matches("admin: " .. c[1] .. ": sandbox settings dict is full", t.message, 1, true)
    end
    assert.equal(5, state.setting("latency_ms"))
    local _, clock = call("GET", "clock")
    assert.equal(30, clock.offset)
    assert.is_true(state.setting("test_mode"))
    local _, mode = call("GET", "webhook")
    assert.equal("drop", mode.mode)
  end)
end)
