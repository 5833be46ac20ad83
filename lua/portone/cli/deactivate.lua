--- `portone-link deactivate URL|ID`: deactivates one link.
local common = require "portone.cli.common"

local M = {}

M.USAGE = [[
usage: portone-link deactivate [options] [--] URL|ID

Deactivates a payment link, given as its URL (https://impay.link/4bdf239e)
or its id (4bdf239e). Deactivating twice is not an error.

]] .. common.CLIENT_HELP .. [[

'--' ends the options: an id that starts with '-' (ids are
[A-Za-z0-9_-]) goes after it, e.g. portone-link deactivate -- -abc.
Without it, -abc is read as an unknown option (exit 2, nothing sent).

Exit: 0 deactivated, 1 the API or the network failed, 2 usage error or a
malformed id.
]]

function M.main(args)
  local o, pos = common.parse(args, common.CLIENT_FLAGS)
  if not o then return common.usage_error("deactivate", pos, M.USAGE) end
  if o.help then io.stdout:write(M.USAGE); return common.OK end
  if #pos ~= 1 then return common.usage_error("deactivate", "expects one URL or id", M.USAGE) end
  local client, cerr = common.client(o)
  if not client then return common.usage_error("deactivate", cerr) end
  local target = pos[1]
  local ok, err = client:deactivate(target)
  client:close()
  local id = require("portone.link.protocol").link_id(target, client._link_hosts)
  if ok then
    if o.json then common.json_line({ ok = true, id = id })
    else io.stdout:write("deactivated ", id, "\n") end
    return common.OK
  end
  if o.json then common.json_line({ ok = false, error = common.error_table(err) })
  else io.stderr:write("portone-link deactivate: ", common.describe_error(err), "\n") end
  return err.kind == "validation" and common.USAGE or common.FAILED
end

return M
