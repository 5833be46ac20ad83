--- A TAP writer for the node-driven suites (e2e/run.lua, compat/run.lua):
-- each check is printed as it happens and the whole list is written to a
-- file at the end, for scripts/tally.
--
--   local tap = require("helpers.tap").new("build/results/e2e.tap", "e2e")
--   tap.ok(cond, "name", detail) ; tap.write() ; tap.failed
local M = {}

function M.new(path, prefix)
  local self = { failed = 0 }
  local lines, n = {}, 0
  local function out(s) lines[#lines + 1] = s; print(s); io.stdout:flush() end
  self.out = out
  --- Records one check; returns cond.
  function self.ok(cond, name, detail)
    n = n + 1
    if cond then out(("ok %d - %s: %s"):format(n, prefix, name)) else
      self.failed = self.failed + 1
      out(("not ok %d - %s: %s"):format(n, prefix, name))
      if detail then out("# " .. tostring(detail):gsub("\n", "\n# ")) end
    end
    return cond
  end
  --- Writes every line so far and the plan to `path`.
  function self.write()
    os.execute("mkdir -p " .. path:match("^(.*)/[^/]*$"))
    local f = assert(io.open(path, "w"))
    f:write(table.concat(lines, "\n"), "\n", ("1..%d\n"):format(n))
    f:close()
  end
  return self
end

return M
