--- OpenResty webhook handler for PortOne payment links (V1 webhook).
--
--   location = /portone/webhook { content_by_lua_block { require("handler").handle() } }
--
-- The webhook is unsigned, so the notice only says *which* payment to look
-- at. The handler parses it, looks the payment up over REST V1 (one request
-- with a cached token: tens of milliseconds), compares amount and order with
-- its own order, and answers at once; the slow part (fulfilment: mail,
-- stock, ...) runs afterwards in an ngx.timer, never while PortOne waits.
--
--   200  handled (paid and verified, or a notice to ignore)
--   400  not a PortOne notice (the body does not parse)
--   500  the lookup failed (network, auth, PortOne down), or the fulfilment
--        could not be scheduled: PortOne sends the webhook again later, and
--        the next try verifies. Only when resends are on: by default PortOne
--        sends a notice once (ask its tech support for resends, and look
--        unpaid orders up with rest:find from time to time all the same)
--
-- The notice can come twice, in any order, and two copies at the same time
-- (PortOne retries, its console resends). Each order is handled exactly
-- once: a copy for an order already fulfilled is answered at once; a copy
-- that arrives while another copy of it is being handled finds its payment
-- (imp_uid) claimed (a shared-dict `add` with a TTL, atomic across the
-- workers) and is answered without a lookup; the order is marked paid with
-- an `add` too, so it ships once. The claim is released whatever happens,
-- so when the handling fails (500) PortOne's next try takes it over; its
-- TTL frees it even if the worker died holding it.
-- luacheck: globals ngx
local link = require "portone.link"

local M = {}

-- One REST client per worker: the token cache and the one-refresh-at-a-time
-- lock are per worker. Inside nginx it uses the cosocket transport by itself.
local rest
local function get_rest()
  if not rest then
    rest = link.rest.new{
      imp_key = assert(os.getenv("PORTONE_IMP_KEY"), "set PORTONE_IMP_KEY (and env it in nginx.conf)"),
      imp_secret = assert(os.getenv("PORTONE_IMP_SECRET"), "set PORTONE_IMP_SECRET"),
      base_url = os.getenv("PORTONE_REST_BASE_URL"), -- nil: https://api.iamport.kr
      timeout = 10, connect_timeout = 3,
    }
  end
  return rest
end

-- Your order store. Here: a lua_shared_dict `orders` holding the amount of
-- each merchant_uid (set when the link was created) and `paid:<uid>` marks.
local orders = {}
function orders.find(merchant_uid)
  local amount = ngx.shared.orders:get("amount:" .. merchant_uid)
  return amount and { merchant_uid = merchant_uid, amount = amount } or nil
end
function orders.is_paid(merchant_uid)
  return ngx.shared.orders:get("paid:" .. merchant_uid) ~= nil
end
function orders.mark_paid(merchant_uid, imp_uid)
  -- add() is atomic: true only for the first notice of this order
  return ngx.shared.orders:add("paid:" .. merchant_uid, imp_uid)
end
function orders.unmark_paid(merchant_uid)
  ngx.shared.orders:delete("paid:" .. merchant_uid)
end

-- Longer than a lookup can take (connect 3 s + 10 s, a token refresh first).
M.CLAIM_TTL = 60
-- true for the one copy of a notice that may handle it now. The claim is on
-- the notice's imp_uid, not on the order: anyone can post a notice naming
-- the order with an imp_uid of their own, and were that one to hold the
-- order while it is looked up, the real notice arriving meanwhile would be
-- answered "in progress" and lost (PortOne sends a notice once unless
-- resends were set up). The order is still fulfilled once: mark_paid.
function orders.claim(imp_uid)
  return ngx.shared.orders:add("claim:" .. imp_uid, true, M.CLAIM_TTL)
end
function orders.release(imp_uid)
  ngx.shared.orders:delete("claim:" .. imp_uid)
end

local function fulfil(premature, merchant_uid, imp_uid)
  if premature then return end
  ngx.log(ngx.NOTICE, "order ", merchant_uid, " paid (", imp_uid, "): shipping")
end

local function answer(status, text)
  ngx.status = status
  ngx.header["Content-Type"] = "text/plain"
  ngx.say(text)
  return ngx.exit(status)
end

function M.handle()
  if ngx.req.get_method() ~= "POST" then return answer(405, "POST only") end
  local notice, err = link.webhook.parse_ngx()
  if not notice then
    ngx.log(ngx.WARN, "webhook: ", tostring(err))
    return answer(400, "bad notice")
  end
  if notice.status ~= "paid" then
    -- cancelled/failed/ready: look it up too before acting on it; this
    -- example only fulfils paid orders
    return answer(200, "ignored " .. notice.status)
  end
  local order = orders.find(notice.merchant_uid)
  if not order then
    ngx.log(ngx.WARN, "webhook: unknown order ", notice.merchant_uid)
    return answer(200, "unknown order")
  end
  if orders.is_paid(order.merchant_uid) then return answer(200, "OK") end -- a copy: done already
  if not orders.claim(notice.imp_uid) then
    -- another copy of this notice is being handled right now: its answer
    -- is this one's too
    return answer(200, "in progress")
  end
  -- under pcall: whatever goes wrong, the claim is released (OpenResty lets
  -- cosockets yield across pcall)
  local ok, status, text = pcall(M.handle_claimed, notice, order)
  orders.release(notice.imp_uid)
  if not ok then
    ngx.log(ngx.ERR, "webhook: ", tostring(status))
    return answer(500, "error, send again")
  end
  return answer(status, text)
end

-- The order is claimed: verify, mark, schedule the fulfilment. Returns the
-- status and text to answer (the caller releases the claim).
function M.handle_claimed(notice, order)
  local payment, verr = get_rest():verify(notice,
    { amount = order.amount, merchant_uid = order.merchant_uid, currency = order.currency })
  if not payment then
    if verr.kind == "mismatch" then
      -- a forged notice or a tampered amount: never fulfil; alert a human
      ngx.log(ngx.ERR, "webhook: ", tostring(verr))
      return 200, "mismatch"
    elseif verr.kind == "unpaid" then
      return 200, "not paid"
    end
    ngx.log(ngx.ERR, "webhook: lookup failed: ", tostring(verr))
    return 500, "lookup failed, send again"
  end

  if orders.mark_paid(order.merchant_uid, payment.imp_uid) then
    local ok, terr = ngx.timer.at(0, fulfil, order.merchant_uid, payment.imp_uid)
    if not ok then
      -- no timer (nginx is reloading, or too many pending): were the mark
      -- kept, the resend would be a no-op and the order never fulfilled
      orders.unmark_paid(order.merchant_uid)
      ngx.log(ngx.ERR, "webhook: cannot schedule the fulfilment: ", terr)
      return 500, "busy, send again"
    end
  end
  return 200, "OK"
end

M.orders = orders
return M
