--- Payments and their states, as REST V1 has them (shared state: used by the
-- bridge page, REST V1 and the admin API; uses only state and the webhook
-- sender). A change of state sends its webhook to the link's notice_url as
-- V1 does (not for a failed payment, nor for a REST cancel without
-- enable_webhook).
--
--   card-like methods -> paid            vbank -> ready (vbank_*) -> paid (deposit)
--   declined on the bridge page, or an amount other than the prepared one -> failed
--   (no webhook: V1 sends none for a failed payment)
--   cancel (REST, full or partial; or from the "console", the admin API) -> cancelled
--   (a partial cancel keeps `paid`, adds to cancel_amount and cancel_history)
--
-- One order is paid once, as PortOne refuses a second payment for a
-- merchant_uid (DESIGN §4 relies on it): while an order has a payment that
-- is `paid` (also partly cancelled) or `ready` (a virtual account waiting for
-- its deposit, which would still pay it), paying any of its links is refused
-- (409) and records no payment. A failed payment holds nothing; a full
-- cancel frees the order.
--
-- Keys in the portone_payments dict (the store):
--   pay:<imp_uid>       JSON payment (the fields below; REST V1 shapes them)
--   payi:<n>, pay_seq   imp_uid by start order
--   muid:<merchant_uid>:<n>, muidn:<merchant_uid>
--                       the order's n-th payment (imp_uid), and how many
--                       numbers the order has taken (by `incr`, atomic
--                       across workers: two workers recording payments of
--                       one order at once each get a number of their own;
--                       a read-and-write-back list lost one of them)
--   paid:<link id>      imp_uid of the link's payment (once only)
--   uid:<merchant_uid>  imp_uid of the order's paid or ready payment
--   prep:<merchant_uid> the amount registered with POST /payments/prepare
--   tamper_next         amount the next payment records instead of the link's
--   plock:<imp_uid>     short lock around a cancel or a deposit
-- The store is written only with safe_set/safe_add, which never evict: a
-- payment or a mark that vanished would let a link or an order be paid
-- again, and REST V1 would answer 404 for a payment the buyer made. When it
-- is full, the pay, prepare, deposit or cancel is refused with FULL (HTTP
-- 507) and what it had written is taken back.
local cjson = require "cjson.safe"
local state = require "portone.sandbox.state"
local webhooks = require "portone.sandbox.webhooks"

local M = {}

M.VBANK_DAYS = 3

local function dict() return state.store() end

M.FULL = "sandbox payment store is full; reset the sandbox (POST /__sandbox/reset,"
  .. " sb:reset()) or restart it"

-- safe_set that keeps the old value when the new one does not fit
-- (`state.safe_set`). @return true | nil, FULL
local function store_set(key, value)
  if state.safe_set(dict(), key, value) then return true end
  return nil, M.FULL
end

-- safe_add: true | nil, "exists" | nil, FULL.
local function store_add(key, value, ttl)
  local ok, err = dict():safe_add(key, value, ttl)
  if ok then return true end
  if err == "exists" then return nil, "exists" end
  return nil, M.FULL
end

