--- The sandbox half of the payment flow, for scripts and the demo: pays a
-- link through the sandbox (as the bridge page's form would), waits for the
-- webhook at the sandbox's own inbox, parses it and verifies it over REST V1.
--
--   local pay_and_verify = dofile("examples/webhook/pay_and_verify.lua")
--   local sb = require("portone.sandbox").start{ imp_key = "k", imp_secret = "s" }
--   -- create the link with notice_url = sb.url .. "/__sandbox/inbox"
--   local r = pay_and_verify(sb, link_result_or_id, { amount = 10000, merchant_uid = "A-1",
--                            imp_key = "k", imp_secret = "s", method = 1 })
--   --> { imp_uid =, notice =, payment =, webhook = {content_type, body} }  or nil, message
--
-- Needs the link created with `notice_url = sb.url .. "/__sandbox/inbox"`.
local link = require "portone.link"
local socket = require "socket"

return function(sb, res, opts)
  local id = type(res) == "table" and (res.id or res.url) or res
  local paid, err = sb:admin("POST", "pay", { id = id, method = opts.method or 1 })
  if not paid then return nil, "pay: " .. tostring(err) end
  if paid.webhook ~= "normal" and paid.webhook ~= "twice" and paid.webhook ~= "late" then
    return nil, "no webhook is coming (" .. tostring(paid.webhook) .. "): is notice_url the sandbox inbox?"
  end
  local hook
  local deadline = socket.gettime() + (opts.wait or 10)
  while not hook and socket.gettime() < deadline do
    for _, e in ipairs(sb:admin("GET", "inbox") or {}) do
      if e.body:find(paid.imp_uid, 1, true) then hook = e end
    end
    if not hook then socket.sleep(0.05) end
  end
  if not hook then return nil, "no webhook for " .. paid.imp_uid .. " within the wait" end
  local notice, perr = link.webhook.parse(hook.body, hook.content_type)
  if not notice then return nil, "parse: " .. tostring(perr) end
  local rest = link.rest.new{ imp_key = opts.imp_key, imp_secret = opts.imp_secret, base_url = sb.url,
                              transport = "curl" }
  local payment, verr = rest:verify(notice, { amount = opts.amount, merchant_uid = opts.merchant_uid })
  rest:close()
  if not payment then return nil, "verify: " .. tostring(verr), verr end
  return { imp_uid = paid.imp_uid, notice = notice, payment = payment,
           webhook = { content_type = hook.content_type, body = hook.body } }
end
