--- The REST V1 surface (DESIGN §1), for the published V1 clients unmodified:
-- every answer under `/users/` and `/payments` is V1's envelope
-- `{code, message, response}` (404s and 405s too), with V1's status codes
-- and messages. Uses the shared state, the token store and the payments.
--
--   POST /users/getToken                      {imp_key, imp_secret} (JSON or form)
--   GET  /payments/{imp_uid}                  one payment
--   GET  /payments?imp_uid[]=&merchant_uid[]= several (207 when some are missing)
--   GET  /payments/{imp_uid}/balance          the amounts left, with their history
--   GET  /payments/find/{merchant_uid}[/{status}]     the order's newest payment
--   GET  /payments/findAll/{merchant_uid}[/{status}]  the order's payments, paged
--   GET  /payments/status/{status}            all|ready|paid|cancelled|failed, paged
--                                             (page, limit, from, to, sorting)
--   POST /payments/cancel                     full or partial, checksum checked
--   POST|PUT /payments/prepare, GET /payments/prepare/{merchant_uid}
--
-- Auth: `Authorization: Bearer <t>`, `Authorization: <t>` or
-- `X-ImpTokenHeader: <t>`. A payment made while the admin test mode was on
-- is a test-mode payment: found only with `include_sandbox=true`, as V1.
local cjson = require "cjson.safe"
local state = require "portone.sandbox.state"
local tokens = require "portone.sandbox.tokens"
local payments = require "portone.sandbox.payments"

local M = {}

local NOT_FOUND = "존재하지 않는 결제정보입니다."
local BAD_STATUS = "지원되지 않는 상태값입니다."
local STATUSES = { all = true, ready = true, paid = true, cancelled = true, failed = true }
local SORTINGS = { ["-started"] = true, started = true, ["-paid"] = true, paid = true,
                   ["-updated"] = true, updated = true }
M.PAGE_LIMIT, M.MAX_LIMIT = 20, 100

-- Lists that may be empty are encoded as this string, then replaced by []:
-- Debian's cjson has no array_mt.
local EMPTY = "\0empty-array\0"
local function list(t) return #t == 0 and EMPTY or t end

-- PortOne's envelope (state.encode: amounts of 15 and 16 digits exact).
local function envelope(status, code, message, response)
  local body = state.encode({
    code = code, message = message == nil and cjson.null or message,
    response = response == nil and cjson.null or response,
  })
  if not body then return state.JSON(500, { code = -1, message = "sandbox: unwritable answer" }) end
  return status, "application/json;charset=UTF-8", (body:gsub('"\\u0000empty%-array\\u0000"', "[]"))
end
M.envelope = envelope

local function null(v) if v == nil then return cjson.null end return v end

-- V1 splits a `{provider}.{MID}` pg into pg_provider and pg_id; a bare
-- provider code is the provider; a bare MID is taken as KG Inicis's (INIpay*,
-- the docs' example) or kept as pg_id. A channelKey payment reports the easy
-- pay it used, else KG Inicis.
local EASY = { kakaopay = true, naverpay = true, tosspay = true, payco = true, samsung = true,
               kpay = true, lpay = true, ssgpay = true, applepay = true, paypal = true }
local function pg_fields(p)
  local pg = p.pg
  if type(pg) == "string" then
    local provider, mid = pg:match("^([^.]+)%.(.+)$")
    if provider then return provider, mid end
    if pg:match("^[a-z][a-z0-9_]*$") then return pg, nil end
    return "html5_inicis", pg
  end
  if EASY[p.pay_method] then return p.pay_method, nil end
  return "html5_inicis", "INIpayTest"
end

-- V1's custom_data: a string (the JSON the merchant sent, as text), or null.
local function custom_data(v)
  if v == nil or v == cjson.null then return cjson.null end
  if type(v) == "string" then return v end
  return state.encode(v) or cjson.null
end

