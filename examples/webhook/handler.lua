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
--        the next try verifies
--
-- The notice can come twice and in any order: marking an order paid is
-- idempotent (a shared-dict `add`), so the second one is a no-op.
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
function orders.mark_paid(merchant_uid, imp_uid)
  -- add() is atomic: true only for the first notice of this order
  return ngx.shared.orders:add("paid:" .. merchant_uid, imp_uid)
end
function orders.unmark_paid(merchant_uid)
  ngx.shared.orders:delete("paid:" .. merchant_uid)
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

  local payment, verr = get_rest():verify(notice,
    { amount = order.amount, merchant_uid = order.merchant_uid })
  if not payment then
    if verr.kind == "mismatch" then
      -- a forged notice or a tampered amount: never fulfil; alert a human
      ngx.log(ngx.ERR, "webhook: ", tostring(verr))
      return answer(200, "mismatch")
    elseif verr.kind == "unpaid" then
      return answer(200, "not paid")
    end
    ngx.log(ngx.ERR, "webhook: lookup failed: ", tostring(verr))
    return answer(500, "lookup failed, send again")
  end

  if orders.mark_paid(order.merchant_uid, payment.imp_uid) then
    local ok, terr = ngx.timer.at(0, fulfil, order.merchant_uid, payment.imp_uid)
    if not ok then
      -- no timer (nginx is reloading, or too many pending): were the mark
      -- kept, the resend would be a no-op and the order never fulfilled
      orders.unmark_paid(order.merchant_uid)
      ngx.log(ngx.ERR, "webhook: cannot schedule the fulfilment: ", terr)
      return answer(500, "busy, send again")
    end
  end
  return answer(200, "OK")
end

M.orders = orders
return M
