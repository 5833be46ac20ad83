-- The fault queue's refusals that a real sandbox cannot be brought to on
-- purpose: another call holding the queue's lock, a dict so full that not
-- even the lock fits, a push refused after other calls' faults. The
-- modules run outside nginx with a dict double (a real full faults dict:
-- spec/sandbox_spec.lua, "faults").
local cjson = require "cjson"
local fake_dict = require "helpers.fake_dict"

local MODULES = { "portone.sandbox.state", "portone.sandbox.faults" }

describe("sandbox fault queue", function()
  local saved, dict, faults, slept

  before_each(function()
    saved = rawget(_G, "ngx")
    dict, slept = fake_dict.new(), 0
    rawset(_G, "ngx", { shared = { portone_faults = dict }, sleep = function() slept = slept + 1 end })
    for _, m in ipairs(MODULES) do package.loaded[m] = nil end
    faults = require "portone.sandbox.faults"
  end)
  after_each(function()
    rawset(_G, "ngx", saved)
    for _, m in ipairs(MODULES) do package.loaded[m] = nil end
  end)

  -- the queued faults of a class, oldest first
  local function queued(match)
    local out = {}
    local l = dict.data["q:" .. match] or {}
    for i = #l, 1, -1 do out[#out + 1] = cjson.decode(l[i]).status end
    return out
  end

  it("takes back only its own faults when one does not fit", function()
    assert.equal(2, faults.queue("create", { { status = 500 }, { status = 501 } }))
    dict.refuse = function(_, v) return type(v) == "string" and v:find("504", 1, true) ~= nil end
    local n, why, status = faults.queue("create", { { status = 502 }, { status = 503 }, { status = 504 } })
    assert.is_nil(n)
    assert.equal(507, status)
    assert.matches("the faults dict is full: none of this call's faults was queued (3); the 2 queued"
      .. " before stay", why, 1, true)
    assert.same({ 500, 501 }, queued("create"))
    assert.is_nil(dict.data["lock:q:create"])   -- the lock is given back
    assert.equal(500, faults.take("create").status)
  end)

  it("answers 507 and queues nothing when not even the lock fits", function()
    dict.refuse = function(k) return k:find("^lock:") ~= nil end
    local n, why, status = faults.queue("page", { { status = 500 } })
    assert.is_nil(n)
    assert.equal(507, status)
    assert.matches("none of this call's faults was queued (1)", why, 1, true)
    assert.same({}, queued("page"))
  end)

  it("waits for another call queueing for the class, then answers 503 and queues nothing", function()
    dict.data["lock:q:token"] = true   -- another worker's call, still queueing
    local n, why, status = faults.queue("token", { { status = 500 } })
    assert.is_nil(n)
    assert.equal(503, status)
    assert.matches("another call is queueing faults for 'token'; try again", why, 1, true)
    assert.is_true(slept > 100)
    assert.same({}, queued("token"))
    -- once that call is done, the queue takes faults again
    dict.data["lock:q:token"] = nil
    assert.equal(1, faults.queue("token", { { status = 500 } }))
  end)
end)
