-- The sandbox's modules require each other in one direction: the router on
-- top, one module per surface below it, the shared state below those, used
-- by all and using none of them. Read from the sources (every require,
-- lazy ones inside functions included).
local LAYERS = {
  server = 1,                                                   -- the router
  admin = 2, link_api = 2, rest_v1 = 2, bridge = 2,             -- surfaces
  payments = 3, webhooks = 4, tokens = 4, faults = 4, reqlog = 4, -- shared
  state = 5,
}

local function requires(name)
  local f = assert(io.open("lua/portone/sandbox/" .. name .. ".lua", "rb"))
  local src = f:read("*a")
  f:close()
  local out = {}
  for dep in src:gmatch("require%s*%(?%s*[\"']portone%.sandbox%.([%w_]+)[\"']") do out[#out + 1] = dep end
  return out
end

describe("sandbox modules", function()
  it("each has a layer, and every require points to a lower layer (no cycles)", function()
    local p = io.popen("ls lua/portone/sandbox")
    for file in p:lines() do
      local name = file:match("^(.-)%.lua$")
      if name and name ~= "init" then   -- init: the host side, never loaded in nginx
        assert.is_not_nil(LAYERS[name], name .. " has no layer")
        for _, dep in ipairs(requires(name)) do
          assert.is_true(LAYERS[dep] ~= nil and LAYERS[dep] > LAYERS[name],
            name .. " requires " .. dep .. " of the same or a higher layer")
        end
      end
    end
    p:close()
  end)
end)
