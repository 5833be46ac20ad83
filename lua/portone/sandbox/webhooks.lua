--- The webhook sender, in one place (shared state: used by the payment
-- states and the admin API, using no surface module). A notice is POSTed to
-- the link's `notice_url` from an ngx.timer over the cosocket transport
-- (`portone.link.transport.ngx`) with PortOne's timeouts (10 s to connect,
-- 30 s for the answer), only to loopback URLs.
--
-- State: in the portone_settings dict (never evicted, `state.set_setting`)
--   wh_mode           JSON {mode, delay_ms, format}: how later notices go out
-- in the portone_stats dict (diagnostics: an eviction when that dict is full
-- loses a delivery log or what `redeliver` resends, never a payment, which
-- lives in portone_payments, nor the mode):
--   whlog:<imp_uid>   JSON list of deliveries {n, at, status | error | dropped, ms, notice}
--   whlast:<imp_uid>  JSON {url, notice}: the last notice, for `redeliver`
-- and in the portone_log dict (records that may be evicted):
--   inbox:<n>         webhooks received at /__sandbox/inbox (a test receiver)
local cjson = require "cjson.safe"
local state = require "portone.sandbox.state"

local M = {}

M.CONNECT_TIMEOUT = 10
M.READ_TIMEOUT = 30
M.LATE_MS = 3000
M.TWICE_MS = 200
M.INBOX_MAX = 200
M.REDELIVER_MAX = 20
M.MODES = { normal = true, twice = true, late = true, drop = true }

--- How notices go out: {mode =, delay_ms =, format =}.
function M.mode()
  local m = state.get_json(state.settings(), "wh_mode")
  return type(m) == "table" and m or { mode = "normal" }
end

--- Sets how later notices go out: true, or nil and why not (the mode stays).
function M.set_mode(m)
  return state.set_setting("wh_mode", cjson.encode(m))
end

--- True for http(s) URLs on loopback (the only ones the sandbox posts to).
function M.loopback_url(url)
  if type(url) ~= "string" then return false end
  local host = url:match("^https?://(%[[^%]]+%])") or url:match("^https?://([^/:?#@]+)[:/?#]")
    or url:match("^https?://([^/:?#@]+)$")
  if not host then return false end
  return host == "localhost" or host == "[::1]" or host:match("^127%.%d+%.%d+%.%d+$") ~= nil
end

-- `portone-link sandbox --forward-to URL`: every webhook goes to URL, and
-- each delivery is printed on the sandbox's terminal.
local function forwarding() return state.conf.forward_to end

