--- Payment simulation inside the sandbox's nginx: approving a link, storing
-- the payment, and sending the webhook to the link's `notice_url` from a
-- timer over the cosocket transport (`portone.link.transport.ngx`) with
-- PortOne's timeouts (10 s to connect, 30 s for the answer).
--
-- State lives in the `portone_stats` shared dict (so `/__sandbox/reset`
-- clears it with the rest), under these keys:
--   pay:<imp_uid>   JSON payment            paid:<link id>   imp_uid (once only)
--   payi:<n>        imp_uid, in pay order   pay_seq          n
--   whlog:<imp_uid> JSON list of webhook deliveries
--   wh_mode         JSON {mode, delay_ms, format}
--   tamper_next     amount the next payment records instead of the link's
--   inbox:<n>, inbox_seq   webhooks received at /__sandbox/inbox
--
-- Admin endpoints (JSON in and out; docs/internals.md):
--   POST /__sandbox/pay      {"id": "...", "method": 1 | "direct"}
--   GET  /__sandbox/payments
--   POST /__sandbox/webhook  {"mode": "normal"|"twice"|"late"|"drop", "delay_ms": n, "format": "json"|"form"}
--   POST /__sandbox/tamper   {"imp_uid": "...", "amount": n} | {"next": true, "amount": n}
--   POST /__sandbox/inbox    (any body: stored; this is a webhook receiver)
--   GET  /__sandbox/inbox
--   POST /__sandbox/tokens   {"revoke": true}
local cjson = require "cjson.safe"
-- luacheck: globals ngx  (the handlers assign ngx.status and ngx.header fields)
local rest_v1 = require "portone.sandbox.rest_v1"

local M = {}

M.CONNECT_TIMEOUT = 10
M.READ_TIMEOUT = 30
M.LATE_MS = 3000
M.TWICE_MS = 200
M.INBOX_MAX = 200
local MODES = { normal = true, twice = true, late = true, drop = true }

local function dict() return ngx.shared.portone_stats end
local function links() return ngx.shared.portone_links end
local now = rest_v1.now

local function get_json(d, key)
  local raw = d:get(key)
  return raw and cjson.decode(raw) or nil
end

