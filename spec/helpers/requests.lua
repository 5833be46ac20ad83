--- Request fixtures shared by the codec specs and bench/encode.lua.
local M = {}

--- The clock the docs' example was written against.
M.DOCS_NOW = 1634320416

--- The docs' example request (title 테스트가맹점, user_code imp68124833,
-- amount 10000, six INIpayTest pay methods), a fresh table each call.
function M.docs_example()
  return {
    title = "테스트가맹점",
    user_code = "imp68124833",
    amount = 10000,
    merchant_uid = "mid_1634320416",
    name = "테스트 결제",
    currency = "KRW",
    buyer_tel = "010-1234-5678",
    pay_methods = {
      { pg = "INIpayTest", pay_method = "card", label = "신용/체크카드" },
      { pg = "INIpayTest", pay_method = "naverpay", label = "네이버페이" },
      { pg = "INIpayTest", pay_method = "kakaopay", label = "카카오페이" },
      { pg = "INIpayTest", pay_method = "phone", label = "핸드폰 소액결제" },
      { pg = "INIpayTest", pay_method = "trans", label = "계좌이체" },
      { pg = "INIpayTest", pay_method = "vbank", label = "가상계좌" },
    },
    expired_at = 1634324016,
  }
end

--- A small valid request that expires an hour after `now`, a fresh table
-- each call.
function M.base(now)
  return {
    title = "테스트가맹점",
    user_code = "imp68124833",
    amount = 10000,
    merchant_uid = "order_1042",
    name = "주문명:결제테스트",
    currency = "KRW",
    buyer_tel = "010-1234-5678",
    pay_methods = {
      { pg = "INIpayTest", pay_method = "card", label = "신용/체크카드" },
      { pg = "INIpayTest", pay_method = "naverpay", label = "네이버페이" },
    },
    expired_at = now + 3600,
  }
end

--- The request bench-encode measures: the docs' example (six pay methods)
-- with the buyer fields, both languages, a webhook URL and a small
-- custom_data, as a real order carries them: a 1,087-byte body. A fresh
-- table each call.
function M.bench()
  local req = M.docs_example()
  req.language = "ko"
  req.display_language = "ko"
  req.buyer_name = "홍길동"
  req.buyer_email = "buyer@example.com"
  req.buyer_addr = "서울특별시 강남구 신사동 661-16 5층"
  req.buyer_postcode = "06018"
  req.notice_url = "https://example.com/portone/webhook"
  req.custom_data = { order = 1042, items = { "A-1", "B-2" }, gift = false }
  return req
end

--- The same with three errors (amount -1, currency "krw", pay_methods[2]
-- pay_method "crad"): the invalid request of bench-encode.
function M.bench_invalid()
  local req = M.bench()
  req.amount = -1
  req.currency = "krw"
  req.pay_methods[2].pay_method = "crad"
  return req
end

return M
