--- `portone-link sandbox pay ID|URL [--method M]` and `portone-link sandbox
-- deposit IMP_UID`: play the buyer of a sandbox link from the command line,
-- then show the webhook deliveries, as the bridge page's buttons would.
--
-- They talk to a running sandbox's admin API: `GET /__sandbox/links/{id}`
-- (the link with its pay_methods), `POST pay` / `POST deposit`, and
-- `GET /__sandbox/payments/{imp_uid}` (the payment and its deliveries).
local common = require "portone.cli.common"
local cjson = require "cjson.safe"

local M = {}

M.USAGE = [[
usage: portone-link sandbox pay [options] [--] ID|URL
       portone-link sandbox deposit [--base-url URL] [--json] [--] IMP_UID

'pay' pays a link of a running sandbox as a buyer would; 'deposit' pays
into the virtual account of a 'ready' vbank payment. Each then waits (up
to 5 s) for the webhook to the link's notice_url (or the sandbox's
--forward-to) and prints each delivery with its answer.

  --method M       how the buyer pays: a pay_method of the link (card,
                   vbank, ...), an index into its pay_methods (1, 2, ...),
                   "direct", or "fail": the buyer declines, which records
                   a 'failed' payment (no webhook: PortOne sends none
                   for a failed payment) and leaves the link payable.
                   Default: the first pay method; for a link with
                   'direct' (no bridge page), its direct method, the
                   only one it offers (another is refused).
                   card-like methods give a 'paid' payment; vbank a
                   'ready' one, with the account to pay into (then
                   'portone-link sandbox deposit IMP_UID', before the
                   account's due date: a deposit after it is refused)
  --base-url URL   the sandbox (default $PORTONE_LINK_BASE_URL); with
                   --tls-cert, its admin URL
  --json           the payment as JSON on stdout
  --help           this text

'--' ends the options: an id that starts with '-' (ids are [A-Za-z0-9_-])
goes after it, e.g. portone-link sandbox pay -- -abc. Without it, -abc is
read as an unknown option (exit 2, nothing sent).

Exit: 0 paid, ready or declined as asked; 1 the sandbox refused (already
paid, its order (merchant_uid) already paid, expired, deactivated, the
payment store full; for deposit: not a ready payment, or past its due
date); 2 usage error, no such link or payment, a method the link does not
offer.
]]

local FLAGS = { ["--method"] = "string", ["--base-url"] = "string", ["--json"] = "bool" }

local function admin(host, port, method, path, body)
  local http = require("portone.sandbox").http
  local status, resp = http(host, port, method, "/__sandbox/" .. path,
    body and cjson.encode(body) or nil, body and { ["Content-Type"] = "application/json" } or nil)
  if not status then return nil, "cannot reach the sandbox at " .. host .. ":" .. port .. ": " .. resp end
  return status, cjson.decode(resp)
end

local function message(status, t)
  return type(t) == "table" and t.message and tostring(t.message) or ("HTTP " .. status)
end

local function same_method(a, b)
  return type(a) == "table" and a.pay_method == b.pay_method
    and (a.pg or a.channelKey) == (b.pg or b.channelKey)
end

-- A link with `direct` skips the bridge page: its payment step offers (and
-- its decline button declines) the direct method only, as the sandbox's.
local function choose_direct(pms, direct, method)
  if method == nil or method == "fail" or method == "direct" or method == direct.pay_method then
    return "direct"
  end
  local i = tonumber(method)
  if i and same_method(pms[i], direct) then return i end
  local m = tostring(direct.pay_method)
  return nil, ("the link has direct (%s): it skips the bridge page and offers only %s"
    .. " (--method %s, direct or fail, or none)"):format(m, m, m)
end

