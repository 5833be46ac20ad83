--- The customer's side of a sandbox payment link: the bridge page (`GET
-- /<id>`), the payment step for a link with `direct`, the success page, the
-- already-paid page and the expired page (HTTP 410), in Korean or English per
-- the link's `display_language`. Plain HTML with inline CSS, no outside
-- assets, sized for a phone first.
--
-- The rendering functions are pure (they also run in a plain Lua, for the
-- specs); `route` and the handlers run inside the sandbox's nginx.
--
-- Amounts: the link's `amount` is an integer (DESIGN §1). For currencies with
-- minor units (USD, EUR, ...) the sandbox reads it as minor units, so 1250 USD
-- shows as $12.50; KRW and JPY have none (10000 KRW shows as 10,000원).
local payments = require "portone.sandbox.payments"

local M = {}

local TEXT = {
  ko = {
    lang = "ko", sandbox = "PortOne 샌드박스 · 실제 결제가 아닙니다",
    amount = "결제 금액", product = "상품", choose = "결제 수단을 선택하세요",
    pay_step = "결제 단계", pay_with = "결제 수단", approve = "결제하기",
    expired_title = "만료된 결제 링크입니다",
    expired_body = "이 결제 링크는 만료되었거나 판매자가 비활성화했습니다. 판매자에게 문의해 주세요.",
    not_found_title = "결제 링크를 찾을 수 없습니다",
    not_found_body = "주소를 다시 확인해 주세요.",
    success_title = "결제가 완료되었습니다",
    success_body = "결제가 승인되었습니다. 이 창을 닫으셔도 됩니다.",
    paid_title = "이미 결제된 링크입니다",
    paid_body = "이 결제 링크로는 한 번만 결제할 수 있습니다.",
    order_paid_title = "이미 결제된 주문입니다",
    order_paid_body = "이 주문번호(merchant_uid)로 이미 결제가 이루어졌습니다. 한 주문은 한 번만 결제할 수 있습니다.",
    store_full_title = "결제를 저장할 수 없습니다",
    bad_method = "알 수 없는 결제 수단입니다.",
    order = "주문번호", imp_uid = "결제번호 (imp_uid)", paid_at = "결제 일시",
    expires = "결제 기한", decline = "결제 취소",
    failed_title = "결제가 취소되었습니다", failed_body = "결제가 진행되지 않았습니다. 다시 시도할 수 있습니다.",
    vbank_title = "가상계좌가 발급되었습니다", vbank_body = "아래 계좌로 기한 안에 입금해 주세요.",
    vbank_bank = "은행", vbank_num = "계좌번호", vbank_holder = "예금주", vbank_date = "입금 기한",
  },
  en = {
    lang = "en", sandbox = "PortOne sandbox · not a real payment",
    amount = "Amount", product = "Product", choose = "Choose how to pay",
    pay_step = "Payment", pay_with = "Pay with", approve = "Pay now",
    expired_title = "This payment link has expired",
    expired_body = "The link is past its expiry time or the seller turned it off. Please contact the seller.",
    not_found_title = "Payment link not found",
    not_found_body = "Please check the address.",
    success_title = "Payment complete",
    success_body = "Your payment was approved. You can close this window.",
    paid_title = "This link has already been paid",
    paid_body = "A payment link can be paid only once.",
    order_paid_title = "This order has already been paid",
    order_paid_body = "A payment was already made for this order (merchant_uid)."
      .. " An order can be paid only once.",
    store_full_title = "The payment could not be stored",
    bad_method = "Unknown payment method.",
    order = "Order", imp_uid = "Payment ID (imp_uid)", paid_at = "Paid at",
    expires = "Pay by", decline = "Cancel payment",
    failed_title = "Payment cancelled", failed_body = "No payment was made. You can try again.",
    vbank_title = "Virtual account issued",
    vbank_body = "Please transfer the amount to this account in time.",
    vbank_bank = "Bank", vbank_num = "Account", vbank_holder = "Holder", vbank_date = "Deposit by",
  },
}
M.TEXT = TEXT

-- Default labels when a pay method has none.
local METHOD_LABELS = {
  card = { "신용/체크카드", "Credit / debit card" }, trans = { "실시간 계좌이체", "Bank transfer" },
  vbank = { "가상계좌", "Virtual account" }, phone = { "휴대폰 소액결제", "Mobile phone" },
  kakaopay = { "카카오페이", "KakaoPay" }, naverpay = { "네이버페이", "Naver Pay" },
  tosspay = { "토스페이", "Toss Pay" }, payco = { "페이코", "PAYCO" },
  samsungpay = { "삼성페이", "Samsung Pay" }, applepay = { "애플페이", "Apple Pay" },
  paypal = { "페이팔", "PayPal" }, point = { "포인트", "Points" },
}

--- The page language for a link record: its display_language, else ko.
function M.lang(rec)
  local l = rec and (rec.display_language or (rec.info and rec.info.display_language))
  return TEXT[l] and l or "ko"
end

--- A pay method's label for the page.
function M.method_label(pm, lang)
  if type(pm.label) == "string" and pm.label ~= "" then return pm.label end
  local d = METHOD_LABELS[pm.pay_method]
  if d then return d[lang == "en" and 2 or 1] end
  return tostring(pm.pay_method)
end

-- decimals, symbol before, suffix (ko)
local CURRENCIES = {
  KRW = { 0, "₩", "원" }, JPY = { 0, "¥", "円" },
  USD = { 2, "$" }, EUR = { 2, "€" }, GBP = { 2, "£" }, CNY = { 2, "¥" },
}

local function group(digits)
  local out = digits:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""))
end

--- Formats an integer amount for its currency: 10000 KRW -> "10,000원" (ko)
-- or "₩10,000" (en); 1250 USD -> "$12.50"; 999 XYZ -> "9.99 XYZ". The
-- language "iso" gives the plain form: "10,000 KRW", "12.50 USD".
function M.format_amount(amount, currency, lang)
  amount = tonumber(amount) or 0
  local c = CURRENCIES[currency] or { 2 }
  local neg = amount < 0 and "-" or ""
  local n = math.abs(amount)
  local s
  if c[1] == 0 then
    s = group(("%.0f"):format(n))
  else
    local scale = 10 ^ c[1]
    local whole = math.floor(n / scale)
    local frac = n - whole * scale
    s = group(("%.0f"):format(whole)) .. "." .. ("%0" .. c[1] .. ".0f"):format(frac)
  end
  if lang == "iso" then return neg .. s .. " " .. tostring(currency) end
  if lang ~= "en" and c[3] then return neg .. s .. c[3] end
  if c[2] then return neg .. c[2] .. s end
  return neg .. s .. " " .. tostring(currency)
end

local function esc(s)
  return (tostring(s):gsub("[&<>\"']", {
    ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;",
  }))
end
M.escape = esc

local CSS = [[
*{box-sizing:border-box}
body{margin:0;background:#f2f4f7;color:#1b1f24;font:16px/1.5 -apple-system,"Segoe UI",Roboto,
"Noto Sans KR","Apple SD Gothic Neo","Malgun Gothic","NanumGothic",sans-serif}
main{max-width:440px;margin:0 auto;padding:16px}
.card{background:#fff;border-radius:16px;padding:24px 20px;box-shadow:0 1px 4px rgba(0,0,0,.08)}
.badge{display:inline-block;font-size:12px;color:#5b6472;background:#e6e9ee;border-radius:999px;
padding:2px 10px;margin-bottom:12px}
h1{font-size:22px;margin:0 0 16px;word-break:keep-all}
.row{display:flex;justify-content:space-between;gap:12px;padding:10px 0;border-top:1px solid #eef0f3}
.row span:first-child{color:#5b6472}
.row span:last-child{text-align:right;word-break:break-all}
.amount{font-size:28px;font-weight:700;margin:4px 0 16px}
h2{font-size:15px;color:#5b6472;margin:20px 0 10px;font-weight:600}
form{margin:0}
button{display:block;width:100%;min-height:52px;margin:0 0 10px;border:0;border-radius:12px;
background:#2b6cf6;color:#fff;font:inherit;font-weight:600;cursor:pointer}
button.alt{background:#fff;color:#1b1f24;border:1px solid #d5d9e0}
button:focus-visible{outline:3px solid #9bbcff;outline-offset:2px}
.status{line-height:0;margin-bottom:12px}
.ok .status{color:#17a35a}.gone .status{color:#c0392b}
p.note{color:#5b6472;margin:0 0 8px}
footer{font-size:12px;color:#8a93a0;text-align:center;margin-top:16px}
]]

-- Inline SVG icons: an emoji or a symbol could be missing from the phone's
-- fonts (and no outside asset is loaded).
local ICON_OK = '<div class="status" aria-hidden="true"><svg width="48" height="48" viewBox="0 0 48 48">'
  .. '<circle cx="24" cy="24" r="22" fill="#17a35a"/><path d="M14 25l7 7 13-15" fill="none" stroke="#fff"'
  .. ' stroke-width="4" stroke-linecap="round" stroke-linejoin="round"/></svg></div>\n'
local ICON_GONE = '<div class="status" aria-hidden="true"><svg width="48" height="48" viewBox="0 0 48 48">'
  .. '<circle cx="24" cy="24" r="22" fill="#c0392b"/><path d="M24 12v13l8 5" fill="none" stroke="#fff"'
  .. ' stroke-width="4" stroke-linecap="round" stroke-linejoin="round"/></svg></div>\n'

local function page(t, title, class, body)
  return table.concat({
    '<!DOCTYPE html>\n<html lang="', t.lang, '"><head><meta charset="utf-8">\n',
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
    '<meta name="robots" content="noindex">\n',
    "<title>", esc(title), "</title>\n<style>", CSS, "</style></head>\n",
    '<body class="', class, '"><main><div class="card">\n',
    '<div class="badge">', esc(t.sandbox), "</div>\n", body,
    "</div><footer>PortOne sandbox</footer></main></body></html>\n",
  })
end

local function row(label, value, class)
  return '<div class="row' .. (class and (" " .. class) or "") .. '"><span>' .. esc(label)
    .. "</span><span>" .. esc(value) .. "</span></div>\n"
end

local function iso_time(unix, lang)
  local offset = 9 * 3600 -- PortOne's pages show KST
  local s = os.date("!%Y-%m-%d %H:%M", math.floor(tonumber(unix) or 0) + offset)
  return s .. (lang == "en" and " KST" or "")
end

-- <div class="amount"> with the localized amount, and the plain ISO form
-- ("1,234,567 KRW", "12.50 USD") as its title.
local function amount_div(amount, currency, lang)
  return table.concat({
    '<div class="amount" data-amount="', esc(("%.0f"):format(tonumber(amount) or 0)),
    '" data-currency="', esc(currency), '" title="', esc(M.format_amount(amount, currency, "iso")), '">',
    esc(M.format_amount(amount, currency, lang)), "</div>\n",
  })
end

local function summary(t, rec, lang)
  return table.concat({
    '<h1 class="title">', esc(rec.title), "</h1>\n",
    amount_div(rec.amount, rec.currency, lang),
    row(t.product, rec.name, "name"),
    row(t.order, rec.merchant_uid or "", "merchant-uid"),
  })
end

-- The buyer walks away from the payment window: a failed payment.
local function decline_form(t, id)
  return '<form method="post" action="/' .. esc(id) .. '" class="decline">\n'
    .. '<button type="submit" name="action" value="decline" class="decline alt">' .. esc(t.decline)
    .. "</button>\n</form>\n"
end

--- The bridge page: summary and one button per pay method.
function M.render_bridge(id, rec)
  local lang = M.lang(rec)
  local t = TEXT[lang]
  local buttons = {}
  for i, pm in ipairs(rec.pay_methods or {}) do
    buttons[#buttons + 1] = ('<button type="submit" name="method" value="%d" class="%s"'
      .. ' data-pay-method="%s">%s</button>\n'):format(i, i == 1 and "pay-method" or "pay-method alt",
      esc(pm.pay_method), esc(M.method_label(pm, lang)))
  end
  local body = table.concat({
    summary(t, rec, lang),
    row(t.expires, iso_time(rec.expired_at, lang), "expires"),
    '<h2>', esc(t.choose), "</h2>\n",
    '<form method="post" action="/', esc(id), '" class="pay-methods">\n', table.concat(buttons), "</form>\n",
    decline_form(t, id),
  })
  return page(t, rec.title, "bridge", body)
end

--- The payment step (a link with `direct`, which skips the bridge page).
function M.render_direct(id, rec, pm)
  local lang = M.lang(rec)
  local t = TEXT[lang]
  local body = table.concat({
    summary(t, rec, lang),
    row(t.pay_with, M.method_label(pm, lang), "pay-with"),
    '<form method="post" action="/', esc(id), '" class="pay-step">\n',
    '<button type="submit" name="method" value="direct" class="pay-method" data-pay-method="',
    esc(pm.pay_method), '">', esc(t.approve), "</button>\n</form>\n",
    decline_form(t, id),
  })
  return page(t, t.pay_step .. " · " .. tostring(rec.title), "direct", body)
end

--- The success page after the simulated approval.
function M.render_success(rec, payment)
  local lang = M.lang(rec)
  local t = TEXT[lang]
  local body = table.concat({
    ICON_OK .. '<h1 class="success">', esc(t.success_title), "</h1>\n",
    '<p class="note">', esc(t.success_body), "</p>\n",
    amount_div(payment.amount, payment.currency, lang),
    row(t.product, rec.name, "name"),
    row(t.pay_with, payment.label or payment.pay_method, "pay-with"),
    row(t.order, payment.merchant_uid, "merchant-uid"),
    row(t.imp_uid, payment.imp_uid, "imp-uid"),
    row(t.paid_at, iso_time(payment.paid_at, lang), "paid-at"),
  })
  return page(t, t.success_title, "ok", body)
end

--- The page after a declined payment (the link can be paid again).
function M.render_failed(rec, payment)
  local lang = M.lang(rec)
  local t = TEXT[lang]
  local body = table.concat({
    ICON_GONE .. '<h1 class="failed">', esc(t.failed_title), "</h1>\n",
    '<p class="note">', esc(t.failed_body), "</p>\n",
    row(t.product, rec.name, "name"),
    row(t.order, payment.merchant_uid, "merchant-uid"),
    row(t.imp_uid, payment.imp_uid, "imp-uid"),
  })
  return page(t, t.failed_title, "gone failed", body)
end

--- The page after a virtual account was issued (the payment is `ready`).
function M.render_vbank(rec, payment)
  local lang = M.lang(rec)
  local t = TEXT[lang]
  local body = table.concat({
    ICON_OK .. '<h1 class="vbank">', esc(t.vbank_title), "</h1>\n",
    '<p class="note">', esc(t.vbank_body), "</p>\n",
    amount_div(payment.amount, payment.currency, lang),
    row(t.vbank_bank, payment.vbank_name or "", "vbank-name"),
    row(t.vbank_num, payment.vbank_num or "", "vbank-num"),
    row(t.vbank_holder, payment.vbank_holder or "", "vbank-holder"),
    row(t.vbank_date, iso_time(payment.vbank_date, lang), "vbank-date"),
    row(t.order, payment.merchant_uid, "merchant-uid"),
    row(t.imp_uid, payment.imp_uid, "imp-uid"),
  })
  return page(t, t.vbank_title, "ok vbank", body)
end

--- The already-paid page.
function M.render_paid(rec, imp_uid)
  local lang = M.lang(rec)
  local t = TEXT[lang]
  local body = table.concat({
    ICON_OK .. '<h1 class="paid">', esc(t.paid_title), "</h1>\n",
    '<p class="note">', esc(t.paid_body), "</p>\n",
    row(t.product, rec.name, "name"),
    row(t.imp_uid, imp_uid or "", "imp-uid"),
  })
  return page(t, t.paid_title, "ok paid", body)
end

--- The page for a link whose order (merchant_uid) another payment holds
-- (served with 409): `why` says which payment.
function M.render_order_paid(rec, why)
  local lang = M.lang(rec)
  local t = TEXT[lang]
  local body = table.concat({
    ICON_GONE .. '<h1 class="order-paid">', esc(t.order_paid_title), "</h1>\n",
    '<p class="note">', esc(t.order_paid_body), "</p>\n",
    row(t.product, rec.name, "name"),
    row(t.order, rec.merchant_uid or "", "merchant-uid"),
    '<p class="note why">', esc(why or ""), "</p>\n",
  })
  return page(t, t.order_paid_title, "gone order-paid", body)
end

--- The page for a payment the sandbox could not store (served with 507):
-- `why` is the sandbox's message (how to make room).
function M.render_store_full(rec, why)
  local t = TEXT[M.lang(rec)]
  return page(t, t.store_full_title, "gone",
    '<h1 class="store-full">' .. esc(t.store_full_title) .. '</h1>\n<p class="note why">' .. esc(why or "")
      .. "</p>\n")
end

--- The expired page (served with 410).
function M.render_expired(rec)
  local lang = M.lang(rec)
  local t = TEXT[lang]
  local body = table.concat({
    ICON_GONE .. '<h1 class="expired">', esc(t.expired_title), "</h1>\n",
    '<p class="note expired">', esc(t.expired_body), "</p>\n",
    row(t.product, rec.name, "name"),
  })
  return page(t, t.expired_title, "gone", body)
end

--- The not-found page (404), in the requested language (ko by default).
function M.render_not_found(lang)
  local t = TEXT[lang] or TEXT.ko
  return page(t, t.not_found_title, "gone",
    '<h1 class="not-found">' .. esc(t.not_found_title) .. '</h1>\n<p class="note">' .. esc(t.not_found_body)
      .. "</p>\n")
end

--- A short error page (400) for a form that names no known method.
function M.render_bad_method(rec)
  local t = TEXT[M.lang(rec)]
  return page(t, t.bad_method, "gone", '<h1 class="bad-method">' .. esc(t.bad_method) .. "</h1>\n")
end

-- ---------------------------------------------------------------------------
-- inside nginx

local HTML = "text/html; charset=utf-8"

--- GET /<id>
function M.get(id)
  local rec = payments.link(id)
  if not rec then return 404, HTML, M.render_not_found() end
  -- A dead link (expired or deactivated) is gone, paid or not.
  if not payments.live(rec) then return 410, HTML, M.render_expired(rec) end
  local paid = payments.paid_imp_uid(id)
  if paid then return 200, HTML, M.render_paid(rec, paid) end
  local pm = payments.direct_method(rec)
  if pm then return 200, HTML, M.render_direct(id, rec, pm) end
  return 200, HTML, M.render_bridge(id, rec)
end

local function label(pm, rec) return M.method_label(pm, M.lang(rec)) end

--- POST /<id> (the form): approve (or decline) and show the result page.
function M.post(id, body)
  local args = ngx.decode_args(body or "", 10)
  local decline = args.action == "decline"
  local choice = type(args.method) == "string" and args.method or nil
  if decline and not choice then
    local rec = payments.link(id)
    choice = rec and payments.direct_method(rec) and "direct" or "1"
  end
  local ua = ngx.var.http_user_agent
  local payment, status, rec, why = payments.pay(id, choice, {
    decline = decline, label = label, user_agent = ua,
    channel = type(ua) == "string" and ua:find("Mobi", 1, true) and "mobile" or "pc",
  })
  if payment then
    if payment.status == "failed" then return 200, HTML, M.render_failed(rec, payment) end
    if payment.status == "ready" then return 200, HTML, M.render_vbank(rec, payment) end
    return 200, HTML, M.render_success(rec, payment)
  end
  if status == 404 then return 404, HTML, M.render_not_found() end
  if status == 409 and why then return 409, HTML, M.render_order_paid(rec, why) end
  if status == 409 then return 409, HTML, M.render_paid(rec, payments.paid_imp_uid(id)) end
  if status == 507 then return 507, HTML, M.render_store_full(rec, why) end
  if status == 410 then return 410, HTML, M.render_expired(rec) end
  return 400, HTML, M.render_bad_method(rec)
end

--- Routes the customer's pages: class, handler, or nil.
function M.route(method, uri)
  local id = uri:match("^/([A-Za-z0-9_-]+)$")
  if not id or #id > 64 then return nil end
  if method == "GET" or method == "HEAD" then
    return "page", function() return M.get(id) end
  elseif method == "POST" then
    return "page", function(body) return M.post(id, body) end
  end
  return nil
end

return M