--- A link record with its payment_info fields on top (nil when unknown).
function M.link(id)
  local rec = state.get_json(state.links(), id)
  if type(rec) ~= "table" then return nil end
  local info = type(rec.info) == "table" and rec.info or {}
  for _, k in ipairs({ "pay_methods", "display_language", "notice_url", "direct", "buyer_name",
                       "buyer_tel", "buyer_email", "buyer_addr", "buyer_postcode", "custom_data",
                       "language", "user_code", "tax_free" }) do
    if rec[k] == nil and info[k] ~= nil and info[k] ~= cjson.null then rec[k] = info[k] end
  end
  if type(rec.pay_methods) ~= "table" then
    rec.pay_methods = {}
    for _, l in ipairs(rec.labels or {}) do rec.pay_methods[#rec.pay_methods + 1] = { label = l } end
  end
  return rec
end

function M.live(rec)
  return rec.active ~= false and state.now() < (tonumber(rec.expired_at) or 0)
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

--- The pay method a choice names (1-based index, as a number or a string,
-- or "direct"), or nil. A link with `direct` skips the bridge page: its
-- payment step offers the direct method only, so an index names nothing
-- else.
function M.method_of(rec, choice)
  local direct = M.direct_method(rec)
  if choice == "direct" then return direct end
  local i = tonumber(choice)
  local pm = i and rec.pay_methods[i]
  if type(pm) ~= "table" or (direct and not same_method(pm, direct)) then return nil end
  return pm
end

--- A stored payment, or nil.
function M.get(imp_uid)
  if type(imp_uid) ~= "string" then return nil end
  return state.get_json(dict(), "pay:" .. imp_uid)
end

-- Stores a payment: true | nil, FULL (the stored one unchanged).
local function put(p)
  p.updated_at = state.now()
  return store_set("pay:" .. p.imp_uid, state.encode(p))
end

--- The imp_uids of an order, oldest first. A number without its entry (a
-- payment being recorded, or one refused as FULL) is skipped.
function M.of_merchant(merchant_uid)
  local d, out = dict(), {}
  local muid = tostring(merchant_uid)
  for i = 1, d:get("muidn:" .. muid) or 0 do
    out[#out + 1] = d:get("muid:" .. muid .. ":" .. i)
  end
  return out
end

--- Every payment, oldest first (for listing and paging).
function M.all()
  local d, out = dict(), {}
  for i = 1, d:get("pay_seq") or 0 do
    local p = M.get(d:get("payi:" .. i))
    if p then out[#out + 1] = p end
  end
  return out
end

local function new_imp_uid()
  -- imp_ + 12 digits, like PortOne's
  return "imp_" .. ("%012.0f"):format(tonumber(state.random_hex(6), 16) % 1e12)
end

local function digits(n)
  return ("%0" .. n .. ".0f"):format(tonumber(state.random_hex(6), 16) % (10 ^ n))
end

-- What the PG would report for a method (V1's card_*, bank_*, vbank_* fields).
local function pg_details(p, now)
  if p.pay_method == "card" then
    p.card_code, p.card_name, p.card_number = "361", "BC카드", "9490********" .. digits(3) .. "*"
    p.card_quota, p.card_type, p.apply_num = 0, 0, digits(8)
  elseif p.pay_method == "trans" then
    p.bank_code, p.bank_name = "004", "KB국민은행"
  elseif p.pay_method == "vbank" then
    p.vbank_code, p.vbank_name, p.vbank_holder = "004", "KB국민은행", "(주)포트원샌드박스"
    p.vbank_num = "T" .. digits(13)
    p.vbank_issued_at = now
    p.vbank_date = now + M.VBANK_DAYS * 86400
  end
end

-- The next number of counter `key` (atomic across workers), or nil, FULL.
-- incr with an initial value may evict; on an existing number it never
-- allocates, so the number is made with safe_add first.
local function next_number(key)
  local ok, err = store_add(key, 0)
  if not ok and err ~= "exists" then return nil, err end
  local n = dict():incr(key, 1)
  if not n then return nil, M.FULL end
  return n
end

-- Logs which write of a new payment did not fit (the answer says only
-- FULL).
local function refused(p, what)
  ngx.log(ngx.WARN, "sandbox: payment store full: payment ", p.imp_uid, " of order ",
    tostring(p.merchant_uid):sub(1, 40), " not recorded: ", what, " did not fit")
end

-- Stores a new payment with its index entries: true, or nil, FULL with
-- none of them written (a skipped number is no harm: `all` and
-- `of_merchant` skip it). Every entry has a key of its own, taken with
-- incr and add: nothing is read and written back, so two workers recording
-- at once cannot drop each other's entry.
local function record_new(p)
  local d = dict()
  local n, err = next_number("pay_seq")
  if not n then
    refused(p, "the payment counter (pay_seq)")
    return nil, err
  end
  p.seq = n
  local ok
  ok, err = put(p)
  if not ok then
    refused(p, "the payment (pay:)")
    return nil, err
  end
  local what = "its index entry (payi:)"
  ok, err = store_add("payi:" .. n, p.imp_uid)
  if ok then
    local muid = tostring(p.merchant_uid)
    what = "the order's payment counter (muidn:)"
    local i
    i, err = next_number("muidn:" .. muid)
    if i then
      what = "the order's index entry (muid:<n>)"
      ok, err = store_add("muid:" .. muid .. ":" .. i, p.imp_uid)
      if ok then return true end
    end
    d:delete("payi:" .. n)
  end
  d:delete("pay:" .. p.imp_uid)
  refused(p, what)
  return nil, err
end

local function notice(p, extra)
  local t = { imp_uid = p.imp_uid, merchant_uid = p.merchant_uid, status = p.status }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

M.DECLINED = "[결제포기] 사용자가 결제를 취소하셨습니다"
M.PREPARE_MISMATCH = "[사전검증] 사전 등록된 결제금액과 다른 금액으로 결제를 시도하였습니다"

--- The imp_uid of the payment that holds order `merchant_uid` (paid, or a
-- vbank waiting for its deposit), or nil.
function M.order_imp_uid(merchant_uid)
  return dict():get("uid:" .. tostring(merchant_uid))
end

-- Why a payment of an order held by `holder` (an imp_uid) is refused.
local function order_paid(merchant_uid, holder)
  local p = M.get(holder)
  local what = p and p.status == "ready" and "has a virtual account waiting for its deposit"
    or p and "is already paid" or "is being paid"
  return ("order (merchant_uid) '%s' %s (imp_uid %s): PortOne refuses a second payment for it"):format(
    tostring(merchant_uid), what, tostring(holder))
end

--- Starts the payment of link `id` with the method the customer chose.
-- opts: `decline` (the buyer declines: a failed payment), `channel` ("pc",
-- "mobile" or "api"), `user_agent`, `label` (a function(pm, rec) for the
-- method's label).
-- Refused: 404 no such link, 409 the link is paid (no message) or its order
-- is (message, and the imp_uid holding it), 410 expired or deactivated, 400
-- no such method, 507 the store is full (FULL).
-- @return payment, nil, rec, webhook_mode | nil, http_status, rec, message, imp_uid
function M.pay(id, choice, opts)
  opts = opts or {}
  local rec = M.link(id)
  if not rec then return nil, 404 end
  if M.paid_imp_uid(id) then return nil, 409, rec end
  if not M.live(rec) then return nil, 410, rec end
  local pm = M.method_of(rec, choice)
  if not pm then return nil, 400, rec end
  local muid = tostring(rec.merchant_uid)
  -- a paid order takes no payment at all, not even a declined one
  local holder = M.order_imp_uid(muid)
  if holder then return nil, 409, rec, order_paid(muid, holder), holder end

  local d = dict()
  local t = state.now()
  local amount = rec.amount
  local tampered = d:get("tamper_next")
  local prepared = d:get("prep:" .. muid)
  local fail_reason = opts.decline and M.DECLINED
    or (prepared and prepared ~= (tampered or amount) and M.PREPARE_MISMATCH) or nil
  local imp_uid = new_imp_uid()
  -- Both marks are taken with add, which is atomic: of two concurrent
  -- approvals of one link, or of two links of one order, only one wins. A
  -- failed attempt takes neither, so the link and the order stay payable.
  if not fail_reason then
    local ok, err = store_add("paid:" .. id, imp_uid)
    if not ok then
      if err == "exists" then return nil, 409, rec end
      return nil, 507, rec, err
    end
    ok, err = store_add("uid:" .. muid, imp_uid)
    if not ok then
      d:delete("paid:" .. id)
      if err ~= "exists" then return nil, 507, rec, err end
      holder = M.order_imp_uid(muid)
      return nil, 409, rec, order_paid(muid, holder), holder
    end
  end
  -- the tamper is meant for a real payment: a failed one leaves it queued
  if tampered then
    if not fail_reason then d:delete("tamper_next") end
    amount = tampered
  end
  local p = {
    imp_uid = imp_uid, merchant_uid = rec.merchant_uid, amount = amount, currency = rec.currency,
    pay_method = pm.pay_method, pg = pm.pg, channel_key = pm.channelKey,
    label = opts.label and opts.label(pm, rec) or pm.label or pm.pay_method,
    name = rec.name, buyer_name = rec.buyer_name, buyer_tel = rec.buyer_tel,
    buyer_email = rec.buyer_email, buyer_addr = rec.buyer_addr, buyer_postcode = rec.buyer_postcode,
    custom_data = rec.custom_data, tax_free = tonumber(rec.tax_free) or 0,
    started_at = t, paid_at = 0, failed_at = 0, cancelled_at = 0, cancel_amount = 0, cancel_history = {},
    channel = opts.channel or "pc", user_agent = opts.user_agent, link_id = id,
    pg_tid = "sandbox" .. state.random_hex(10), test = state.setting("test_mode") and true or nil,
    tampered = tampered and true or nil,
  }
  if fail_reason then
    p.status, p.failed_at, p.fail_reason = "failed", t, fail_reason
  else
    pg_details(p, t)
    if pm.pay_method == "vbank" then
      p.status = "ready"
    else
      p.status, p.paid_at = "paid", t
    end
  end
  local ok, err = record_new(p)
  if not ok then
    -- take back what this attempt wrote: nothing is left half-done
    if not fail_reason then
      d:delete("paid:" .. id)
      d:delete("uid:" .. muid)
      if tampered then store_set("tamper_next", tampered) end
    end
    return nil, 507, rec, err
  end
  -- V1 posts no notice for a failed payment (its webhook guide)
  local mode = fail_reason and "none" or webhooks.notify(rec.notice_url, notice(p))
  return p, nil, rec, mode
end

-- A short per-payment lock (cancel and deposit read, change and write back).
local function locked(imp_uid, fn)
  local d = dict()
  for _ = 1, 200 do
    local ok, err = store_add("plock:" .. imp_uid, 1, 5)
    if ok then
      local fine, a, b = pcall(fn)
      d:delete("plock:" .. imp_uid)
      if not fine then error(a, 0) end
      return a, b
    end
    if err == M.FULL then return nil, err end
    ngx.sleep(0.005)
  end
  return nil, "busy"
end

local function notice_url(p)
  local rec = p.link_id and M.link(p.link_id)
  return rec and rec.notice_url
end

-- Why a deposit now is too late for p, or nil. A virtual account takes
-- money until its due date (vbank_date) and not after, by the sandbox
-- clock (the admin API moves it). V1 has no status for a lapsed account
-- (its statuses are ready, paid, cancelled, failed, and no webhook is sent
-- at the due date), so the payment stays `ready`.
local function past_due(p)
  local due = tonumber(p.vbank_date) or 0
  if due <= 0 or state.now() <= due then return nil end
  return ("the virtual account's due date (vbank_date) %s has passed: the deposit is refused"
    .. " and the payment stays ready"):format(os.date("!%Y-%m-%d %H:%M:%S UTC", due))
end

--- Simulates the deposit into a ready virtual account: ready -> paid, with
-- its webhook. Returns the payment and the webhook mode (as `pay`), or nil,
-- message (also after the account's due date).
function M.deposit(imp_uid)
  local p, err = locked(imp_uid, function()
    local p = M.get(imp_uid)
    if not p then return nil, "no such payment" end
    if p.status ~= "ready" then return nil, "the payment is " .. tostring(p.status) .. ", not ready" end
    local late = past_due(p)
    if late then return nil, late end
    p.status, p.paid_at = "paid", state.now()
    local ok, err = put(p)
    if not ok then return nil, err end
    return p
  end)
  if not p then return nil, err end
  return p, webhooks.notify(notice_url(p), notice(p))
end

--- The payment a cancel (or a find) by merchant_uid means: the newest one
-- of the order in `status` (any when nil).
function M.newest_of(merchant_uid, status)
  local list = M.of_merchant(merchant_uid)
  for i = #list, 1, -1 do
    local p = M.get(list[i])
    if p and (status == nil or p.status == status) then return p end
  end
  return nil
end

-- V1's messages for a refused cancel (HTTP 200, code 1).
M.CANCEL = {
  none = "취소할 결제건이 존재하지 않습니다.",
  done = "이미 전액취소된 주문입니다.",
  unpaid = "결제완료 상태가 아닌 결제건은 취소할 수 없습니다.",
  checksum = "[취소실패] 취소요청 checksum 이 취소가능잔액과 일치하지 않습니다.",
  over = "[취소실패] 취소요청금액이 취소가능잔액을 초과합니다.",
  tax_free = "[취소실패] 면세금액이 취소요청금액보다 클 수 없습니다.",
  refund_account = "[취소실패] 가상계좌 환불에는 환불계좌 정보(refund_holder, refund_bank, "
    .. "refund_account)가 필요합니다.",
}

--- Cancels all or part of a payment. `req`: amount (nil or 0: the whole
-- balance), tax_free, checksum (the balance the caller believes is left:
-- refused when it differs), reason, refund_holder/bank/account (required
-- over REST for a virtual account: the money goes back by bank transfer).
-- `console`:
-- the cancel comes from PortOne's console (the admin API), which sends the
-- webhook; a REST cancel sends one only with `req.enable_webhook` (V1's
-- webhook guide).
-- @return payment, cancellation | nil, message
function M.cancel(imp_uid, req, console)
  local d = dict()
  local p, c = locked(imp_uid, function()
    local p = M.get(imp_uid)
    if not p then return nil, M.CANCEL.none end
    if p.status == "cancelled" then return nil, M.CANCEL.done end
    if p.status ~= "paid" then return nil, M.CANCEL.unpaid end
    local balance = p.amount - (p.cancel_amount or 0)
    if req.checksum ~= nil and req.checksum ~= balance then return nil, M.CANCEL.checksum end
    local amount = req.amount
    if amount == nil or amount == 0 then amount = balance end
    if amount > balance then return nil, M.CANCEL.over end
    if (req.tax_free or 0) > amount then return nil, M.CANCEL.tax_free end
    if p.pay_method == "vbank" and not console
        and not (req.refund_holder and req.refund_bank and req.refund_account) then
      return nil, M.CANCEL.refund_account
    end
    local now = state.now()
    local c = {
      pg_tid = p.pg_tid, amount = amount, cancelled_at = now, reason = req.reason or cjson.null,
      cancellation_id = "sandbox-cancel-" .. state.random_hex(6),
      receipt_url = state.conf.base .. "/__sandbox/receipts/" .. p.imp_uid
        .. "?cancel=" .. (#p.cancel_history + 1),
    }
    p.cancel_history[#p.cancel_history + 1] = c
    p.cancel_amount = (p.cancel_amount or 0) + amount
    p.cancelled_at = now
    p.cancel_reason = req.reason
    if p.cancel_amount >= p.amount then p.status = "cancelled" end
    local ok, err = put(p)
    if not ok then return nil, err end
    -- a fully cancelled order may be paid again (the mark is this payment's
    -- only: others of the order were refused or failed)
    if p.status == "cancelled" and d:get("uid:" .. tostring(p.merchant_uid)) == p.imp_uid then
      d:delete("uid:" .. tostring(p.merchant_uid))
    end
    return p, c
  end)
  if not p then return nil, c end
  if console or req.enable_webhook then
    webhooks.notify(notice_url(p), notice(p, { status = "cancelled", cancellation_id = c.cancellation_id }))
  end
  return p, c
end

--- POST /payments/prepare: registers the amount an order must be paid with.
-- `update`: PUT (the order must be registered already). Returns amount or
-- nil, message (FULL when the store is full).
function M.prepare(merchant_uid, amount, update)
  local d = dict()
  local key = "prep:" .. merchant_uid
  if update then
    if not d:get(key) then return nil, "사전등록된 결제정보가 존재하지 않습니다." end
    local ok, err = store_set(key, amount)
    if not ok then return nil, err end
    return amount
  end
  local ok, err = store_add(key, amount)
  if not ok then
    if err ~= "exists" then return nil, err end
    return nil, "이미 사전등록된 merchant_uid 입니다. (수정은 PUT /payments/prepare)"
  end
  return amount
end

function M.prepared(merchant_uid)
  return dict():get("prep:" .. merchant_uid)
end

--- The admin `tamper`: the next payment records `amount` instead of its
-- link's. Returns true or nil, FULL.
function M.tamper_next(amount)
  return store_set("tamper_next", amount)
end

--- The admin `tamper` of a stored payment: its amount becomes `amount`.
-- Returns the payment, or nil, message (no such payment, FULL).
function M.tamper(imp_uid, amount)
  return locked(imp_uid, function()
    local p = M.get(imp_uid)
    if not p then return nil, "no such payment" end
    p.amount, p.tampered = amount, true
    -- not put: a tamper is no change of state (updated_at stays)
    local ok, err = store_set("pay:" .. imp_uid, state.encode(p))
    if not ok then return nil, err end
    return p
  end)
end

--- Empties the store (the admin `reset`).
function M.flush()
  local d = dict()
  d:flush_all()
  d:flush_expired()
end

return M