-- The pay method choice for the sandbox: an index, "direct", or nil, message.
-- "fail" declines with the first method (the bridge page's decline button).
local function choose(rec, method)
  local pms = type(rec.pay_methods) == "table" and rec.pay_methods or {}
  local direct = rec.direct
  if type(direct) == "table" and type(direct.pay_method) == "string" then
    return choose_direct(pms, direct, method)
  end
  if method == nil or method == "fail" then return 1 end
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

-- The sandbox's host and port from --base-url / $PORTONE_LINK_BASE_URL, or
-- nil, message.
local function target(o)
  local base = o.base_url or os.getenv("PORTONE_LINK_BASE_URL")
  if not base or base == "" then
    return nil, "give the sandbox's URL: --base-url http://127.0.0.1:PORT"
      .. " (the one 'portone-link sandbox' printed)"
  end
  local host, port = base:match("^http://%[?([^%]/]+)%]?:(%d+)/?$")
  if not host then return nil, "--base-url must be the sandbox's http://HOST:PORT, got " .. base end
  return { host = host, port = tonumber(port), base = base }
end

local function amount_of(p)
  return common.json_encode(p.amount) .. " " .. tostring(p.currency)
end

-- What a payment came to, in words (stdout).
local function describe(id, p, sb)
  if p.status == "failed" then
    io.stdout:write(("declined: link %s, imp_uid %s, merchant_uid %s, failed: %s;"
      .. " the link can still be paid\n"):format(id, p.imp_uid, p.merchant_uid, tostring(p.fail_reason)))
  elseif p.status == "ready" then
    io.stdout:write(("ready: link %s with vbank: imp_uid %s, merchant_uid %s, amount %s, waiting"
      .. " for the deposit\n"):format(id, p.imp_uid, p.merchant_uid, amount_of(p)))
    io.stdout:write(("vbank: %s %s, holder %s, due %s\n"):format(tostring(p.vbank_name),
      tostring(p.vbank_num), tostring(p.vbank_holder),
      os.date("!%Y-%m-%d %H:%M UTC", tonumber(p.vbank_date) or 0)))
    io.stdout:write(("deposit: portone-link sandbox deposit --base-url %s %s\n"):format(sb.base, p.imp_uid))
  else
    io.stdout:write(("%s link %s with %s: imp_uid %s, merchant_uid %s, amount %s\n"):format(
      tostring(p.status), id, tostring(p.pay_method), p.imp_uid, p.merchant_uid, amount_of(p)))
  end
end

-- Prints the deliveries of the webhook for `notice` (a payment status) as
-- the sandbox logs them (it sends from a timer), waiting up to 5 s for
-- `want` of them. Deliveries of an earlier notice are skipped.
local function show_webhooks(sb, imp_uid, notice, want, quiet)
  local socket = require "socket"
  local deadline, shown = socket.gettime() + 5, 0
  while socket.gettime() < deadline and shown < want do
    local _, q = admin(sb.host, sb.port, "GET", "payments/" .. imp_uid)
    local seen = 0
    for _, w in ipairs(type(q) == "table" and type(q.webhooks) == "table" and q.webhooks or {}) do
      if w.notice == notice then
        seen = seen + 1
        if seen > shown then
          local what = w.status and ("HTTP " .. common.json_encode(w.status))
            or w.dropped and "dropped (sandbox webhook mode)" or tostring(w.error)
          if not quiet then
            io.stdout:write(("webhook %d (%s): %s%s\n"):format(seen, notice, what,
              w.ms and (" in " .. common.json_encode(w.ms) .. " ms") or ""))
          end
          shown = seen
          if w.dropped or w.error then want = shown end
        end
      end
    end
    if shown < want then socket.sleep(0.05) end
  end
  if shown == 0 and not quiet then io.stdout:write("webhook: not delivered within 5 s\n") end
end

-- The webhook part of a pay or deposit answer {payment, webhook = mode}.
local function after(sb, answer, quiet)
  local mode = answer.webhook
  if mode == "none" then
    if not quiet then
      io.stdout:write(answer.payment.status == "failed"
        and "webhook: none (PortOne sends none for a failed payment)\n"
        or "webhook: none (the link has no notice_url)\n")
    end
    return
  end
  if mode == "refused" then
    if not quiet then io.stdout:write("webhook: not sent (notice_url is off loopback)\n") end
    return
  end
  show_webhooks(sb, answer.payment.imp_uid, answer.payment.status, mode == "twice" and 2 or 1, quiet)
end

local function deposit(o, pos, sb)
  local imp_uid = pos[1]
  if not imp_uid:match("^[%w_-]+$") then
    return common.usage_error("sandbox deposit", "not an imp_uid: " .. imp_uid)
  end
  local status, t = admin(sb.host, sb.port, "POST", "deposit", { imp_uid = imp_uid })
  if not status then return common.usage_error("sandbox deposit", t) end
  if status == 404 then
    return common.usage_error("sandbox deposit",
      "no payment '" .. imp_uid .. "' in the sandbox at " .. sb.base)
  end
  if status ~= 200 then
    io.stderr:write("portone-link sandbox deposit: ", message(status, t), "\n")
    return common.FAILED
  end
  local p = t.payment
  if o.json then common.json_line(p)
  else
    io.stdout:write(("deposited: imp_uid %s, merchant_uid %s, amount %s is paid\n"):format(
      p.imp_uid, p.merchant_uid, amount_of(p)))
  end
  after(sb, t, o.json)
  return common.OK
end

--- `sandbox pay` (cmd "pay") or `sandbox deposit` (cmd "deposit").
function M.main(args, cmd)
  cmd = cmd or "pay"
  local name = "sandbox " .. cmd
  local o, pos = common.parse(args, FLAGS)
  if not o then return common.usage_error(name, pos, M.USAGE) end
  if o.help then io.stdout:write(M.USAGE); return common.OK end
  if cmd == "deposit" and o.method then
    return common.usage_error(name, "--method is for 'sandbox pay'", M.USAGE)
  end
  if #pos ~= 1 then
    return common.usage_error(name, cmd == "pay" and "expects one link id or URL" or "expects one imp_uid",
      M.USAGE)
  end
  local sb, terr = target(o)
  if not sb then return common.usage_error(name, terr) end
  if cmd == "deposit" then return deposit(o, pos, sb) end

  local id = pos[1]:match("([A-Za-z0-9_-]+)/?$")
  if not id then return common.usage_error(name, "not a link id or URL: " .. pos[1]) end
  local status, rec = admin(sb.host, sb.port, "GET", "links/" .. id)
  if not status then return common.usage_error(name, rec) end
  if status == 404 then
    return common.usage_error(name, "no link '" .. id .. "' in the sandbox at " .. sb.base)
  end
  if status ~= 200 or type(rec) ~= "table" then
    io.stderr:write("portone-link ", name, ": ", message(status, rec), "\n")
    return common.FAILED
  end
  local choice, cerr = choose(rec, o.method)
  if not choice then return common.usage_error(name, cerr) end

  local pstatus, paid = admin(sb.host, sb.port, "POST", "pay",
    { id = id, method = choice, decline = o.method == "fail" })
  if not pstatus then return common.usage_error(name, paid) end
  if pstatus ~= 200 then
    io.stderr:write("portone-link ", name, ": ", message(pstatus, paid), "\n")
    return common.FAILED
  end
  if o.json then common.json_line(paid.payment) else describe(id, paid.payment, sb) end
  after(sb, paid, o.json)
  return common.OK
end

return M
