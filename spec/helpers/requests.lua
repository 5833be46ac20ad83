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

return M