--- The payment as REST V1 shows it: every field, null where empty, times in
-- unix seconds (0 when not reached).
function M.view(p)
  local provider, pg_id = pg_fields(p)
  local history, receipts = {}, {}
  for i, c in ipairs(p.cancel_history or {}) do
    history[i] = { pg_tid = c.pg_tid, amount = c.amount, cancelled_at = c.cancelled_at,
                   reason = null(c.reason), receipt_url = c.receipt_url, cancellation_id = c.cancellation_id }
    receipts[i] = c.receipt_url
  end
  return {
    imp_uid = p.imp_uid, merchant_uid = p.merchant_uid, pay_method = p.pay_method,
    channel = p.channel or "pc", pg_provider = provider, emb_pg_provider = cjson.null,
    pg_tid = null(p.pg_tid), pg_id = null(pg_id), escrow = false, apply_num = null(p.apply_num),
    bank_code = null(p.bank_code), bank_name = null(p.bank_name),
    card_code = null(p.card_code), card_name = null(p.card_name), card_quota = p.card_quota or 0,
    card_number = null(p.card_number), card_type = null(p.card_type),
    vbank_code = null(p.vbank_code), vbank_name = null(p.vbank_name), vbank_num = null(p.vbank_num),
    vbank_holder = null(p.vbank_holder), vbank_date = p.vbank_date or 0,
    vbank_issued_at = p.vbank_issued_at or 0,
    name = null(p.name), amount = p.amount, cancel_amount = p.cancel_amount or 0, currency = p.currency,
    buyer_name = null(p.buyer_name), buyer_email = null(p.buyer_email), buyer_tel = null(p.buyer_tel),
    buyer_addr = null(p.buyer_addr), buyer_postcode = null(p.buyer_postcode),
    custom_data = custom_data(p.custom_data), user_agent = p.user_agent or "sorry_not_supported",
    status = p.status, started_at = p.started_at or 0, paid_at = p.paid_at or 0,
    failed_at = p.failed_at or 0, cancelled_at = p.cancelled_at or 0,
    fail_reason = null(p.fail_reason), cancel_reason = null(p.cancel_reason),
    receipt_url = state.conf.base .. "/__sandbox/receipts/" .. p.imp_uid,
    cancel_history = list(history), cancel_receipt_urls = list(receipts),
    cash_receipt_issued = false, customer_uid = cjson.null, customer_uid_usage = cjson.null,
  }
end

-- ---------------------------------------------------------------------------
-- auth

--- The token a request carries: `Authorization: Bearer <t>`, a raw
-- `Authorization: <t>` (most published clients), or `X-ImpTokenHeader: <t>`.
function M.request_token(headers)
  local h = headers["authorization"]
  if type(h) == "string" then
    return h:match("^[Bb]earer%s+(%S+)%s*$") or h:match("^%s*(%x+)%s*$")
  end
  local x = headers["x-imptokenheader"]
  if type(x) == "string" then return x:match("^%s*(%S+)%s*$") end
  return nil
end

local function authorized()
  return tokens.valid(M.request_token(ngx.req.get_headers(50)))
end

local function unauthorized() return envelope(401, -1, "Unauthorized") end

--- POST /users/getToken
function M.get_token(body)
  local req = state.read_fields(body) or {}
  if not tokens.accepts(req.imp_key, req.imp_secret) then
    return envelope(401, -1, "imp_key, imp_secret 정보가 올바르지 않습니다.")
  end
  local tok, exp, now = tokens.issue()
  return envelope(200, 0, nil, { access_token = tok, now = now, expired_at = exp })
end

-- ---------------------------------------------------------------------------
-- lookups

local function args() return ngx.req.get_uri_args(100) end

-- Test-mode payments only with include_sandbox=true.
local function visible(p, a)
  return p ~= nil and (not p.test or a.include_sandbox == "true" or a.include_sandbox == true)
end

local function one(imp_uid)
  local p = payments.get(imp_uid)
  if not visible(p, args()) then return envelope(404, -1, NOT_FOUND) end
  return envelope(200, 0, nil, M.view(p))
end