--- A link record with its payment_info fields on top (nil when unknown).
function M.link(id)
  local rec = get_json(links(), id)
  if type(rec) ~= "table" then return nil end
  local info = type(rec.info) == "table" and rec.info or {}
  for _, k in ipairs({ "pay_methods", "display_language", "notice_url", "direct", "buyer_name",
                       "buyer_tel", "buyer_email", "custom_data", "language", "user_code" }) do
    if rec[k] == nil and info[k] ~= nil and info[k] ~= cjson.null then rec[k] = info[k] end
  end
  if type(rec.pay_methods) ~= "table" then
    rec.pay_methods = {}
    for _, l in ipairs(rec.labels or {}) do rec.pay_methods[#rec.pay_methods + 1] = { label = l } end
  end
  return rec
end

function M.live(rec)
  return rec.active ~= false and now() < (tonumber(rec.expired_at) or 0)
end

function M.paid_imp_uid(id)
  return dict():get("paid:" .. id)
end

local function same_method(a, b)
  return a.pay_method == b.pay_method and (a.pg or a.channelKey) == (b.pg or b.channelKey)
end

--- For a link with `direct`: the pay method to go to (its entry in
-- pay_methods when there is one, for the label), else nil.
function M.direct_method(rec)
  local d = rec.direct
  if type(d) ~= "table" or type(d.pay_method) ~= "string" then return nil end
  for _, pm in ipairs(rec.pay_methods) do
    if same_method(pm, d) then return pm end
  end
  return d
end

local function new_imp_uid()
  -- imp_ + 12 digits, like PortOne's
  local hex = rest_v1.random_hex(6)
  return "imp_" .. ("%012.0f"):format(tonumber(hex, 16) % 1e12)
end

local function label_of(pm, rec)
  return require("portone.sandbox.bridge").method_label(pm, require("portone.sandbox.bridge").lang(rec))
end

-- ---------------------------------------------------------------------------
-- webhooks

local function wh_mode()
  local m = get_json(dict(), "wh_mode")
  return type(m) == "table" and m or { mode = "normal" }
end

local function loopback_url(url)
  if type(url) ~= "string" then return false end
  local host = url:match("^https?://(%[[^%]]+%])") or url:match("^https?://([^/:?#@]+)[:/?#]")
    or url:match("^https?://([^/:?#@]+)$")
  if not host then return false end
  return host == "localhost" or host == "[::1]" or host:match("^127%.%d+%.%d+%.%d+$") ~= nil
end
M.loopback_url = loopback_url

local function log_delivery(imp_uid, entry)
  local d = dict()
  local list = get_json(d, "whlog:" .. imp_uid) or {}
  list[#list + 1] = entry
  d:set("whlog:" .. imp_uid, cjson.encode(list))
end

local function webhook_body(p, format)
  if format == "form" then
    return "application/x-www-form-urlencoded", ngx.encode_args({
      imp_uid = p.imp_uid, merchant_uid = p.merchant_uid, status = p.status })
  end
  -- strings only: cjson is safe here
  return "application/json", cjson.encode({ imp_uid = p.imp_uid, merchant_uid = p.merchant_uid,
                                            status = p.status })
end

-- `portone-link sandbox --forward-to URL`: every webhook goes to URL, and
-- each delivery is printed on the sandbox's terminal.
local function forward_to() return require("portone.sandbox.server").conf.forward_to end

local function send_webhook(premature, imp_uid, url, format, n)
  if premature then return end
  local p = get_json(dict(), "pay:" .. imp_uid)
  if not p then return end
  local ctype, body = webhook_body(p, format)
  local t = require("portone.link.transport.ngx").new{
    connect_timeout = M.CONNECT_TIMEOUT, timeout = M.READ_TIMEOUT, max_response_bytes = 64 * 1024,
  }
  ngx.update_time()
  local started = ngx.now()
  local status, rbody = t:request("POST", url, {
    "Content-Type: " .. ctype, "User-Agent: PortOne-Sandbox-Webhook", "Accept: */*",
  }, body)
  ngx.update_time()
  local entry = { n = n, at = now(), format = format, ms = math.floor((ngx.now() - started) * 1000) }
  if status then
    entry.status = status
  else
    entry.error = type(rbody) == "table" and rbody.message or tostring(rbody)
    ngx.log(ngx.WARN, "sandbox webhook to ", url, " failed: ", entry.error)
  end
  log_delivery(imp_uid, entry)
  if forward_to() then
    io.stdout:write(("webhook %s %s -> %s: %s (%d ms)\n"):format(p.merchant_uid, p.status, url,
      entry.status and ("HTTP " .. entry.status) or entry.error, entry.ms))
    io.stdout:flush()
  end
end

local function schedule_webhooks(p, url)
  local m = wh_mode()
  local format = m.format == "form" and "form" or "json"
  url = forward_to() or url
  if not url then return "none" end
  if not loopback_url(url) then
    log_delivery(p.imp_uid, { n = 1, at = now(), error = "not sent: the sandbox only posts to loopback" })
    return "refused"
  end
  if m.mode == "drop" then
    log_delivery(p.imp_uid, { n = 1, at = now(), dropped = true })
    return "drop"
  end
  local delays
  if m.mode == "late" then delays = { (tonumber(m.delay_ms) or M.LATE_MS) / 1000 }
  elseif m.mode == "twice" then delays = { 0, (tonumber(m.delay_ms) or M.TWICE_MS) / 1000 }
  else delays = { (tonumber(m.delay_ms) or 0) / 1000 } end
  for i, delay in ipairs(delays) do
    local ok, err = ngx.timer.at(delay, send_webhook, p.imp_uid, url, format, i)
    if not ok then log_delivery(p.imp_uid, { n = i, at = now(), error = "timer: " .. tostring(err) }) end
  end
  return m.mode
end

-- ---------------------------------------------------------------------------
-- approving

--- Approves link `id` with the method the customer chose (`choice`: an index
-- into pay_methods, as a number or a string, or "direct").
-- @return payment, nil, rec, webhook_mode | nil, http_status, rec
function M.pay(id, choice)
  local rec = M.link(id)
  if not rec then return nil, 404 end
  if M.paid_imp_uid(id) then return nil, 409, rec end
  if not M.live(rec) then return nil, 410, rec end
  local pm
  if choice == "direct" then
    pm = M.direct_method(rec)
  else
    local i = tonumber(choice)
    pm = i and rec.pay_methods[i]
  end
  if type(pm) ~= "table" then return nil, 400, rec end

  local d = dict()
  local imp_uid = new_imp_uid()
  -- add() is atomic: of two concurrent approvals only one wins
  if not d:add("paid:" .. id, imp_uid) then return nil, 409, rec end
  local t = now()
  local amount = rec.amount
  local tampered = d:get("tamper_next")
  if tampered then
    d:delete("tamper_next")
    amount = tampered
  end
  local p = {
    imp_uid = imp_uid, merchant_uid = rec.merchant_uid, amount = amount, currency = rec.currency,
    status = "paid", pay_method = pm.pay_method, pg = pm.pg, channel_key = pm.channelKey,
    label = label_of(pm, rec), name = rec.name, buyer_name = rec.buyer_name, buyer_tel = rec.buyer_tel,
    buyer_email = rec.buyer_email, custom_data = rec.custom_data, paid_at = t, started_at = t,
    link_id = id, tampered = tampered and true or nil,
  }
  d:set("pay:" .. imp_uid, cjson.encode(p))
  local n = d:incr("pay_seq", 1, 0)
  d:set("payi:" .. n, imp_uid)
  local mode = schedule_webhooks(p, rec.notice_url)
  return p, nil, rec, mode
end

-- ---------------------------------------------------------------------------
-- admin

local function reply(status, tbl, raw)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json;charset=UTF-8"
  ngx.print(raw or cjson.encode(tbl))
  ngx.exit(ngx.OK)
  return true
end

-- cjson on Debian has no array_mt: an empty list must be written by hand.
local function list_json(list)
  return #list == 0 and "[]" or cjson.encode(list)
end

local function read_body() return require("portone.sandbox.server").read_body() end

local function payments_list()
  local d = dict()
  local out = {}
  for i = 1, d:get("pay_seq") or 0 do
    local uid = d:get("payi:" .. i)
    local p = uid and get_json(d, "pay:" .. uid)
    if p then
      p.webhooks = get_json(d, "whlog:" .. uid) or {}
      out[#out + 1] = p
    end
  end
  return out
end

local function inbox_store(body)
  local d = dict()
  local n = d:incr("inbox_seq", 1, 0)
  d:set("inbox:" .. n, cjson.encode({
    n = n, at = now(), content_type = ngx.var.content_type or cjson.null, body = body or "",
    user_agent = ngx.var.http_user_agent or cjson.null,
  }))
  d:delete("inbox:" .. (n - M.INBOX_MAX))
  return n
end

local function inbox_list()
  local d = dict()
  local n = d:get("inbox_seq") or 0
  local out = {}
  for i = math.max(1, n - M.INBOX_MAX + 1), n do
    local e = get_json(d, "inbox:" .. i)
    if e then out[#out + 1] = e end
  end
  return out
end

--- Handles the admin endpoints above; returns true when it answered.
function M.admin(method, uri)
  local what = uri:match("^/__sandbox/([%w_]+)$")
  if what == "inbox" then
    if method == "POST" then
      local n = inbox_store(read_body())
      ngx.status = 200
      ngx.header["Content-Type"] = "text/plain"
      ngx.print("OK ", n)
      ngx.exit(ngx.OK)
      return true
    elseif method == "GET" then
      return reply(200, nil, list_json(inbox_list()))
    end
    return nil
  end
  if what == "payments" and method == "GET" then
    return reply(200, nil, list_json(payments_list()))
  end
  local posts = { pay = true, webhook = true, tamper = true, tokens = true }
  if not (method == "POST" and posts[what]) then
    if what == "webhook" and method == "GET" then return reply(200, wh_mode()) end
    return nil
  end
  local body = read_body()
  local req = body and body ~= "" and cjson.decode(body) or {}
  if type(req) ~= "table" then
    return reply(400, { code = -1, message = "admin: body is not a JSON object" })
  end

  if what == "pay" then
    if type(req.id) ~= "string" then
      return reply(400, { code = -1, message = "admin pay: id is required" })
    end
    local id = req.id:match("([A-Za-z0-9_-]+)/?$") -- a whole link URL works too
    local choice = req.method == nil and 1 or req.method
    local p, status, _, mode = M.pay(id or "", tostring(choice))
    if not p then
      local why = ({ [404] = "no such link", [409] = "already paid", [410] = "expired or deactivated",
                     [400] = "no such pay method" })[status]
      return reply(status, { code = -1, message = "admin pay: " .. why, imp_uid = id and M.paid_imp_uid(id) })
    end
    return reply(200, { imp_uid = p.imp_uid, payment = p, webhook = mode })
  elseif what == "webhook" then
    local mode = req.mode or "normal"
    if not MODES[mode] then
      return reply(400, { code = -1, message = "admin webhook: mode must be normal, twice, late or drop" })
    end
    local m = { mode = mode, delay_ms = tonumber(req.delay_ms),
                format = req.format == "form" and "form" or "json" }
    dict():set("wh_mode", cjson.encode(m))
    return reply(200, m)
  elseif what == "tamper" then
    local amount = tonumber(req.amount)
    if not amount then return reply(400, { code = -1, message = "admin tamper: amount is required" }) end
    if req.next then
      dict():set("tamper_next", amount)
      return reply(200, { next = true, amount = amount })
    end
    local d = dict()
    local p = type(req.imp_uid) == "string" and get_json(d, "pay:" .. req.imp_uid)
    if not p then return reply(404, { code = -1, message = "admin tamper: no such payment" }) end
    p.amount, p.tampered = amount, true
    d:set("pay:" .. p.imp_uid, cjson.encode(p))
    return reply(200, p)
  elseif what == "tokens" then
    local n = req.revoke and rest_v1.revoke_all() or 0
    return reply(200, { revoked = n })
  end
  return nil
end

return M
