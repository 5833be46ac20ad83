-- link.webhook.parse: JSON and form bodies, caps, bad input.
local webhook = require "portone.link.webhook"
local link = require "portone.link"

describe("link.webhook.parse", function()
  it("is reachable as link.webhook", function()
    assert.equal(webhook, link.webhook)
  end)

  it("reads a JSON notice", function()
    local n, err = webhook.parse('{"imp_uid":"imp_123456789012","merchant_uid":"order-1","status":"paid"}',
      "application/json")
    assert.is_nil(err)
    assert.same({ imp_uid = "imp_123456789012", merchant_uid = "order-1", status = "paid" }, n)
  end)

  it("accepts a charset parameter and any case in the content type", function()
    local n = webhook.parse('{"imp_uid":"imp_1","merchant_uid":"o","status":"ready"}',
      "Application/JSON; charset=UTF-8")
    assert.equal("ready", n.status)
  end)

  it("reads a form notice with percent- and plus-encoding", function()
    local n, err = webhook.parse("imp_uid=imp_77&merchant_uid=%EC%A3%BC%EB%AC%B8+1&status=cancelled"
      .. "&cancellation_id=c_9", "application/x-www-form-urlencoded")
    assert.is_nil(err)
    assert.same({ imp_uid = "imp_77", merchant_uid = "주문 1", status = "cancelled",
      cancellation_id = "c_9" }, n)
  end)

  it("keeps only the known fields", function()
    local n = webhook.parse('{"imp_uid":"imp_1","merchant_uid":"o","status":"paid","amount":1,"x":{}}',
      "application/json")
    assert.same({ imp_uid = "imp_1", merchant_uid = "o", status = "paid" }, n)
    n = webhook.parse("imp_uid=imp_1&merchant_uid=o&status=paid&amount=5&empty&=x",
      "application/x-www-form-urlencoded")
    assert.same({ imp_uid = "imp_1", merchant_uid = "o", status = "paid" }, n)
  end)

  it("guesses the format when there is no content type", function()
    assert.equal("imp_1", webhook.parse('  {"imp_uid":"imp_1","merchant_uid":"o","status":"paid"}').imp_uid)
    assert.equal("imp_2", webhook.parse("imp_uid=imp_2&merchant_uid=o&status=paid", nil).imp_uid)
  end)

  it("refuses a body over the cap before parsing it", function()
    local big = '{"imp_uid":"imp_1","merchant_uid":"o","status":"paid","pad":"' .. ("x"):rep(20000) .. '"}'
    local n, err = webhook.parse(big, "application/json")
    assert.is_nil(n)
    assert.equal("decode", err.kind)
    assert.is_true(err.too_large)
    assert.matches("cap", tostring(err))
    -- the cap can be set per call
    n, err = webhook.parse('{"imp_uid":"imp_1","merchant_uid":"o","status":"paid"}', "application/json",
      { max_bytes = 10 })
    assert.is_nil(n); assert.is_true(err.too_large)
  end)

  it("refuses other content types", function()
    local n, err = webhook.parse("imp_uid=imp_1&merchant_uid=o&status=paid", "text/plain")
    assert.is_nil(n)
    assert.equal("decode", err.kind)
    assert.matches("text/plain", err.message)
  end)

  it("refuses bodies that are not JSON objects", function()
    for _, body in ipairs({ "", "null", "[]", "[1,2]", '"paid"', "12", "{", '{"imp_uid":' }) do
      local n, err = webhook.parse(body, "application/json")
      assert.is_nil(n, body)
      assert.equal("decode", err.kind, body)
    end
  end)

  it("refuses a nil body without raising", function()
    local n, err = webhook.parse(nil, "application/json")
    assert.is_nil(n)
    assert.equal("decode", err.kind)
  end)

  it("lists every missing or malformed field", function()
    local n, err = webhook.parse('{"merchant_uid":5.5,"status":"refunded"}', "application/json")
    assert.is_nil(n)
    assert.equal("validation", err.kind)
    local by = {}
    for _, e in ipairs(err.errors) do by[e.field] = e.code end
    assert.same({ imp_uid = "missing", merchant_uid = "type", status = "enum" }, by)
  end)

  it("refuses imp_uids that could not go into a path", function()
    for _, bad in ipairs({ "../admin", "imp 1", "imp_1?x=1", "imp%2F1", ("a"):rep(65) }) do
      local body = "imp_uid=" .. bad:gsub("[^%w_]", function(c) return ("%%%02X"):format(c:byte()) end)
        .. "&merchant_uid=o&status=paid"
      local n, err = webhook.parse(body, "application/x-www-form-urlencoded")
      assert.is_nil(n, bad)
      assert.equal("imp_uid", err.errors[1].field)
    end
  end)

  it("refuses control characters and invalid UTF-8", function()
    for _, mu in ipairs({ "a%00b", "a%0Ab", "%FF", "%C3", "%ED%A0%80", "%C2%85" }) do
      local n, err = webhook.parse("imp_uid=imp_1&status=paid&merchant_uid=" .. mu,
        "application/x-www-form-urlencoded")
      assert.is_nil(n, mu)
      assert.equal("encoding", err.errors[1].code, mu)
    end
  end)

  it("refuses a repeated field and broken percent-encoding", function()
    local n, err = webhook.parse("imp_uid=imp_1&imp_uid=imp_2&merchant_uid=o&status=paid",
      "application/x-www-form-urlencoded")
    assert.is_nil(n); assert.equal("decode", err.kind); assert.matches("twice", err.message)
    n, err = webhook.parse("imp_uid=imp_1%G1&merchant_uid=o&status=paid", "application/x-www-form-urlencoded")
    assert.is_nil(n); assert.equal("decode", err.kind)
  end)

  it("treats JSON null and empty strings as missing", function()
    local n, err = webhook.parse('{"imp_uid":null,"merchant_uid":"","status":"paid","cancellation_id":null}',
      "application/json")
    assert.is_nil(n)
    assert.equal(2, #err.errors)
  end)

  it("raises on wrong argument types", function()
    assert.has_error(function() webhook.parse({}, "application/json") end)
    assert.has_error(function() webhook.parse("", 5) end)
    assert.has_error(function() webhook.parse("", nil, "x") end)
  end)

  it("checks UTF-8 the same way on every interpreter", function()
    assert.is_true(webhook._clean_utf8("주문 €𝄞"))
    -- decimal escapes: Lua 5.1 has no \x
    assert.is_false(webhook._clean_utf8("\192\175"))          -- overlong
    assert.is_false(webhook._clean_utf8("\244\144\128\128")) -- > U+10FFFF
  end)
end)
