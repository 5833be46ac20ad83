--- The admin API surface, under `/__sandbox/` (JSON in and out; never
-- counted, logged or faulted): faults, latency, clock, stats, the request
-- log, links, payments and their states (what PortOne's console and the
-- buyer would do), webhooks, tokens and keys. The sandbox guide (docs/guide/sandbox.md) lists it.
-- Uses the shared state modules only.
local cjson = require "cjson.safe"
-- luacheck: globals ngx  (handlers assign ngx.status and ngx.header fields)
local state = require "portone.sandbox.state"
local reqlog = require "portone.sandbox.reqlog"
local faults = require "portone.sandbox.faults"
local tokens = require "portone.sandbox.tokens"
local payments = require "portone.sandbox.payments"
local webhooks = require "portone.sandbox.webhooks"

local M = {}

local reply = state.reply
M.LINKS_LIMIT, M.LINKS_MAX = 100, 1000

local function err(status, message) return reply(status, { code = -1, message = "admin: " .. message }) end

local function payments_list()
  local out = payments.all()
  for _, p in ipairs(out) do p.webhooks = webhooks.deliveries(p.imp_uid) end
  return out
end

-- GET /__sandbox/links?page=&limit=: one page of links, newest first, as
-- {id: record}; X-Total-Count and X-Next-Page (0: none) tell the rest.
-- Read through the creation index, never the whole dict: 200 concurrent
-- calls over thousands of links used to freeze the worker.
local function links_page()
  local a = ngx.req.get_uri_args(10)
  local page = math.max(1, math.floor(state.number(a.page) or 1))
  local limit = math.max(1, math.min(math.floor(state.number(a.limit) or M.LINKS_LIMIT), M.LINKS_MAX))
  local links = state.links()
  local total = links:get("#seq") or 0
  local out, n = {}, 0
  for i = total - (page - 1) * limit, math.max(1, total - page * limit + 1), -1 do
    local id = links:get("#" .. i)
    local rec = id and state.get_json(links, id)
    if rec then
      rec.info = nil
      out[id] = rec
      n = n + 1
    end
  end
  ngx.header["X-Total-Count"] = total
  ngx.header["X-Next-Page"] = page * limit < total and page + 1 or 0
  return reply(200, nil, n == 0 and "{}" or state.encode(out))
end

-- A number field: `default` when absent, nil when not a finite number (inf
-- or nan would be stored: an endless latency, a clock at inf) or below `min`.
local function number_field(req, k, default, min)
  if req[k] == nil then return default end
  local v = state.number(req[k])
  if v == nil or (min and v < min) then return nil end
  return v
end

local function keys()
  local c = state.conf
  return { imp_key = c.imp_key, imp_secret = c.imp_secret, made_up = c.keys_made_up and true or false }
end

local GET, POST = {}, {}

GET.faults = function() return reply(200, faults.counts()) end
POST.faults = function(req)
  local match = req.match or "any"
  if not faults.MATCHES[match] then return err(400, "unknown match '" .. tostring(match) .. "'") end
  local list = req.faults or {}
  if type(list) ~= "table" then return err(400, "faults must be an array") end
  local n, e, status = faults.queue(match, list)
  if not n then return err(status, e) end
  return reply(200, { queued = n })
end
POST.latency = function(req)
  local ms = number_field(req, "ms", 0, 0)
  if not ms then return err(400, "latency: ms must be a number >= 0") end
  local ok, e = state.set_setting("latency_ms", ms)
  if not ok then return err(507, "latency: " .. e) end
  return reply(200, { ms = state.setting("latency_ms") })
end
POST.clock = function(req)
  local offset = number_field(req, "offset", 0)
  if not offset then return err(400, "clock: offset must be a number of seconds") end
  local ok, e = state.set_setting("clock_offset", offset)
  if not ok then return err(507, "clock: " .. e) end
  return reply(200, { offset = state.setting("clock_offset"), now = state.now() })
end
GET.clock = function()
  return reply(200, { offset = state.setting("clock_offset") or 0, now = state.now() })
end
GET.stats = function() return reply(200, reqlog.counters()) end
GET.requests = function() return reply(200, nil, state.list_json(reqlog.list())) end
GET.links = links_page
GET.keys = function() return reply(200, keys()) end
POST.reset = function()
  for _, d in ipairs({ state.links(), state.faults(), state.settings(), state.stats(), state.tokens(),
                       state.log() }) do
    d:flush_all(); d:flush_expired()
  end
  payments.flush()
  return reply(200, {})
