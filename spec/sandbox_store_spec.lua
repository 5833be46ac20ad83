-- The sandbox's payment store: a payment, once made, never vanishes (a full
-- store refuses the next payment instead of evicting an old one), and one
-- order (merchant_uid) is paid once, as PortOne refuses a second payment for
-- it (DESIGN §4), also when two of its links are paid at the same moment.
-- Raw HTTP over luasocket.
local helper = require "helpers.sandbox"
local sandbox = require "portone.sandbox"
local cjson = require "cjson"
local socket = require "socket"

local API = helper.API

local sb, token

local function call(method, path, body, headers)
  local status, raw, hdrs = helper.request(sb, method, path, body, headers)
  assert(status, raw)
  local ok, t = pcall(cjson.decode, raw)
  return status, ok and t or raw, hdrs, raw
end

local function authed(method, path, body)
  return call(method, path, body and cjson.encode(body) or nil, { Authorization = "Bearer " .. token })
end

local function login()
  local _, t = call("POST", "/users/getToken",
    cjson.encode({ imp_key = sb.imp_key, imp_secret = sb.imp_secret }))
  token = t.response.access_token
end

local seq = 0
local function fresh_uid(prefix)
  seq = seq + 1
  return ("%s-%d-%d"):format(prefix, os.time(), seq)
end

-- A link; `over` goes into payment_info. Returns its id and merchant_uid.
local function create(over)
  local info = { merchant_uid = fresh_uid("store"), notice_url = sb.url .. "/__sandbox/inbox" }
  for k, v in pairs(over or {}) do info[k] = v end
  local status, t = call("POST", API, helper.create_body(info))
  assert.equal(200, status, tostring(t))
  return t.shortenedUrl:match("([^/]+)$"), info.merchant_uid
end

-- POST /__sandbox/pay: status, decoded answer.
local function pay(id, extra)
  local body = { id = id }
  for k, v in pairs(extra or {}) do body[k] = v end
  return call("POST", "/__sandbox/pay", cjson.encode(body), { ["Content-Type"] = "application/json" })
end

