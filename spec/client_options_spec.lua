-- An unknown client option suggests the nearest known one.
local link = require "portone.link"

local function err_of(opts)
  local ok, e = pcall(link.new, opts)
  assert.is_false(ok)
  return tostring(e)
end

describe("link.new, unknown options", function()
  it("suggests the nearest option (typo, camelCase, a dropped letter)", function()
    assert.truthy(err_of({ base_uri = "https://x.example" })
      :find("option 'base_uri' is unknown: did you mean 'base_url'?", 1, true))
    assert.truthy(err_of({ baseUrl = "https://x.example" }):find("did you mean 'base_url'?", 1, true))
    assert.truthy(err_of({ timout = 3 }):find("did you mean 'timeout'?", 1, true))
    assert.truthy(err_of({ max_concurency = 3 }):find("did you mean 'max_concurrent'?", 1, true))
  end)

  it("suggests nothing when no option is close", function()
    local e = err_of({ xyzzy = 1 })
    assert.truthy(e:find("option 'xyzzy' is unknown", 1, true))
    assert.is_nil(e:find("did you mean", 1, true))
    assert.is_nil(err_of({ [1] = true }):find("did you mean", 1, true))
  end)
end)
