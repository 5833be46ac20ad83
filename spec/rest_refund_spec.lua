-- link.rest's back-office calls against the sandbox: cancel (partial with
-- checksum, full, refused ones, the non-idempotent retry rule), find,
-- prepare, and verify's test-mode rule (a test payment is never verified by
-- a live client).
local link = require "portone.link"
local cases = require "helpers.cases"
local helper = require "helpers.sandbox"
local cjson = require "cjson"
local socket = require "socket"

local sb, client, rest

local seq = 0
local function uid(prefix)
  seq = seq + 1
  return ("%s-%d-%d"):format(prefix, os.time(), seq)
end

-- A paid link's imp_uid (paid through the admin API) and its request.
local function paid(over)
  local req = cases.request(cases.merge({ merchant_uid = uid("refund") }, over))
  local res = assert(client:create(req))
  local r = assert(sb:admin("POST", "pay", { id = res.id }))
  return r.imp_uid, req, res
end

describe("link.rest against the sandbox", function()
  lazy_setup(function()
    sb = helper.start()
    client = link.new{ base_url = sb.url, transport = "curl", retries = 0 }
    rest = link.rest.new{ imp_key = sb.imp_key, imp_secret = sb.imp_secret, base_url = sb.url,
                          transport = "curl" }
  end)
  lazy_teardown(function()
    if client then client:close() end
    if rest then rest:close() end
    if sb then sb:stop() end
  end)

  describe("cancel", function()
    it("refunds in parts with checksum, then the rest, and the balance adds up", function()
      local imp = paid{ amount = 10000 }
      local p = assert(rest:cancel{ imp_uid = imp, amount = 2500, checksum = 10000, reason = "one item" })
      assert.equal("paid", p.status)
      assert.equal(2500, p.cancel_amount)
      assert.equal(1, #p.cancel_history)
      assert.equal("one item", p.cancel_history[1].reason)
      p = assert(rest:cancel{ imp_uid = imp, checksum = 7500 })
      assert.equal("cancelled", p.status)
      assert.equal(10000, p.cancel_amount)
      assert.equal(2, #p.cancel_history)
      assert.equal(7500, p.cancel_history[2].amount)
    end)

    it("reports PortOne's refusals as api errors with the code (checksum, balance, done)", function()
      local imp = paid{ amount = 10000 }
      local _
      local p, err = rest:cancel{ imp_uid = imp, amount = 1000, checksum = 9000 }
      assert.is_nil(p)
      assert.equal("api", err.kind)
      assert.equal(1, err.code)
      assert.matches("checksum", err.message)
      _, err = rest:cancel{ imp_uid = imp, amount = 10001 }
      assert.equal("api", err.kind)
      assert(rest:cancel{ imp_uid = imp })
      _, err = rest:cancel{ imp_uid = imp }
      assert.equal("api", err.kind)
      assert.matches("이미 전액취소된 주문입니다", err.message)
      assert.is_false(err.retryable)
    end)

    it("sends the refund account a virtual account needs", function()
      local res = assert(client:create(cases.request{ merchant_uid = uid("vbank"),
        pay_methods = { { pg = "INIpayTest", pay_method = "vbank", label = "VA" } } }))
      local imp = assert(sb:admin("POST", "pay", { id = res.id })).imp_uid
      assert(sb:admin("POST", "deposit", { imp_uid = imp }))
      local p, err = rest:cancel{ imp_uid = imp }
      assert.is_nil(p)
      assert.equal("api", err.kind)
      p = assert(rest:cancel{ imp_uid = imp, refund_holder = "홍길동", refund_bank = "04",
                              refund_account = "12345678901" })
      assert.equal("cancelled", p.status)
      p, err = rest:cancel{ imp_uid = imp, refund_bank = 4 }
      assert.is_nil(p)
      assert.equal("validation", err.kind)
    end)

    it("refuses a key it does not know, nothing sent: a misspelt amount would refund the whole balance",
      function()
      local imp = paid{ amount = 10000 }
      local before = #assert(sb:requests())
      local near = { ammount = "amount", Amount = "amount", amout = "amount",
                     enable_webhooks = "enable_webhook", extra = false }
      for k, suggestion in pairs(near) do
        local p, err = rest:cancel{ imp_uid = imp, [k] = 1000, checksum = 10000 }
        assert.is_nil(p)
        assert.equal("validation", err.kind)
        assert.equal(k, err.errors[1].field)
        assert.equal("unknown_field", err.errors[1].code)
        assert.equal(suggestion or nil, err.errors[1].suggestion)
        assert.is_false(err.retryable)
      end
      assert.equal(before, #assert(sb:requests()))
      local p = assert(rest:payment(imp))
      assert.equal(0, p.cancel_amount)
      assert.equal("paid", p.status)
    end)

    it("sends vat_amount, refund_tel and enable_webhook; only with enable_webhook does a REST cancel"
      .. " post the cancelled notice (V1's rule)", function()
      local imp, req = paid{ amount = 10000, notice_url = sb.url .. "/__sandbox/inbox" }
      local function notices()
        local out = {}
        for _, e in ipairs(assert(sb:admin("GET", "inbox"))) do
          if e.body:find(imp, 1, true) then out[#out + 1] = cjson.decode(e.body) end
        end
        return out
      end
      local function wait_for(n)
        local deadline = socket.gettime() + 3
        while #notices() < n and socket.gettime() < deadline do socket.sleep(0.02) end
        return notices()
      end
      assert.equal(1, #wait_for(1))                       -- the paid notice
      assert(rest:cancel{ imp_uid = imp, amount = 1000, checksum = 10000 })
      local p = assert(rest:cancel{ imp_uid = imp, amount = 1000, checksum = 9000, vat_amount = 90,
                                    refund_tel = "010-1234-5678", enable_webhook = true })
      local body
      for _, e in ipairs(assert(sb:requests())) do
        if e.uri == "/payments/cancel" then body = cjson.decode(e.body) end
      end
      assert.same({ imp_uid = imp, amount = 1000, checksum = 9000, vat_amount = 90,
                    refund_tel = "010-1234-5678", enable_webhook = true }, body)
      local got = wait_for(2)
      assert.equal(2, #got)                               -- none for the first cancel
      assert.same({ imp_uid = imp, merchant_uid = req.merchant_uid, status = "cancelled",
                    cancellation_id = p.cancel_history[2].cancellation_id }, got[2])
      -- enable_webhook = false is sent as such, and no notice follows: the
      -- next cancel's (with enable_webhook) is the only one that comes
      assert(rest:cancel{ imp_uid = imp, amount = 1000, checksum = 8000, enable_webhook = false })
      p = assert(rest:cancel{ imp_uid = imp, amount = 1000, checksum = 7000, enable_webhook = true })
      got = wait_for(3)
      assert.equal(3, #got)
      assert.equal(p.cancel_history[4].cancellation_id, got[3].cancellation_id)
    end)

    it("cancels by merchant_uid", function()
      local imp, req = paid()
      local p = assert(rest:cancel{ merchant_uid = req.merchant_uid, reason = "out of stock" })
      assert.equal(imp, p.imp_uid)
      assert.equal("cancelled", p.status)
      assert.equal("out of stock", p.cancel_reason)
    end)

    it("checks its arguments before any request", function()
      local before = #assert(sb:requests())
      for _, bad in ipairs({ {}, { imp_uid = "a/b" }, { imp_uid = "imp_1", amount = 0 },
                             { imp_uid = "imp_1", amount = 1.5 }, { imp_uid = "imp_1", checksum = -1 },
                             { imp_uid = "imp_1", amount = 10, tax_free = 11 }, { merchant_uid = "" },
                             { imp_uid = "imp_1", reason = 5 }, { imp_uid = "imp_1", vat_amount = -1 },
                             { imp_uid = "imp_1", refund_tel = 5 },
                             { imp_uid = "imp_1", enable_webhook = "yes" } }) do
        local p, err = rest:cancel(bad)
        assert.is_nil(p)
        assert.equal("validation", err.kind)
      end
      assert.equal(before, #assert(sb:requests()))
      assert.has_error(function() rest:cancel("imp_1") end)
    end)

    it("is not retryable once it may have reached PortOne; a 401 is retried with a fresh token", function()
      local imp = paid{ amount = 10000 }
      -- the cancel is done, but the answer is cut short
      assert(sb:faults("cancel", { { truncate = true } }))
      local p, err = rest:cancel{ imp_uid = imp, amount = 1000, checksum = 10000 }
      assert.is_nil(p)
      assert.equal("transport", err.kind)
      assert.is_false(err.retryable)
      -- a blind retry with the same checksum is refused: no double refund
      local _
      _, err = rest:cancel{ imp_uid = imp, amount = 1000, checksum = 10000 }
      assert.equal("api", err.kind)
      assert.matches("checksum", err.message)
      assert(sb:faults("cancel", { { status = 503 } }))
      _, err = rest:cancel{ imp_uid = imp, amount = 1000, checksum = 9000 }
      assert.equal("http", err.kind)
      assert.is_true(err.retryable)            -- PortOne said so: nothing was done
      assert(sb:admin("POST", "tokens", { revoke = true }))
      p = assert(rest:cancel{ imp_uid = imp, amount = 1000, checksum = 9000 })
      assert.equal(2000, p.cancel_amount)     -- the cut one and this one, nothing else
    end)

    it("a failed token fetch: the cancel was never sent, so it is retryable as the fetch is", function()
      local imp = paid{ amount = 10000 }
      local fresh = link.rest.new{ imp_key = sb.imp_key, imp_secret = sb.imp_secret, base_url = sb.url,
                                   transport = "curl" }
      local function cancels()
        local n = 0
        for _, r in ipairs(assert(sb:requests())) do
          if r.uri == "/payments/cancel" then n = n + 1 end
        end
        return n
      end
      local before = cancels()
      -- PortOne answers the token request 502, or issues it and the answer is
      -- lost (twice: libcurl sends it again after a reused connection died)
      for _, faults in ipairs({ { { status = 502 } }, { { reset_after = true }, { reset_after = true } } }) do
        assert(sb:faults("token", faults))
        local p, err = fresh:cancel{ imp_uid = imp, amount = 1000, checksum = 10000 }
        assert.is_nil(p)
        assert.matches("getToken", err.message)
        assert.is_true(err.retryable, tostring(err))   -- nothing was refunded: safe to retry
        assert.is_nil(err.unanswered)                    -- that was the getToken's send
      end
      assert.equal(before, cancels())
      -- a refused key stays final
      local bad = link.rest.new{ imp_key = sb.imp_key, imp_secret = "not-the-secret", base_url = sb.url,
                                 transport = "curl" }
      local _, err = bad:cancel{ imp_uid = imp, amount = 1000, checksum = 10000 }
      assert.equal("auth", err.kind)
      assert.is_falsy(err.retryable)
      bad:close()
      -- the retry goes through, once
      local p = assert(fresh:cancel{ imp_uid = imp, amount = 1000, checksum = 10000 })
      assert.equal(1000, p.cancel_amount)
      fresh:close()
    end)

    it("a 401 to the silent re-send of a cancel whose first send got no answer is not retried", function()
      local imp = paid{ amount = 10000 }
      assert(rest:payment(imp))               -- a token, and a kept-alive connection
      local before = #assert(sb:requests())
      assert(sb:faults("cancel", { { reset_after = true }, { status = 401 } }))
      local p, err = rest:cancel{ imp_uid = imp, amount = 1000 }
      assert.is_nil(p)
      assert.equal(1, err.unanswered, tostring(err))
      assert.is_false(err.retryable)
      -- no fresh token and third send: the first one was done
      assert.equal(before + 2, #assert(sb:requests()))
      assert.equal(1000, assert(rest:payment(imp)).cancel_amount)
    end)

    it("a 503 to the silent re-send of a cancel whose first send got no answer is not retryable",
        function()
      local imp = paid{ amount = 10000 }
      assert(rest:payment(imp))               -- the connection is kept alive
      -- the cancel is done, then the connection is reset; libcurl sends it
      -- again on a new one, which is refused with a 503
      assert(sb:faults("cancel", { { reset_after = true }, { status = 503 } }))
      local p, err = rest:cancel{ imp_uid = imp, amount = 1000 }
      assert.is_nil(p)
      assert.equal("http", err.kind, tostring(err))
      assert.equal(503, err.status)
      assert.equal(1, err.unanswered)
      assert.is_false(err.retryable)          -- the refund went through
      assert.equal(1000, assert(rest:payment(imp)).cancel_amount)
    end)
  end)

  describe("find", function()
    it("finds the newest payment of an order, by status too; 404 when none", function()
      local imp, req = paid()
      local p = assert(rest:find(req.merchant_uid))
      assert.equal(imp, p.imp_uid)
      assert.equal(imp, assert(rest:find(req.merchant_uid, "paid")).imp_uid)
      local _
      local none, err = rest:find(req.merchant_uid, "cancelled")
      assert.is_nil(none)
      assert.equal("http", err.kind)
      assert.equal(404, err.status)
      _, err = rest:find(req.merchant_uid, "refunded")
      assert.equal("validation", err.kind)
    end)

    it("escapes the merchant_uid in the path", function()
      local imp, req = paid{ merchant_uid = uid("a b/c?d") }
      assert.equal(imp, assert(rest:find(req.merchant_uid)).imp_uid)
    end)
  end)

  describe("prepare", function()
    it("registers the amount; paying the order with another amount fails", function()
      local muid = uid("prep")
      assert.same({ merchant_uid = muid, amount = 9000 }, assert(rest:prepare(muid, 9000)))
      local _
      local err
      _, err = rest:prepare(muid, 9000)
      assert.equal("api", err.kind)          -- registered already
      local res = assert(client:create(cases.request{ merchant_uid = muid, amount = 10000 }))
      local r = assert(sb:admin("POST", "pay", { id = res.id }))
      assert.equal("failed", r.payment.status)
      local p = assert(rest:find(muid, "failed"))
      assert.is_string(p.fail_reason)
      _, err = rest:prepare(muid, 0)
      assert.equal("validation", err.kind)
    end)
  end)

  it("a payment refunded in part no longer verifies as paid (its status stays paid)", function()
    local imp, req = paid{ amount = 10000 }
    local notice = { imp_uid = imp, merchant_uid = req.merchant_uid, status = "paid" }
    assert(rest:verify(notice, { amount = 10000 }))
    local p = assert(rest:cancel{ imp_uid = imp, amount = 9000, checksum = 10000 })
    assert.equal("paid", p.status)
    -- the cancellation's webhook says "cancelled"; a handler that verifies
    -- every notice must not fulfil the order on it
    local _, err = rest:verify({ imp_uid = imp, merchant_uid = req.merchant_uid, status = "cancelled" },
      { amount = 10000 })
    assert.equal("unpaid", err.kind)
    assert.equal(9000, err.cancel_amount)
  end)

  describe("verify and test mode", function()
    local notice, req
    lazy_setup(function()
      assert(sb:admin("POST", "test_mode", { on = true }))
      local imp
      imp, req = paid()
      assert(sb:admin("POST", "test_mode", { on = false }))
      notice = { imp_uid = imp, merchant_uid = req.merchant_uid, status = "paid" }
    end)

    it("a live client never verifies a test-mode payment", function()
      local p, err = rest:verify(notice, { amount = req.amount })
      assert.is_nil(p)
      assert.equal("lookup", err.stage)
      assert.equal(404, err.status)
      local sent = assert(sb:requests())
      assert.is_nil(sent[#sent].uri:find("include_sandbox", 1, true))
    end)

    it("a client made for test mode verifies it, and compares the currency", function()
      local test = link.rest.new{ imp_key = sb.imp_key, imp_secret = sb.imp_secret, base_url = sb.url,
                                  transport = "curl", test_mode = true }
      finally(function() test:close() end)
      local p = assert(test:verify(notice, { amount = req.amount, currency = "KRW" }))
      assert.equal(notice.imp_uid, p.imp_uid)
      local _, err = test:verify(notice, { amount = req.amount, currency = "USD" })
      assert.equal("mismatch", err.kind)
      assert.equal("currency", err.field)
    end)
  end)
end)
