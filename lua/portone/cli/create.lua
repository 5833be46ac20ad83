--- `portone-link create FILE|-`: creates one link from a JSON request.
local common = require "portone.cli.common"

local M = {}

M.USAGE = [[
usage: portone-link create [options] FILE|-

Creates a payment link from the JSON request in FILE (or stdin for -) and
prints its URL (with --json: {"url", "id", "status"}).

]] .. common.CLIENT_HELP .. [[

Exit: 0 created, 1 the API or the network failed, 2 usage or input error
(unreadable file, bad JSON, a request that fails validation).
]]

function M.main(args)
  local o, pos = common.parse(args, common.CLIENT_FLAGS)
  if not o then return common.usage_error("create", pos, M.USAGE) end
  if o.help then io.stdout:write(M.USAGE); return common.OK end
  if #pos ~= 1 then return common.usage_error("create", "expects one FILE or -", M.USAGE) end
  local text, rerr = common.read_all(pos[1])
  if not text then return common.usage_error("create", rerr) end
  local req, derr = common.decode_object(text)
  if not req then return common.usage_error("create", pos[1] .. ": " .. derr) end
  local client, cerr = common.client(o)
  if not client then return common.usage_error("create", cerr) end
  -- a closed stdout pipe must fail the write (EPIPE), not kill the
  -- process after the link is made: its URL then goes to stderr
  require("portone.cli.signal").ignore_pipe()
  local res, err = client:create(req)
  client:close()
  if res then
    local ok, werr
    if o.json then ok, werr = common.json_line({ url = res.url, id = res.id, status = res.status })
    else ok, werr = common.write_line(res.url) end
    if ok then return common.OK end
    -- the link exists: never lose its URL, and never exit 0 without it
    io.stderr:write("portone-link create: created ", res.url, " (id ", res.id,
      ") but cannot write stdout (", tostring(werr), ")\n")
    return common.FAILED
  end
  -- sent with no clear answer: running the command again could make a
  -- second link, so say so (the link API has no lookup by merchant_uid)
  local maybe = common.may_exist(err)
  if o.json then
    local e = common.error_table(err)
    e.may_exist = maybe
    common.json_line({ error = e })
  else
    io.stderr:write("portone-link create: ", common.describe_error(err), "\n")
    if maybe then
      io.stderr:write("portone-link create: the request was sent and no clear answer came back:"
        .. " the link may exist; check before you create it again\n")
    end
  end
  return err.kind == "validation" and common.USAGE or common.FAILED
end

return M