local function log_delivery(imp_uid, entry)
  local d = state.stats()
  local list = state.get_json(d, "whlog:" .. imp_uid) or {}
  list[#list + 1] = entry
  d:set("whlog:" .. imp_uid, cjson.encode(list))
end

--- The deliveries made for a payment, oldest first.
function M.deliveries(imp_uid)
  return state.get_json(state.stats(), "whlog:" .. imp_uid) or {}
end

-- V1's notice: imp_uid, merchant_uid, status, and cancellation_id for a
-- cancellation. Strings only, so cjson is safe here.
local function body_of(notice, format)
  local t = { imp_uid = notice.imp_uid, merchant_uid = notice.merchant_uid, status = notice.status,
              cancellation_id = notice.cancellation_id }
  if format == "form" then return "application/x-www-form-urlencoded", ngx.encode_args(t) end
  return "application/json", cjson.encode(t)
end

local function send(premature, url, notice, format, n)
  if premature then return end
  local ctype, body = body_of(notice, format)
  local t = require("portone.link.transport.ngx").new{
    connect_timeout = M.CONNECT_TIMEOUT, timeout = M.READ_TIMEOUT, max_response_bytes = 64 * 1024,
  }
  ngx.update_time()
  local started = ngx.now()
  local status, rbody = t:request("POST", url, {
    "Content-Type: " .. ctype, "User-Agent: PortOne-Sandbox-Webhook", "Accept: */*",
  }, body)
  ngx.update_time()
  local entry = { n = n, at = state.now(), format = format, ms = math.floor((ngx.now() - started) * 1000),
                  notice = notice.status }
  if status then
    entry.status = status
  else
    entry.error = type(rbody) == "table" and rbody.message or tostring(rbody)
    ngx.log(ngx.WARN, "sandbox webhook to ", url, " failed: ", entry.error)
  end
  log_delivery(notice.imp_uid, entry)
  if forwarding() then
    io.stdout:write(("webhook %s %s -> %s: %s (%d ms)\n"):format(notice.merchant_uid, notice.status, url,
      entry.status and ("HTTP " .. entry.status) or entry.error, entry.ms))
    io.stdout:flush()
  end
end

-- Starts one timer per delay; returns how many started.
local function schedule(url, notice, format, delays, first)
  local n = 0
  for i, delay in ipairs(delays) do
    local ok, err = ngx.timer.at(delay, send, url, notice, format, first + i - 1)
    if ok then n = n + 1
    else
      log_delivery(notice.imp_uid, { n = first + i - 1, at = state.now(),
                                     error = "timer: " .. tostring(err) })
    end
  end
  return n
end

local function next_n(imp_uid)
  return state.stats():incr("whn:" .. imp_uid, 1, 0)
end

--- Sends `notice` ({imp_uid, merchant_uid, status [, cancellation_id]}) to
-- `url` as the webhook mode says. Returns the mode used, "none" without a
-- URL, or "refused" for a URL off loopback.
function M.notify(url, notice)
  url = forwarding() or url
  if not url then return "none" end
  local d = state.stats()
  local m = M.mode()
  local format = m.format == "form" and "form" or "json"
  if not M.loopback_url(url) then
    log_delivery(notice.imp_uid, { n = next_n(notice.imp_uid), at = state.now(), notice = notice.status,
                                   error = "not sent: the sandbox only posts to loopback" })
    return "refused"
  end
  d:set("whlast:" .. notice.imp_uid, cjson.encode({ url = url, notice = notice }))
  if m.mode == "drop" then
    log_delivery(notice.imp_uid, { n = next_n(notice.imp_uid), at = state.now(), notice = notice.status,
                                   dropped = true })
    return "drop"
  end
  local delays
  if m.mode == "late" then delays = { (tonumber(m.delay_ms) or M.LATE_MS) / 1000 }
  elseif m.mode == "twice" then delays = { 0, (tonumber(m.delay_ms) or M.TWICE_MS) / 1000 }
  else delays = { (tonumber(m.delay_ms) or 0) / 1000 } end
  local first = d:incr("whn:" .. notice.imp_uid, #delays, 0) - #delays + 1
  schedule(url, notice, format, delays, first)
  return m.mode
end

--- Sends the last notice of a payment again, `count` copies at once (as
-- PortOne's retries and its console's "resend" do). Returns the number
-- scheduled, or nil, message.
function M.redeliver(imp_uid, count)
  local last = state.get_json(state.stats(), "whlast:" .. tostring(imp_uid))
  if type(last) ~= "table" then return nil, "no webhook was sent for this payment" end
  count = math.max(1, math.min(math.floor(tonumber(count) or 1), M.REDELIVER_MAX))
  local delays = {}
  for i = 1, count do delays[i] = 0 end
  local format = M.mode().format == "form" and "form" or "json"
  local first = state.stats():incr("whn:" .. imp_uid, count, 0) - count + 1
  return schedule(last.url, last.notice, format, delays, first)
end

-- ---------------------------------------------------------------------------
-- the inbox: a webhook receiver inside the sandbox

--- Stores a received webhook; returns its number.
function M.inbox_store(body)
  local d = state.log()
  local n = d:incr("inbox_seq", 1, 0)
  d:set("inbox:" .. n, cjson.encode({
    n = n, at = state.now(), content_type = ngx.var.content_type or cjson.null, body = body or "",
    user_agent = ngx.var.http_user_agent or cjson.null,
  }))
  d:delete("inbox:" .. (n - M.INBOX_MAX))
  return n
end

--- The webhooks received, oldest first.
function M.inbox_list()
  local d = state.log()
  local n = d:get("inbox_seq") or 0
  local out = {}
  for i = math.max(1, n - M.INBOX_MAX + 1), n do
    local e = state.get_json(d, "inbox:" .. i)
    if e then out[#out + 1] = e end
  end
  return out
end

return M
