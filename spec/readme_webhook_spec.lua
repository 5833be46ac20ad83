-- The README's webhook section is a program (create -> pay -> webhook ->
-- verify -> refund against a sandbox): run it as written, so that it cannot
-- drift from what the library and the sandbox do.
describe("README webhook section", function()
  it("runs as written and refunds in two steps", function()
    local f = assert(io.open("README.md", "rb"))
    local s = f:read("*a")
    f:close()
    local at = assert(s:find("## Webhooks and verification", 1, true))
    local code = assert(s:match("```lua\n(.-)```", at))
    local printed = {}
    local env = setmetatable({ print = function(...)
      local t = {}
      for i = 1, select("#", ...) do t[i] = tostring((select(i, ...))) end
      printed[#printed + 1] = table.concat(t, " ")
    end }, { __index = _G })
    local chunk
    if setfenv then -- luacheck: ignore 113 (5.1)
      chunk = assert(loadstring(code, "=README")) -- luacheck: ignore 113
      setfenv(chunk, env) -- luacheck: ignore 113
    else
      chunk = assert(load(code, "=README", "t", env))
    end
    chunk()
    assert.same({ "paid 3000", "cancelled 10000" }, printed)
  end)
end)
