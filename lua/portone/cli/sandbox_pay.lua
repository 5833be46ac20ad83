--- `portone-link sandbox pay ID|URL [--method M]`: plays the buyer of a
-- sandbox link from the command line, then shows the webhook delivery.
--
-- It talks to a running sandbox's admin API (`/__sandbox/links`, `pay`,
-- `payments`), like the bridge page's button does.
local common = require "portone.cli.common"
local cjson = require "cjson.safe"

local M = {}

M.USAGE = [[
usage: portone-link sandbox pay [options] ID|URL

Pays a link of a running sandbox as a buyer would, then waits (up to 5 s)
for the webhook to the link's notice_url (or the sandbox's --forward-to)
and prints each delivery with its answer.

  --method M       how the buyer pays: a pay_method of the link (card,
                   vbank, ...), an index into its pay_methods (1, 2, ...),
                   "direct", or "fail": the payment is declined, nothing is
                   recorded and no webhook is sent (PortOne notifies only
                   successful payments). Default: the first pay method
  --base-url URL   the sandbox (default $PORTONE_LINK_BASE_URL); with
                   --tls-cert, its admin URL
  --json           the payment as JSON on stdout
  --help           this text

Exit: 0 paid (or declined as asked), 1 the sandbox refused (already paid,
expired, deactivated), 2 usage error or no such link.
]]

local FLAGS = { ["--method"] = "string", ["--base-url"] = "string", ["--json"] = "bool" }

local function admin(host, port, method, path, body)
  local http = require("portone.sandbox").http
  local status, resp = http(host, port, method, "/__sandbox/" .. path,
    body and cjson.encode(body) or nil, body and { ["Content-Type"] = "application/json" } or nil)
  if not status then return nil, "cannot reach the sandbox at " .. host .. ":" .. port .. ": " .. resp end
  return status, cjson.decode(resp)
end

-- The pay method choice for the sandbox: an index, "direct", or nil, message.
local function choose(rec, method)
  local pms = type(rec.info) == "table" and rec.info.pay_methods or {}
  if method == nil then return 1 end
  if method == "direct" then return "direct" end
  local i = tonumber(method)
  if i then
    if pms[i] then return i end
    return nil, ("the link has %d pay methods, not %s"):format(#pms, method)
  end
  local names = {}
  for k, pm in ipairs(pms) do
    if pm.pay_method == method then return k end
    names[#names + 1] = tostring(pm.pay_method)
  end
  return nil, ("the link offers no '%s' (it offers %s; or: fail, direct, an index)"):format(
    method, table.concat(names, ", "))
end

function M.main(args)
  local o, pos = common.parse(args, FLAGS)
  if not o then return common.usage_error("sandbox pay", pos, M.USAGE) end
  if o.help then io.stdout:write(M.USAGE); return common.OK end
  if #pos ~= 1 then return common.usage_error("sandbox pay", "expects one link id or URL", M.USAGE) end
  local base = o.base_url or os.getenv("PORTONE_LINK_BASE_URL")
  if not base or base == "" then
    return common.usage_error("sandbox pay", "give the sandbox's URL: --base-url http://127.0.0.1:PORT"
      .. " (the one 'portone-link sandbox' printed)")
  end
  local host, port = base:match("^http://%[?([^%]/]+)%]?:(%d+)/?$")
  if not host then
    return common.usage_error("sandbox pay", "--base-url must be the sandbox's http://HOST:PORT, got "
      .. base)
  end
  port = tonumber(port)
  local id = pos[1]:match("([A-Za-z0-9_-]+)/?$")
  if not id then return common.usage_error("sandbox pay", "not a link id or URL: " .. pos[1]) end

  local status, links = admin(host, port, "GET", "links")
  if not status then return common.usage_error("sandbox pay", links) end
  local rec = type(links) == "table" and links[id]
  if not rec then
    return common.usage_error("sandbox pay", "no link '" .. id .. "' in the sandbox at " .. base)
  end

  if o.method == "fail" then
    if not rec.active then
      io.stderr:write("portone-link sandbox pay: link ", id, " is deactivated\n")
      return common.FAILED
    end
    if o.json then common.json_line({ id = id, declined = true })
    else
      io.stdout:write("declined: the buyer's payment for link ", id, " failed; nothing is recorded"
        .. " and no webhook is sent (PortOne notifies only successful payments)\n")
    end
    return common.OK
  end
  local choice, cerr = choose(rec, o.method)
  if not choice then return common.usage_error("sandbox pay", cerr) end

  local pstatus, paid = admin(host, port, "POST", "pay", { id = id, method = choice })
  if not pstatus then return common.usage_error("sandbox pay", paid) end
  if pstatus ~= 200 then
    io.stderr:write("portone-link sandbox pay: ", type(paid) == "table" and tostring(paid.message)
      or ("HTTP " .. pstatus), "\n")
    return common.FAILED
  end
  local p = paid.payment
  local target = rec.info and rec.info.notice_url
  if o.json then
    common.json_line(p)
  else
    io.stdout:write(("paid link %s with %s: imp_uid %s, merchant_uid %s, amount %s %s\n"):format(
      id, tostring(p.pay_method), p.imp_uid, p.merchant_uid, common.json_encode(p.amount), p.currency))
  end

  -- each delivery as the sandbox logs it (it sends from a timer)
  if paid.webhook == "none" and not target then
    if not o.json then io.stdout:write("webhook: none (the link has no notice_url)\n") end
    return common.OK
  end
  local socket = require "socket"
  local deadline, shown = socket.gettime() + 5, 0
  local want = paid.webhook == "twice" and 2 or 1
  while socket.gettime() < deadline and shown < want do
    local _, list = admin(host, port, "GET", "payments")
    for _, q in ipairs(type(list) == "table" and list or {}) do
      if q.imp_uid == p.imp_uid then
        for i = shown + 1, #(q.webhooks or {}) do
          local w = q.webhooks[i]
          local what = w.status and ("HTTP " .. common.json_encode(w.status))
            or w.dropped and "dropped (sandbox webhook mode)" or tostring(w.error)
          if not o.json then
            io.stdout:write(("webhook %d: %s%s\n"):format(i, what,
              w.ms and (" in " .. common.json_encode(w.ms) .. " ms") or ""))
          end
          shown = i
          if w.dropped or w.error then want = shown end
        end
      end
    end
    if shown < want then socket.sleep(0.05) end
  end
  if shown == 0 and not o.json then io.stdout:write("webhook: not delivered within 5 s\n") end
  return common.OK
end

return M