local function payments_of_link(id)
  local out = {}
  for _, p in ipairs(assert(sb:admin("GET", "payments"))) do
    if p.link_id == id then out[#out + 1] = p end
  end
  return out
end

-- The inbox's notices for a merchant_uid (waits `wait` seconds for them).
local function notices_of(muid, wait)
  local deadline = socket.gettime() + (wait or 0)
  local found
  repeat
    found = {}
    for _, e in ipairs(assert(sb:admin("GET", "inbox"))) do
      local n = cjson.decode(e.body)
      if n.merchant_uid == muid then found[#found + 1] = n end
    end
    if #found > 0 then return found end
    socket.sleep(0.05)
  until socket.gettime() > deadline
  return found
end

local FULL = "sandbox payment store is full"

-- A connection to `target` and the pid of the nginx worker that took it
-- (asked over it, kept alive: a connection stays with its worker).
local function connect_worker(target)
  local c = socket.tcp()
  c:settimeout(10)
  assert(c:connect(target.host, target.port))
  assert(c:send("GET /__sandbox/stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"))
  repeat local line = assert(c:receive("*l")) until line == ""
  -- the admin API answers chunked (no Content-Length): one chunk, then the last
  local body = assert(c:receive(tonumber(assert(c:receive("*l")), 16)))
  repeat local line = assert(c:receive("*l")) until line == "0"
  assert(c:receive("*l"))
  return c, cjson.decode(body).pid
end

-- `n` connections to `target`, taken in turn by each of its first two
-- workers (nginx hands a connection to whichever worker accepts it: the
-- ones of a third worker, or over the turn, are closed).
local function spread_connections(target, n)
  local by_pid, pids, out = {}, {}, {}
  for _ = 1, 50 * n do
    if #out == n then break end
    local c, pid = connect_worker(target)
    if not by_pid[pid] and #pids < 2 then by_pid[pid] = {}; pids[#pids + 1] = pid end
    local q = by_pid[pid]
    if q and #q < math.ceil(n / 2) then q[#q + 1] = c else c:close() end
    if #pids == 2 then
      while #out < n and #by_pid[pids[#out % 2 + 1]] > 0 do
        out[#out + 1] = table.remove(by_pid[pids[#out % 2 + 1]], 1)
      end
    end
  end
  for _, q in pairs(by_pid) do
    for _, c in ipairs(q) do c:close() end
  end
  assert(#out == n, "could not reach two workers with " .. n .. " connections")
  return out
end

-- Posts every bridge-page form ({id =, body =}) to sandbox `target` before
-- it reads any answer; a short latency holds each request, so that they run
-- side by side in the workers. `spread`: the forms go in turn to two
-- workers (else to whichever accepts each connection). Returns
-- {HTTP status = count}.
local function all_at_once(target, forms, spread)
  assert(target:latency(50))
  local conns = spread and spread_connections(target, #forms) or {}
  for i, f in ipairs(forms) do
    local c = conns[i]
    if not c then
      c = socket.tcp()
      c:settimeout(10)
      assert(c:connect(target.host, target.port))
      conns[i] = c
    end
    assert(c:send("POST /" .. f.id .. " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
      .. "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " .. #f.body
      .. "\r\n\r\n" .. f.body))
  end
  local codes = {}
  for i = 1, #forms do
    local line = conns[i]:receive("*l")
    conns[i]:close()
    local code = tonumber(line and line:match("^HTTP/1%.%d (%d+)")) or "none"
    codes[code] = (codes[code] or 0) + 1
  end
  assert(target:latency(0))
  return codes
end

describe("sandbox payment store", function()
  lazy_setup(function() sb = helper.start() end)
  lazy_teardown(function() if sb then sb:stop() end end)
  before_each(function()
    assert(sb:reset())
    login()
  end)

  it("never evicts a payment: a full store refuses the next payment, nothing half-written", function()
    local a, muid_a = create()
    local status, paid = pay(a)
    assert.equal(200, status)
    -- declined payments of a link with ~1 MB of custom_data: each is a
    -- ~1 MB payment record (and the link stays payable), so 30 of them
    -- overflow a 16 MB store
    local big = ("x"):rep(1000 * 1000)
    local b = create{ custom_data = big }
    local refused
    for _ = 1, 30 do
      local st, t = pay(b, { decline = true })
      if st ~= 200 then
        refused = { status = st, answer = t }
        break
      end
    end
    -- the first payment and its paid mark are still there
    local st, t = call("GET", "/__sandbox/payments/" .. paid.imp_uid)
    assert.equal(200, st, cjson.encode(t))
    login()
    st, t = authed("GET", "/payments/" .. paid.imp_uid)
    assert.equal(200, st, cjson.encode(t))
    assert.equal("paid", t.response.status)
    st, t = authed("GET", "/payments/find/" .. muid_a)
    assert.equal(200, st)
    assert.equal(paid.imp_uid, t.response.imp_uid)
    st, t = pay(a)
    assert.equal(409, st, cjson.encode(t))
    assert.equal(1, #payments_of_link(a))
    local _, again = call("GET", "/__sandbox/links/" .. a)
    assert.equal(paid.imp_uid, again.paid_imp_uid)

    -- the store said it is full, and how to empty it
    assert.is_table(refused, "no payment was refused")
    assert.equal(507, refused.status)
    assert.matches(FULL, refused.answer.message, 1, true)
    assert.matches("/__sandbox/reset", refused.answer.message, 1, true)

    -- a real payment that does not fit leaves neither its link's paid mark
    -- nor its order's: both stay payable
    local d, muid_d = create{ custom_data = big }
    local before = #assert(sb:admin("GET", "payments"))
    st, t = pay(d)
    assert.equal(507, st, cjson.encode(t))
    assert.matches(FULL, t.message, 1, true)
    assert.equal(before, #assert(sb:admin("GET", "payments")))
    local _, link_d = call("GET", "/__sandbox/links/" .. d)
    assert.equal(cjson.null, link_d.paid_imp_uid)
    assert.same({}, notices_of(muid_d))
    -- the bridge page says the same
    local hst, html = sandbox.http(sb.host, sb.port, "POST", "/" .. d, "method=1",
      { ["Content-Type"] = "application/x-www-form-urlencoded" })
    assert.equal(507, hst)
    assert.truthy(html:find(FULL, 1, true), html)
    -- a small payment of the same order still fits: its order mark was rolled back
    local e = create{ merchant_uid = muid_d }
    st, t = pay(e)
    assert.equal(200, st, cjson.encode(t))
    assert.equal("paid", t.payment.status)

    -- and a reset empties the store
    assert(sb:reset())
    login()
    d = create{ custom_data = big }
    st, t = pay(d)
    assert.equal(200, st, cjson.encode(t))
  end)

  describe("one payment per merchant_uid", function()
    it("refuses to pay a second link of an order already paid: no payment, no webhook", function()
      local l1, muid = create()
      local l2 = create{ merchant_uid = muid }
      local st, first = pay(l1)
      assert.equal(200, st)
      assert.equal("paid", first.payment.status)
      local t
      st, t = pay(l2)
      assert.equal(409, st, cjson.encode(t))
      assert.matches("merchant_uid", t.message, 1, true)
      assert.matches(muid, t.message, 1, true)
      assert.equal(first.imp_uid, t.imp_uid)
      -- the bridge page refuses it too, with a page that says why
      local hst, html = sandbox.http(sb.host, sb.port, "POST", "/" .. l2, "method=1",
        { ["Content-Type"] = "application/x-www-form-urlencoded" })
      assert.equal(409, hst)
      assert.truthy(html:find('class="order-paid"', 1, true), html)
      -- so does a decline (no failed payment is recorded for a paid order)
      st = pay(l2, { decline = true })
      assert.equal(409, st)
      assert.same({}, payments_of_link(l2))
      local _, link2 = call("GET", "/__sandbox/links/" .. l2)
      assert.equal(cjson.null, link2.paid_imp_uid)
      -- one notice only: the first payment's
      socket.sleep(0.3)
      local n = notices_of(muid, 2)
      assert.equal(1, #n)
      assert.equal(first.imp_uid, n[1].imp_uid)
      local _, all = authed("GET", "/payments/findAll/" .. muid)
      assert.equal(1, all.response.total)
      -- a partial cancel leaves it paid: still refused
      st, t = call("POST", "/__sandbox/cancel", cjson.encode({ imp_uid = first.imp_uid, amount = 1000 }),
        { ["Content-Type"] = "application/json" })
      assert.equal(200, st, cjson.encode(t))
      assert.equal(409, (pay(l2)))
      -- once fully cancelled, the order may be paid again
      _, t = authed("POST", "/payments/cancel", { imp_uid = first.imp_uid })
      assert.equal(0, t.code, cjson.encode(t))
      assert.equal("cancelled", t.response.status)
      st, t = pay(l2)
      assert.equal(200, st, cjson.encode(t))
      assert.equal("paid", t.payment.status)
    end)

    it("a vbank awaiting its deposit holds the order; a failed payment does not", function()
      local vb, muid = create{ pay_methods = { { pg = "INIpayTest", pay_method = "vbank", label = "VA" } } }
      local card = create{ merchant_uid = muid }
      local st, ready = pay(vb)
      assert.equal(200, st)
      assert.equal("ready", ready.payment.status)
      local t
      st, t = pay(card)
      assert.equal(409, st)
      assert.matches("waiting for its deposit", t.message, 1, true)
      assert(sb:admin("POST", "deposit", { imp_uid = ready.imp_uid }))
      assert.equal(409, (pay(card)))

      local l1, muid2 = create()
      local l2 = create{ merchant_uid = muid2 }
      st, t = pay(l1, { decline = true })
      assert.equal(200, st)
      assert.equal("failed", t.payment.status)
      st, t = pay(l2)
      assert.equal(200, st, cjson.encode(t))
      assert.equal("paid", t.payment.status)
    end)

    it("of many links of one order paid at once, exactly one is paid", function()
      local workers = helper.start{ workers = 4 }
      local ok, err = pcall(function()
        local n = 24
        local muid = fresh_uid("race")
        local ids = {}
        for i = 1, n do
          local body = helper.create_body{ merchant_uid = muid }
          local st, raw = helper.request(workers, "POST", API, body)
          assert.equal(200, st, raw)
          ids[i] = cjson.decode(raw).shortenedUrl:match("([^/]+)$")
        end
        local forms = {}
        for i = 1, n do forms[i] = { id = ids[i], body = "method=1" } end
        assert.same({ [200] = 1, [409] = n - 1 }, (all_at_once(workers, forms)))
        local paid = 0
        for _, p in ipairs(assert(workers:admin("GET", "payments"))) do
          if p.merchant_uid == muid then paid = paid + 1 end
        end
        assert.equal(1, paid)
      end)
      workers:stop()
      assert(ok, err)
    end)
  end)

  describe("an order's payments (find, findAll by merchant_uid)", function()
    -- Two workers record payments of one order side by side. The order's
    -- index once was one JSON list read and written back without a lock:
    -- a worker that read it while the other was adding wrote it back
    -- without that entry, so the payment was found by imp_uid but missing
    -- from find/findAll by merchant_uid. The forms go to both workers in
    -- turn, in rounds on one growing order: with that list, 15 runs of
    -- this spec lost an entry by round 2 (one by round 2, the rest in round 1).
    it("lists every payment of an order recorded at once by two workers", function()
      local workers = helper.start{ workers = 2 }
      local ok, err = pcall(function()
        local function get(path, tok)
          local st, raw = helper.request(workers, "GET", path, nil, { Authorization = "Bearer " .. tok })
          assert(st, raw)
          return st, cjson.decode(raw)
        end
        local _, raw = helper.request(workers, "POST", "/users/getToken",
          cjson.encode({ imp_key = workers.imp_key, imp_secret = workers.imp_secret }))
        local tok = cjson.decode(raw).response.access_token
        local function link(muid)
          local st, r = helper.request(workers, "POST", API, helper.create_body{ merchant_uid = muid })
          assert.equal(200, st, r)
          return cjson.decode(r).shortenedUrl:match("([^/]+)$")
        end
        local n = 80
        local muid = fresh_uid("list")
        local declined = link(muid)
        local stored = 0   -- the order's payments before a round
        for _ = 1, 12 do
          local payable = link(muid)
          -- declines (failed payments: an order may have any number) and
          -- one approval, all at once; a decline that comes after the
          -- approval is refused (409: the order is paid) and records nothing
          local forms = {}
          for i = 1, n - 1 do forms[i] = { id = declined, body = "action=decline" } end
          table.insert(forms, math.floor(n / 2), { id = payable, body = "method=1" })
          local codes = all_at_once(workers, forms, true)
          assert.same(n, (codes[200] or 0) + (codes[409] or 0))
          -- what the store holds: a payment more for each 200 (admin list)
          local want, paid = {}, nil
          for _, p in ipairs(assert(workers:admin("GET", "payments"))) do
            if p.merchant_uid == muid then
              want[#want + 1] = p.imp_uid
              if p.status == "paid" then paid = p.imp_uid end
            end
          end
          assert.equal(stored + codes[200], #want)
          assert.is_string(paid)
          -- and findAll lists every one (pages of at most 100)
          local got, page = {}, 1
          repeat
            local st, t = get("/payments/findAll/" .. muid .. "?limit=100&page=" .. page, tok)
            assert.equal(200, st, cjson.encode(t))
            assert.equal(#want, t.response.total)
            for _, p in ipairs(t.response.list) do got[#got + 1] = p.imp_uid end
            page = t.response.next
          until page == 0
          table.sort(want)
          table.sort(got)
          assert.same(want, got)
          local st, t = get("/payments/find/" .. muid .. "/paid", tok)
          assert.equal(200, st, cjson.encode(t))
          assert.equal(paid, t.response.imp_uid)
          -- once the paid one is cancelled, a later payment is the order's
          -- newest (the index keeps the order of recording)
          assert(workers:admin("POST", "cancel", { imp_uid = paid }))
          local later = assert(workers:admin("POST", "pay", { id = declined, decline = true }))
          st, t = get("/payments?merchant_uid[]=" .. muid, tok)
          assert.equal(200, st, cjson.encode(t))
          assert.equal(later.imp_uid, t.response[1].imp_uid)
          stored = #want + 1
        end
      end)
      workers:stop()
      assert(ok, err)
    end)
  end)

  -- record_new writes the payment, its payi: entry, then the order's index:
  -- its counter muidn:<merchant_uid> (the order's first payment) and its
  -- entry muid:<merchant_uid>:<n>. When the index does not fit, the payment
  -- and its payi: entry are taken back, and pay() its marks. To make
  -- exactly that write fail, the store (128k here) is filled page by page:
  -- lua-nginx-module's slab allocator gives a value of more than 2 KB whole
  -- 4 KB pages, smaller ones slots in pages of their size class. Orders
  -- with 2100-character merchant_uids make each of their keys (uid:,
  -- muidn:, muid:<n>) and their payment records one page each; everything
  -- else this spec stores is a slot (payi:, paid:, pay_seq in the 128-byte
  -- class, amounts prepared for 60-character orders in the 256-byte one).
  describe("an order index that does not fit", function()
    it("refuses the payment with 507 and leaves nothing of it", function()
      local small = helper.start_small{ portone_payments = "128k" }
      local ok, err = pcall(function()
        local function req(method, path, body, headers)
          local st, raw = helper.request(small, method, path, body and cjson.encode(body), headers)
          assert(st, raw)
          local fine, t = pcall(cjson.decode, raw)
          return st, fine and t or raw
        end
        local function token_header()
          local _, r = req("POST", "/users/getToken",
            { imp_key = small.imp_key, imp_secret = small.imp_secret })
          return { Authorization = "Bearer " .. r.response.access_token }
        end
        local auth = token_header()
        local function link(info)
          info.notice_url = small.url .. "/__sandbox/inbox"
          local st, r = helper.request(small, "POST", API, helper.create_body(info))
          assert.equal(200, st, r)
          return cjson.decode(r).shortenedUrl:match("([^/]+)$")
        end
        local function admin_pay(id, decline)
          return req("POST", "/__sandbox/pay", { id = id, decline = decline })
        end
        local function listed() return #assert(small:admin("GET", "payments")) end
        local function log() return io.open(small.prefix .. "/error.log"):read("*a") end
        local mx, my = ("x"):rep(2100), ("y"):rep(2100)
        local x, y = link{ merchant_uid = mx }, link{ merchant_uid = my }

        -- X's order gets its counter with a declined payment
        local st, x1 = admin_pay(x, true)
        assert.equal(200, st, cjson.encode(x1))
        -- two paid orders hold a page each with their order mark (uid:)
        local held, t = {}
        for i = 1, 2 do
          st, t = admin_pay(link{ merchant_uid = ("r"):rep(2099) .. i })
          assert.equal(200, st, cjson.encode(t))
          held[i] = t.imp_uid
        end
        -- amounts prepared until the store refuses one: no free page left
        -- (nor a free slot of their class)
        local prepared = 0
        repeat
          st, t = req("POST", "/payments/prepare", { merchant_uid = ("p%059d"):format(prepared + 1),
                                                      amount = 1000 }, auth)
          if st == 200 then prepared = prepared + 1 end
        until st ~= 200 or prepared > 10000
        assert.equal(507, st, cjson.encode(t))
        assert.is_true(prepared > 16)
        -- cancelling the two in full frees their order marks: two pages
        for _, imp_uid in ipairs(held) do assert(small:admin("POST", "cancel", { imp_uid = imp_uid })) end
        local before = listed()
        local log_before = #log()

        -- paying X: paid: (slot), uid: (page), the payment (page), payi:
        -- (slot), then its order's second entry muid:<n> needs a third page;
        -- paying Y, a new order: the same, then its counter muidn: does.
        -- Each is refused again and again at that same write (the error log
        -- names it): a refused payment that kept anything (a payi: slot, a
        -- page) would soon fail at an earlier write, the 128-byte class
        -- having 32 slots a page
        local want = {}
        for _, c in ipairs({ { x, "the order's index entry (muid:<n>)" },
                             { y, "the order's payment counter (muidn:)" } }) do
          for _ = 1, 40 do
            st, t = admin_pay(c[1])
            assert.equal(507, st, cjson.encode(t))
            assert.matches(FULL, t.message, 1, true)
            want[#want + 1] = c[2]
          end
        end
        local got = {}
        for what in log():sub(log_before + 1):gmatch("not recorded: (.-) did not fit") do
          got[#got + 1] = what
        end
        assert.same(want, got)

        -- nothing of either is left: no payment listed, no paid mark, no
        -- order mark, no index entry, no webhook
        assert.equal(before, listed())
        for _, id in ipairs({ x, y }) do
          local _, l = req("GET", "/__sandbox/links/" .. id)
          assert.equal(cjson.null, l.paid_imp_uid)
        end
        st, t = req("GET", "/payments/findAll/" .. mx, nil, auth)
        assert.equal(200, st, cjson.encode(t))
        assert.equal(1, t.response.total)
        assert.equal(x1.imp_uid, t.response.list[1].imp_uid)
        st = req("GET", "/payments/find/" .. mx .. "/paid", nil, auth)
        assert.equal(404, st)
        st = req("GET", "/payments/find/" .. my, nil, auth)
        assert.equal(404, st)
        for _, e in ipairs(assert(small:admin("GET", "inbox"))) do
          assert.is_nil(e.body:find(mx, 1, true))
          assert.is_nil(e.body:find(my, 1, true))
        end
        -- and the two pages they took are free again: two declined
        -- payments of a page each fit, a third does not
        local z = link{ merchant_uid = fresh_uid("z"), custom_data = ("c"):rep(2500) }
        assert.equal(200, (admin_pay(z, true)))
        assert.equal(200, (admin_pay(z, true)))
        assert.equal(507, (admin_pay(z, true)))

        -- after a reset (which takes the links too) both orders pay
        assert(small:reset())
        x, y = link{ merchant_uid = mx }, link{ merchant_uid = my }
        for _, id in ipairs({ x, y }) do
          st, t = admin_pay(id)
          assert.equal(200, st, cjson.encode(t))
          assert.equal("paid", t.payment.status)
        end
        auth = token_header()   -- the reset took the tokens too
        st, t = req("GET", "/payments/find/" .. my .. "/paid", nil, auth)
        assert.equal(200, st, cjson.encode(t))
      end)
      small:stop()
      assert(ok, err)
    end)
  end)
end)
