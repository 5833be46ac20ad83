-- examples/webhook/plain.lua and pay_and_verify.lua do what
-- examples/webhook/README.md and the webhooks guide say, against the
-- sandbox (handler.lua is run inside nginx by openresty_rest_spec):
--  * pay_and_verify(sb, res, opts) pays a link, waits for its webhook at the
--    sandbox inbox, parses and verifies it; it says when no webhook comes,
--    and a tampered amount fails as a mismatch;
--  * plain.handle(body, content_type, orders, rest) answers 200 and fulfils
--    a paid order once (copies, a form body), 200 without fulfilling a
--    mismatch, a non-paid notice or an unknown order, 500 when the lookup
--    fails, 400 for a body that is no notice;
--  * plain.lua run as a script (the README's command line) serves the
--    webhook: a paid link's delivery is answered 200 and the order is paid.
local link = require "portone.link"
local cases = require "helpers.cases"
local helper = require "helpers.sandbox"
local sandbox = require "portone.sandbox"
local socket = require "socket"

local KEY, SECRET = "ex-imp-key", "ex-imp-secret-0123456789"

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

describe("examples/webhook against the sandbox", function()
  local sb, client, rest

  lazy_setup(function()
    sb = helper.start{ imp_key = KEY, imp_secret = SECRET }
    client = link.new{ base_url = sb.url, transport = "curl" }
    rest = link.rest.new{ imp_key = KEY, imp_secret = SECRET, base_url = sb.url, transport = "curl" }
  end)
  lazy_teardown(function()
    if client then client:close() end
    if rest then rest:close() end
    if sb then sb:stop() end
  end)
  before_each(function()
    assert(sb:admin("POST", "webhook", { mode = "normal" }))
  end)

  -- A link whose webhook goes to `notice_url` (the sandbox inbox by default).
  local function new_link(over)
    local req = cases.request(cases.merge({ notice_url = sb.url .. "/__sandbox/inbox" }, over))
    return assert(client:create(req)), req
  end

  -- The webhook bodies the inbox holds for imp_uid, waiting for n of them.
  local function inbox_for(imp_uid, n)
    local deadline, found = socket.gettime() + 5
    repeat
      found = {}
      for _, e in ipairs(assert(sb:admin("GET", "inbox"))) do
        if e.body:find(imp_uid, 1, true) then found[#found + 1] = e end
      end
      if #found >= n then break end
      socket.sleep(0.02)
    until socket.gettime() > deadline
    return found
  end

  describe("pay_and_verify.lua", function()
    local pay_and_verify = dofile("examples/webhook/pay_and_verify.lua")

    it("pays the link, waits for its webhook, parses and verifies it (the README's sandbox run)", function()
      local res, req = new_link()
      local r, msg = pay_and_verify(sb, res, { amount = req.amount, merchant_uid = req.merchant_uid,
                                               imp_key = KEY, imp_secret = SECRET })
      assert.is_table(r, msg)
      assert.matches("^imp_%d+$", r.imp_uid)
      assert.equal("paid", r.payment.status)
      assert.equal(req.amount, r.payment.amount)
      assert.equal(r.imp_uid, r.notice.imp_uid)
      assert.equal(req.merchant_uid, r.notice.merchant_uid)
      assert.equal("application/json", r.webhook.content_type)
    end)

    it("says so when no webhook is coming, and fails a tampered amount as a mismatch", function()
      assert(sb:admin("POST", "webhook", { mode = "drop" }))
      local res, req = new_link()
      local opts = { amount = req.amount, merchant_uid = req.merchant_uid,
                     imp_key = KEY, imp_secret = SECRET }
      local r, msg = pay_and_verify(sb, res, opts)
      assert.is_nil(r)
      assert.truthy(msg:find("no webhook is coming (drop)", 1, true), msg)

      assert(sb:admin("POST", "webhook", { mode = "normal" }))
      assert(sb:admin("POST", "tamper", { next = true, amount = 100 }))
      res, req = new_link()
      opts.merchant_uid = req.merchant_uid
      local verr
      r, msg, verr = pay_and_verify(sb, res, opts)
      assert.is_nil(r)
      assert.truthy(msg:find("^verify: "), msg)
      assert.equal("mismatch", verr.kind)
      assert.equal("amount", verr.field)
    end)
  end)

  describe("plain.lua's handle", function()
    -- not run as a script here: arg[0] is busted's
    local plain = dofile("examples/webhook/plain.lua")

    -- The order store handle expects: find and mark_paid (true the first time).
    local function store(amounts)
      local paid, marks = {}, { n = 0 }
      return {
        find = function(uid) return amounts[uid] and { merchant_uid = uid, amount = amounts[uid] } end,
        mark_paid = function(uid, imp_uid)
          marks.n = marks.n + 1
          if paid[uid] then return false end
          paid[uid] = imp_uid
          return true
        end,
      }, paid, marks
    end

    it("fulfils a paid order once: copies and a form body are answered 200", function()
      local res, req = new_link()
      local p = assert(sb:admin("POST", "pay", { id = res.id }))
      local hook = assert(inbox_for(p.imp_uid, 1)[1])
      local orders, paid = store({ [req.merchant_uid] = req.amount })
      assert.same({ 200, "OK" }, { plain.handle(hook.body, hook.content_type, orders, rest) })
      assert.equal(p.imp_uid, paid[req.merchant_uid])
      -- a copy, and the same notice as a form: 200, still the one mark
      assert.same({ 200, "OK" }, { plain.handle(hook.body, hook.content_type, orders, rest) })
      local form = ("imp_uid=%s&merchant_uid=%s&status=paid"):format(p.imp_uid, req.merchant_uid)
      assert.same({ 200, "OK" }, { plain.handle(form, "application/x-www-form-urlencoded", orders, rest) })
      assert.equal(p.imp_uid, paid[req.merchant_uid])
    end)

    it("never fulfils a tampered amount, a non-paid notice or an unknown order (200)", function()
      local res, req = new_link()
      local p = assert(sb:admin("POST", "pay", { id = res.id }))
      assert(sb:admin("POST", "tamper", { imp_uid = p.imp_uid, amount = 100 }))
      local body = ('{"imp_uid":"%s","merchant_uid":"%s","status":"paid"}'):format(p.imp_uid,
        req.merchant_uid)
      local orders, paid = store({ [req.merchant_uid] = req.amount })
      assert.same({ 200, "mismatch" }, { plain.handle(body, "application/json", orders, rest) })
      local ready = body:gsub('"paid"', '"ready"')
      assert.same({ 200, "ignored ready" }, { plain.handle(ready, "application/json", orders, rest) })
      assert.same({ 200, "unknown order" }, { plain.handle(body, "application/json", store({}), rest) })
      assert.is_nil(paid[req.merchant_uid])
    end)

    it("answers 500 when the lookup fails (PortOne sends it again) and 400 for no notice", function()
      local res, req = new_link()
      local p = assert(sb:admin("POST", "pay", { id = res.id }))
      local body = ('{"imp_uid":"%s","merchant_uid":"%s","status":"paid"}'):format(p.imp_uid,
        req.merchant_uid)
      local orders, paid = store({ [req.merchant_uid] = req.amount })
      -- nothing listens on the port: the token fetch fails before any lookup
      local port = sandbox.free_port()
      local down = link.rest.new{ imp_key = KEY, imp_secret = SECRET, transport = "curl",
                                  base_url = "http://127.0.0.1:" .. port }
      local status, text = plain.handle(body, "application/json", orders, down)
      down:close()
      assert.equal(500, status)
      assert.truthy(text:find("send again", 1, true))
      assert.is_nil(paid[req.merchant_uid])
      status, text = plain.handle("not json", "application/json", orders, rest)
      assert.equal(400, status)
      assert.truthy(text:find("^bad notice: "), text)
      -- the lookup works again: the order is fulfilled
      assert.same({ 200, "OK" }, { plain.handle(body, "application/json", orders, rest) })
      assert.equal(p.imp_uid, paid[req.merchant_uid])
    end)
  end)

  describe("plain.lua run as a script #lua54", function()
    local dir, pidf, errf, port

    lazy_setup(function()
      dir = io.popen("mktemp -d \"${TMPDIR:-/tmp}/portone-plain.XXXXXXXX\""):read("*l")
      pidf, errf = dir .. "/pid", dir .. "/err"
      port = sandbox.free_port()
      -- the README's command line, with the sandbox as REST V1
      local inner = "echo $$ > " .. quote(pidf) .. "; exec env PORTONE_IMP_KEY=" .. quote(KEY)
        .. " PORTONE_IMP_SECRET=" .. quote(SECRET) .. " PORTONE_REST_BASE_URL=" .. quote(sb.url)
        .. " " .. (os.getenv("PLINK_LUA") or "lua5.4") .. " examples/webhook/plain.lua " .. port
        .. " < /dev/null > /dev/null 2> " .. quote(errf)
      os.execute("sh -c " .. quote(inner) .. " > /dev/null 2>&1 &")
      local deadline = socket.gettime() + 10
      repeat
        local c = socket.tcp()
        c:settimeout(0.2)
        local ok = c:connect("127.0.0.1", port)
        c:close()
        if ok then return end
        socket.sleep(0.05)
      until socket.gettime() > deadline
      local f = io.open(errf)
      error("plain.lua did not listen: " .. (f and f:read("*a") or ""))
    end)
    lazy_teardown(function()
      local f = pidf and io.open(pidf)
      local pid = f and f:read("*l")
      if f then f:close() end
      if pid and pid:match("^%d+$") then os.execute("kill " .. pid .. " 2>/dev/null") end
      if dir then os.execute("rm -rf " .. quote(dir)) end
    end)

    it("answers the sandbox's webhook 200 and marks its one order (order-1, 10000) paid", function()
      local res = new_link{ merchant_uid = "order-1", amount = 10000,
                            notice_url = ("http://127.0.0.1:%d/portone/webhook"):format(port) }
      local p = assert(sb:admin("POST", "pay", { id = res.id }))
      local deadline, hooks = socket.gettime() + 10
      repeat
        hooks = assert(sb:admin("GET", "payments/" .. p.imp_uid)).webhooks
        if hooks and hooks[1] then break end
        socket.sleep(0.05)
      until socket.gettime() > deadline
      assert.equal(200, hooks and hooks[1] and hooks[1].status)
      local f = assert(io.open(errf))
      local log = f:read("*a")
      f:close()
      assert.truthy(log:find("order order-1 paid (" .. p.imp_uid .. ")", 1, true), log)
    end)
  end)
end)
