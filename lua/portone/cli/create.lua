--- `portone-link create FILE|-`: creates one link from a JSON request.
local common = require "portone.cli.common"

local M = {}

M.USAGE = [[
usage: portone-link create [options] FILE|-

Creates a payment link from the JSON request in FILE (or stdin for -) and
prints its URL (with --json: {"url", "id", "status"}).

]] .. common.CLIENT_HELP .. [[

Ctrl-C, SIGTERM or SIGHUP while the request is in flight: the command waits
for its answer and prints it as usual. A second one abandons the request,
says the link may exist and exits 130 (SIGTERM: 143, SIGHUP: 129). One that
comes before the request could leave stops the command at once: no link
was made.

Exit: 0 created, 1 the API or the network failed, 2 usage or input error
(unreadable file, bad JSON, a request that fails validation), 130/143/129
abandoned by a signal.
]]

-- Sends req and waits for its answer with SIGINT, SIGTERM and SIGHUP
-- counted, not fatal: the interpreter's "interrupted!" (or SIGTERM's default) would end
-- the command between the link's creation and the line that prints it.
-- The first signal waits for the answer; a second, or one that came before
-- the request could leave, abandons it. Returns res, err; or nil, true
-- when the request left (the link may exist) or false, and the signal,
-- when it was abandoned.
local function await(client, req, sig)
  sig.catch()
  local res, err, done
  local h, qerr = client:create_async(req, function(r, e) res, err, done = r, e, true end)
  if not h then return nil, qerr end
  local told, polled = false, false
  while not done do
    local count, signo = sig.count()
    if count >= 2 or (count >= 1 and not polled) then
      local _, maybe = client:close()
      return nil, #maybe > 0, signo
    end
    if count >= 1 and not told then
      told = true
      io.stderr:write("portone-link create: waiting for the answer to the request in flight"
        .. " (Ctrl-C again abandons it: the link may then exist)\n")
    end
    client:poll(100)
    polled = true
  end
  return res, err
end

-- Reports a request abandoned by a signal; returns the exit code.
local function abandoned(o, sent, code)
  local msg = sent and "abandoned in flight by a signal: the link may exist"
    or "stopped by a signal before the request left: no link was made"
  if o.json then
    common.json_line({ error = { kind = "abandoned", message = msg, sent = sent, may_exist = sent } })
  else
    io.stderr:write("portone-link create: ", msg, sent and "; check before you create it again\n" or "\n")
  end
  return code
end

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
  local sig = require "portone.cli.signal"
  sig.ignore_pipe()
  local res, err, signo = await(client, req, sig)
  client:close()
  sig.release()
  if signo then return abandoned(o, err, 128 + signo) end
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