-- A query value as a list (`k[]=a&k[]=b`, or `k=a`).
local function arg_list(a, k)
  local v = a[k .. "[]"] or a[k]
  if v == nil or v == true then return {} end
  if type(v) == "string" then return { v } end
  return v
end

local function many()
  local a = args()
  local want, found = 0, {}
  local seen = {}
  for _, uid in ipairs(arg_list(a, "imp_uid")) do
    want = want + 1
    local p = payments.get(uid)
    if visible(p, a) and not seen[p.imp_uid] then seen[p.imp_uid] = true; found[#found + 1] = p end
  end
  for _, muid in ipairs(arg_list(a, "merchant_uid")) do
    want = want + 1
    local p = payments.newest_of(muid)
    if visible(p, a) and not seen[p.imp_uid] then seen[p.imp_uid] = true; found[#found + 1] = p end
  end
  if want == 0 then return envelope(400, -1, "imp_uid[] 또는 merchant_uid[] 를 지정해주셔야합니다.") end
  if #found == 0 then return envelope(404, -1, NOT_FOUND) end
  local out = {}
  for i, p in ipairs(found) do out[i] = M.view(p) end
  -- V1: 207 Multi-Status when only some of them were found
  return envelope(#found < want and 207 or 200, 0, nil, out)
end

local function sorter(sorting)
  local desc = sorting:sub(1, 1) == "-"
  local key = sorting:gsub("^%-", "")
  local field = ({ started = "started_at", paid = "paid_at", updated = "updated_at" })[key]
  return function(x, y)
    local a, b = x[field] or 0, y[field] or 0
    if a == b then a, b = x.seq or 0, y.seq or 0 end
    if desc then return a > b end
    return a < b
  end
end

-- The arguments every list takes: status, sorting; nil, message when bad.
local function list_args(a, status)
  if status == nil or status == "" then status = "all" end
  if not STATUSES[status] then return nil, BAD_STATUS end
  local sorting = type(a.sorting) == "string" and a.sorting or "-started"
  if not SORTINGS[sorting] then return nil, "지원되지 않는 정렬기준입니다." end
  return { status = status, sorting = sorting }
end

local function select(list_in, a, o, from, to)
  local out = {}
  for _, p in ipairs(list_in) do
    if visible(p, a) and (o.status == "all" or p.status == o.status)
        and (not from or (p.started_at or 0) >= from) and (not to or (p.started_at or 0) <= to) then
      out[#out + 1] = p
    end
  end
  table.sort(out, sorter(o.sorting))
  return out
end

-- V1's paged list {total, previous, next, list}: pages from 1, `limit`
-- per page (20; at most 100); previous/next are 0 at the ends.
M.MAX_PAGE = 2^31
local function paged(all, a)
  local page = math.max(1, math.min(math.floor(state.number(a.page) or 1), M.MAX_PAGE))
  local limit = math.floor(state.number(a.limit) or M.PAGE_LIMIT)
  limit = math.max(1, math.min(limit, M.MAX_LIMIT))
  local out = {}
  for i = (page - 1) * limit + 1, math.min(#all, page * limit) do out[#out + 1] = M.view(all[i]) end
  return { total = #all, previous = page > 1 and page - 1 or 0,
           next = page * limit < #all and page + 1 or 0, list = list(out) }
end

local function of_merchant(merchant_uid)
  local out = {}
  for _, uid in ipairs(payments.of_merchant(merchant_uid)) do out[#out + 1] = payments.get(uid) end
  return out
end

local function find(merchant_uid, status)
  local a = args()
  local o, bad = list_args(a, status)
  if not o then return envelope(400, -1, bad) end
  local found = select(of_merchant(merchant_uid), a, o)
  if #found == 0 then return envelope(404, -1, NOT_FOUND) end
  return envelope(200, 0, nil, M.view(found[1]))
end

local function find_all(merchant_uid, status)
  local a = args()
  local o, bad = list_args(a, status)
  if not o then return envelope(400, -1, bad) end
  local found = select(of_merchant(merchant_uid), a, o)
  if #found == 0 then return envelope(404, -1, NOT_FOUND) end
  return envelope(200, 0, nil, paged(found, a))
end

-- GET /payments/status/{status}: from/to (unix seconds, on started_at)
-- default to the last 90 days, as V1.
local function by_status(status)
  local a = args()
  local o, bad = list_args(a, status)
  if not o then return envelope(400, -1, bad) end
  local now = state.now()
  local to = state.number(a.to) or now
  local from = state.number(a.from) or (to - 90 * 86400)
  return envelope(200, 0, nil, paged(select(payments.all(), a, o, from, to), a))
end

-- The V1 amount split: VAT is 1/11 of the taxable part, rounded.
local function split(amount, tax_free)
  tax_free = math.min(tax_free or 0, amount)
  local vat = math.floor((amount - tax_free) / 11 + 0.5)
  return { tax_free = tax_free, supply = amount - tax_free - vat, vat = vat, service = 0 }
end
local ZERO = { tax_free = 0, supply = 0, vat = 0, service = 0 }

local function balance(imp_uid)
  local p = payments.get(imp_uid)
  if not visible(p, args()) then return envelope(404, -1, NOT_FOUND) end
  local histories = { { cash_receipt = ZERO, primary = split(p.amount, p.tax_free), secondary = ZERO,
                        discount = ZERO, created = p.paid_at ~= 0 and p.paid_at or p.started_at } }
  for _, c in ipairs(p.cancel_history or {}) do
    local s = split(c.amount, c.tax_free)
    histories[#histories + 1] = { cash_receipt = ZERO, secondary = ZERO, discount = ZERO,
      created = c.cancelled_at,
      primary = { tax_free = -s.tax_free, supply = -s.supply, vat = -s.vat, service = 0 } }
  end
  local left = p.status == "paid" and p.amount - (p.cancel_amount or 0) or 0
  return envelope(200, 0, nil, { amount = left, cash_receipt = ZERO, primary = split(left, 0),
                                 secondary = ZERO, discount = ZERO, histories = histories })
end

-- ---------------------------------------------------------------------------
-- changes

-- An amount field: absent, or a non-negative integer (a form sends text).
local function amount_field(req, k)
  local v = req[k]
  if v == nil or v == cjson.null or v == "" then return true, nil end
  v = state.number(v)
  if not v or v < 0 or v ~= math.floor(v) then return false end
  return true, v
end

local function cancel(body)
  local req = state.read_fields(body)
  if not req then return envelope(400, -1, "요청 본문이 올바르지 않습니다.") end
  local c = {}
  for _, k in ipairs({ "amount", "tax_free", "vat_amount", "checksum" }) do
    local ok, v = amount_field(req, k)
    if not ok then return envelope(400, -1, k .. " 은(는) 0 이상의 정수여야 합니다.") end
    c[k] = v
  end
  for _, k in ipairs({ "reason", "refund_holder", "refund_bank", "refund_account" }) do
    c[k] = type(req[k]) == "string" and req[k] ~= "" and req[k] or nil
  end
  -- true (JSON) or "true" (a form): the cancelled notice is posted
  c.enable_webhook = req.enable_webhook == true or req.enable_webhook == "true"
  local p
  if type(req.imp_uid) == "string" and req.imp_uid ~= "" then
    p = payments.get(req.imp_uid)
  elseif type(req.merchant_uid) == "string" and req.merchant_uid ~= "" then
    p = payments.newest_of(req.merchant_uid, "paid") or payments.newest_of(req.merchant_uid)
  else
    return envelope(200, 1, "imp_uid 또는 merchant_uid 중 하나는 지정해주셔야합니다.")
  end
  if not p then return envelope(200, 1, payments.CANCEL.none) end
  local done, err = payments.cancel(p.imp_uid, c, false)
  -- the sandbox's own refusal: nothing was cancelled
  if err == payments.FULL then return envelope(507, -1, err) end
  -- V1 refuses a cancel with HTTP 200 and code 1
  if not done then return envelope(200, 1, err) end
  return envelope(200, 0, nil, M.view(done))
end

local function prepare(body, update)
  local req = state.read_fields(body)
  if not req then return envelope(400, -1, "요청 본문이 올바르지 않습니다.") end
  local muid = req.merchant_uid
  if type(muid) ~= "string" or muid == "" or #muid > 80 then
    return envelope(400, -1, "merchant_uid 를 지정해주셔야합니다.")
  end
  local amount = state.number(req.amount)
  if not amount or amount <= 0 or amount ~= math.floor(amount) then
    return envelope(400, -1, "amount 는 0 보다 큰 정수여야 합니다.")
  end
  local ok, err = payments.prepare(muid, amount, update)
  if err == payments.FULL then return envelope(507, -1, err) end
  if not ok then return envelope(update and 404 or 200, 1, err) end
  return envelope(200, 0, nil, { merchant_uid = muid, amount = amount })
end

local function prepared(merchant_uid)
  local amount = payments.prepared(merchant_uid)
  if not amount then return envelope(404, -1, "사전등록된 결제정보가 존재하지 않습니다.") end
  return envelope(200, 0, nil, { merchant_uid = merchant_uid, amount = amount })
end

-- ---------------------------------------------------------------------------
-- routing

local function not_allowed() return envelope(405, -1, "Method Not Allowed") end

-- A path segment as sent: only %XX is decoded. A '+' in a path is a plus
-- (ngx.unescape_uri reads it as a space, as in a query string: an order
-- "a+b" asked for as /payments/find/a+b was not found).
local function decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- uri -> {methods = {GET = fn(body) ...}, class}; nil when not a V1 path.
local function match(uri)
  if uri == "/users/getToken" then return "token", { POST = M.get_token } end
  local rest = uri:match("^/payments(.*)$")
  if not rest then return nil end
  if rest == "" or rest == "/" then return "payment", { GET = many } end
  local s = rest:match("^/status/([^/]+)/?$")
  if s then return "payment", { GET = function() return by_status(decode(s)) end } end
  for _, kind in ipairs({ "find", "findAll" }) do
    local m, st = rest:match("^/" .. kind .. "/([^/]+)/?([^/]*)/?$")
    if m then
      local fn = kind == "find" and find or find_all
      return "payment", { GET = function() return fn(decode(m), decode(st)) end }
    end
  end
  if rest == "/cancel" then return "cancel", { POST = cancel } end
  if rest == "/prepare" then
    return "prepare", { POST = function(b) return prepare(b, false) end,
                        PUT = function(b) return prepare(b, true) end }
  end
  local pm = rest:match("^/prepare/([^/]+)/?$")
  if pm then return "prepare", { GET = function() return prepared(decode(pm)) end } end
  local id = rest:match("^/([^/]+)/balance/?$")
  if id then return "payment", { GET = function() return balance(decode(id)) end } end
  id = rest:match("^/([^/]+)/?$")
  if id then return "payment", { GET = function() return one(decode(id)) end } end
  return "payment", {}
end

--- Routes REST V1 requests: returns class, handler (handler(body) -->
-- status, content_type, body), or nil for paths outside REST V1.
function M.route(method, uri)
  -- Route on the path as sent: the decoded one turns a %2F inside a
  -- merchant_uid into a separator. Segments are decoded one by one.
  if uri:match("^/payments") or uri:match("^/users") then
    uri = (ngx.var.request_uri or uri):match("^[^?]*")
  end
  local class, methods
  if uri:match("^/users/") or uri == "/users" then
    class, methods = match(uri)
    if not class then class, methods = "token", {} end
  else
    class, methods = match(uri)
  end
  if not class then return nil end
  local fn = methods[method]
  if not fn then
    if next(methods) == nil then
      return class, function() return envelope(404, -1, "Not Found: " .. uri) end
    end
    return class, not_allowed
  end
  if class == "token" then return class, fn end
  return class, function(body)
    if not authorized() then return unauthorized() end
    return fn(body)
  end
end

return M