end

GET.payments = function() return reply(200, nil, state.list_json(payments_list())) end

-- Why `payments.pay` refused (its HTTP status), for the admin's answer.
-- `direct`: the link's direct method, when it has one.
local function pay_refusal(status, direct)
  if status == 400 and direct then
    local m = tostring(direct.pay_method)
    return "the link has direct (" .. m .. "): it skips the bridge page and offers only " .. m
      .. ' (method "direct", its index, or none)'
  end
  return ({ [404] = "no such link", [409] = "already paid", [410] = "expired or deactivated",
            [400] = "no such pay method" })[status]
end

-- The buyer pays (or declines) a link, as the bridge page's form does: with
-- no method, the first one, or for a link with `direct` (which skips the
-- bridge page) the direct one, the only one its payment step offers.
POST.pay = function(req)
  if type(req.id) ~= "string" then return err(400, "pay: id is required") end
  local id = req.id:match("([A-Za-z0-9_-]+)/?$") -- a whole link URL works too
  local rec = id and payments.link(id)
  local direct = rec and payments.direct_method(rec)
  local choice = req.method
  if choice == nil then choice = direct and "direct" or 1 end
  local p, status, _, mode, holder = payments.pay(id or "", tostring(choice),
    { decline = req.decline == true, channel = "api", user_agent = "portone-sandbox-admin" })
  if not p then
    -- `mode` is the refusal's message here (its order is paid, the store is full)
    return reply(status, { code = -1, message = "admin pay: " .. (mode or pay_refusal(status, direct)),
                           imp_uid = holder or id and payments.paid_imp_uid(id) })
  end
  return reply(200, { imp_uid = p.imp_uid, payment = p, webhook = mode })
end

-- The deposit into a virtual account (ready -> paid); answers as `pay` does.
POST.deposit = function(req)
  if type(req.imp_uid) ~= "string" then return err(400, "deposit: imp_uid is required") end
  local p, e = payments.deposit(req.imp_uid)
  if not p then
    local status = e == "no such payment" and 404 or e == payments.FULL and 507 or 409
    return err(status, "deposit: " .. tostring(e))
  end
  return reply(200, { imp_uid = p.imp_uid, payment = p, webhook = e })
end

-- A cancel from PortOne's console: sends the cancellation webhook.
POST.cancel = function(req)
  local amount = req.amount ~= nil and state.number(req.amount) or nil
  if req.amount ~= nil and (not amount or amount < 0) then return err(400, "cancel: amount must be >= 0") end
  local p, c = payments.cancel(tostring(req.imp_uid), { amount = amount, reason = req.reason }, true)
  if not p then
    local status = c == payments.CANCEL.none and 404 or c == payments.FULL and 507 or 409
    return err(status, "cancel: " .. tostring(c))
  end
  return reply(200, { payment = p, cancellation = c })
end

-- Sends a payment's last webhook again, `count` copies at once.
POST.redeliver = function(req)
  local count = number_field(req, "count", 1)
  if not count then return err(400, "redeliver: count must be a number") end
  local n, e = webhooks.redeliver(req.imp_uid, count)
  if not n then return err(404, "redeliver: " .. e) end
  return reply(200, { scheduled = n })
end

-- Later payments are test-mode ones (REST V1 shows them only with include_sandbox=true).
POST.test_mode = function(req)
  local ok, e = state.set_setting("test_mode", req.on == true)
  if not ok then return err(507, "test_mode: " .. e) end
  return reply(200, { on = state.setting("test_mode") })
end

GET.webhook = function() return reply(200, webhooks.mode()) end
POST.webhook = function(req)
  local mode = req.mode or "normal"
  if not webhooks.MODES[mode] then
    return err(400, "webhook: mode must be normal, twice, late or drop")
  end
  local delay = number_field(req, "delay_ms", nil, 0)
  if req.delay_ms ~= nil and not delay then return err(400, "webhook: delay_ms must be a number >= 0") end
  local m = { mode = mode, delay_ms = delay,
              format = req.format == "form" and "form" or "json" }
  local ok, e = webhooks.set_mode(m)
  if not ok then return err(507, "webhook: " .. e) end
  return reply(200, m)
end

POST.tamper = function(req)
  local amount = state.number(req.amount)
  if not amount then return err(400, "tamper: amount (a number) is required") end
  if req.next then
    local ok, e = payments.tamper_next(amount)
    if not ok then return err(507, "tamper: " .. e) end
    return reply(200, { next = true, amount = amount })
  end
  if type(req.imp_uid) ~= "string" then return err(404, "tamper: no such payment") end
  local p, e = payments.tamper(req.imp_uid, amount)
  if not p then return err(e == payments.FULL and 507 or 404, "tamper: " .. tostring(e)) end
  return reply(200, p)
end

POST.tokens = function(req) return reply(200, { revoked = req.revoke and tokens.revoke_all() or 0 }) end

GET.inbox = function() return reply(200, nil, state.list_json(webhooks.inbox_list())) end

-- GET /__sandbox/links/{id}: one link in full, with what the paged list
-- leaves out (its payment_info: pay_methods, notice_url, buyer, ...), and
-- the imp_uid of its payment once paid (`paid_imp_uid`, null before).
local function one_link(id)
  local rec = payments.link(id)
  if not rec then return err(404, "no such link '" .. id .. "'") end
  rec.paid_imp_uid = payments.paid_imp_uid(id) or cjson.null
  return reply(200, rec)
end

-- GET /__sandbox/payments/{imp_uid}: one payment with its webhook
-- deliveries (`webhooks`, left out while there are none: cjson on Debian
-- cannot write an empty list inside an object).
local function one_payment(imp_uid)
  local p = payments.get(imp_uid)
  if not p then return err(404, "no such payment") end
  local w = webhooks.deliveries(imp_uid)
  if #w > 0 then p.webhooks = w end
  return reply(200, p)
end

-- GET paths with an id: /__sandbox/<what>/<id>.
local ONE = { links = one_link, payments = one_payment, receipts = function(imp_uid)
  local p = payments.get(imp_uid)
  if not p then return err(404, "no such payment") end
  return reply(200, p)
end }

-- Web pages in the developer's browser must not use the admin API: it
-- answers the request log (every API call's Authorization header) and the
-- REST keys, and it pays, cancels and resets. A page reaches loopback by
-- DNS rebinding (its own host name rebound to 127.0.0.1; the browser then
-- reads the answers, but the Host header still names that host) or by a
-- cross-site POST (answers unread, the effects done; the browser names the
-- page in Origin). So the Host must be an address, localhost or the
-- --host name (a name an attacker's DNS cannot hand out), and an Origin, when
-- sent, must be the sandbox's own. Tools (curl, the CLI, the specs) send no
-- Origin.
local function local_host(host)
  host = (host or ""):lower()
  return host == "" or host:find("^%d+%.%d+%.%d+%.%d+$") ~= nil or host:find("^%[[%x:.]+%]$") ~= nil
    or host == "localhost" or host:find("%.localhost$") ~= nil
    or host == tostring(state.conf.host):lower()
end

--- nil when a web page may not have sent this request, else why it is refused.
function M.foreign()
  if not local_host(ngx.var.host) then
    return "Host '" .. tostring(ngx.var.host) .. "' is not this machine (DNS rebinding?)"
  end
  local origin = ngx.var.http_origin
  if origin ~= nil and origin:lower() ~= (ngx.var.scheme .. "://" .. (ngx.var.http_host or "")):lower() then
    return "a request from another origin's page (" .. origin .. ")"
  end
  return nil
end

--- Answers an admin request (`uri` under /__sandbox/).
function M.handle(method, uri)
  local why = M.foreign()
  if why then return err(403, why) end
  local kind, id = uri:match("^/__sandbox/(%l+)/([%w_%-]+)$")
  if kind and ONE[kind] then
    if method ~= "GET" then return err(405, method .. " " .. uri .. ": only GET") end
    return ONE[kind](id)
  end
  local what = uri:match("^/__sandbox/([%w_]+)$")
  local body = state.read_body()
  if what == "inbox" and method == "POST" then
    local n = webhooks.inbox_store(body)
    ngx.status = 200
    ngx.header["Content-Type"] = "text/plain"
    ngx.print("OK ", n)
    return ngx.exit(ngx.OK)
  end
  local fn = what and (method == "GET" and GET[what] or method == "POST" and POST[what])
  if not fn then return err(404, "no such endpoint " .. method .. " " .. uri) end
  local req = body and body ~= "" and cjson.decode(body) or {}
  if type(req) ~= "table" then return err(400, "body is not a JSON object") end
  return fn(req)
end

return M
