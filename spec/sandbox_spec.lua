-- The sandbox that plays PortOne: lifecycle, the link API, the page, the
-- admin API and every fault, observed with raw luasocket requests.
local socket = require "socket"
local cjson = require "cjson"
local sandbox = require "portone.sandbox"
local helper = require "helpers.sandbox"

local API = helper.API

local function sh(cmd)
  local a = os.execute("env -u LD_PRELOAD " .. cmd)
  return a == true or a == 0
end

local function capture(cmd)
  local p = io.popen("env -u LD_PRELOAD " .. cmd)
  local out = p:read("*a")
  p:close()
  return out
end

local function exists(path)
  return sh("test -e '" .. path .. "'")
end

-- A raw HTTP/1.1 exchange on `c` (a connected luasocket); returns a table
-- {status, headers, body, err, partial} and never raises.
local function exchange(c, method, path, body, headers)
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: 127.0.0.1" }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  c:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""))
  local r = { headers = {} }
  local line, err = c:receive("*l")
  if not line then r.err = err; return r end
  r.status = tonumber(line:match("^HTTP/1%.%d (%d+)"))
  while true do
    line, err = c:receive("*l")
    if not line then r.err = err; return r end
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.*)$")
    r.headers[k:lower()] = v
  end
  if method == "HEAD" then return r end
  local len = tonumber(r.headers["content-length"])
  if len then
    local data, partial
    data, err, partial = c:receive(len)
    r.body, r.err, r.partial = data, err, partial
  elseif r.headers["transfer-encoding"] then
    local parts = {}
    while true do
      local size = c:receive("*l")
      local n = size and tonumber(size, 16)
      if not n then r.err = "bad chunk"; break end
      if n == 0 then c:receive("*l"); break end
      parts[#parts + 1] = c:receive(n)
      c:receive("*l")
    end
    r.body = table.concat(parts)
  end
  return r
end

local function connect(sb, timeout)
  local c = socket.tcp()
  c:settimeout(timeout or 5)
  assert(c:connect(sb.host, sb.port))
  return c
end

local function request(sb, method, path, body, headers, timeout)
  local c = connect(sb, timeout)
  headers = headers or {}
  if body and not headers["Content-Type"] then
    headers["Content-Type"] = "application/json;charset=UTF-8"
  end
  local r = exchange(c, method, path, body, headers)
  c:close()
  return r
end

local function create(sb, over, expired_at)
  return request(sb, "POST", API, helper.create_body(over, expired_at))
end

local function create_id(sb, over, expired_at)
  local r = create(sb, over, expired_at)
  assert(r.status == 200, "create failed: " .. tostring(r.status) .. " " .. tostring(r.body))
  return cjson.decode(r.body).shortenedUrl:match("/(%x+)$")
end

describe("sandbox", function()
  local sb

  setup(function() sb = helper.start() end)
  teardown(function() if sb then sb:stop() end end)
  before_each(function() assert(sb:reset()) end)

  describe("lifecycle", function()
    it("starts on a free port and stop() frees it and removes the prefix", function()
      local other = helper.start()
      assert.matches("^http://127%.0%.0%.1:%d+$", other.url)
      assert.are_not.equal(sb.port, other.port)
      assert.is_true(exists(other.prefix .. "/nginx.conf"))
      assert.equal(200, (request(other, "GET", "/__sandbox/stats")).status)
      other:stop()
      assert.is_false(exists(other.prefix))
      local s = (socket.tcp4 or socket.tcp)() -- tcp() would defer the socket: no setoption
      assert(s:setoption("reuseaddr", true))
      assert.truthy(s:bind("127.0.0.1", other.port))
      s:close()
      assert.is_true(other:stop()) -- twice is fine
    end)

    it("reports nginx's error when it cannot start", function()
      -- (a port in use would do too, but nginx retries bind() for 2.5 s)
      local bad = os.tmpname()
      local f = io.open(bad, "w"); f:write("not a certificate\n"); f:close()
      finally(function() os.remove(bad) end)
      local sb2, err = sandbox.start{ tls = { cert = bad, key = bad } }
      assert.is_nil(sb2)
      assert.matches("nginx failed to start", err)
      assert.matches("emerg", err)
    end)

    it("writes every temp path inside its prefix", function()
      local conf = io.open(sb.conf):read("*a")
      for path in conf:gmatch("_temp_path (%S+);") do
        assert.equal(sb.prefix, path:sub(1, #sb.prefix))
      end
      assert.matches("worker_processes 1;", conf, 1, true)
      assert.matches("access_log off;", conf, 1, true)
    end)
  end)

  describe("create", function()
    it("answers a shortenedUrl on the sandbox's own host and port", function()
      local r = create(sb)
      assert.equal(200, r.status)
      local url = cjson.decode(r.body).shortenedUrl
      assert.matches("^http://127%.0%.0%.1:" .. sb.port .. "/%x%x%x%x%x%x%x%x$", url)
      assert.equal(1, sb:stats().creates)
    end)

    it("keeps creating when its links store is full: the least recently used links make room", function()
      -- 24 links of ~1 MB each overflow the 16 MB store
      local big = ("x"):rep(1000 * 1000)
      local ids = {}
      for i = 1, 24 do
        local r = create(sb, { merchant_uid = "full-" .. i, custom_data = big })
        assert.equal(200, r.status, r.body)
        ids[i] = cjson.decode(r.body).shortenedUrl:match("[^/]+$")
      end
      assert.equal(404, (request(sb, "GET", "/__sandbox/links/" .. ids[1])).status)
      assert.equal(200, (request(sb, "GET", "/__sandbox/links/" .. ids[24])).status)
      assert.equal(24, sb:stats().creates)
    end)

    it("gives distinct ids", function()
      local seen = {}
      for _ = 1, 20 do
        local id = create_id(sb)
        assert.is_nil(seen[id])
        seen[id] = true
      end
    end)

    local function bad(body, pattern, headers)
      local r = request(sb, "POST", API, body, headers)
      assert.equal(400, r.status)
      local e = cjson.decode(r.body)
      assert.equal(-1, e.code)
      assert.matches(pattern, e.message)
    end

    it("refuses payment_info that is not a string", function()
      bad('{"payment_info":{"title":"x"},"expired_at":' .. (os.time() + 60) .. "}",
        "payment_info must be a string")
    end)

    it("refuses payment_info that is not JSON", function()
      bad('{"payment_info":"not json","expired_at":' .. (os.time() + 60) .. "}", "JSON object")
    end)

    it("refuses a missing required field", function()
      for _, field in ipairs({ "title", "user_code", "amount", "merchant_uid", "name",
                               "currency", "buyer_tel", "pay_methods" }) do
        bad(helper.create_body({ [field] = cjson.null }), "payment_info%." .. field .. " is required")
      end
    end)

    it("refuses expired_at in the past, missing, or not an integer", function()
      bad(helper.create_body(nil, os.time() - 10), "in the future")
      bad('{"payment_info":' .. cjson.encode(cjson.encode({})) .. "}", "is required")
      local info = cjson.encode(cjson.decode(helper.create_body()).payment_info)
      bad('{"payment_info":' .. info .. "}", "expired_at is required")
      bad('{"payment_info":' .. info .. ',"expired_at":' .. (os.time() + 60) .. ".5}", "integer")
      bad('{"payment_info":' .. info .. ',"expired_at":"' .. (os.time() + 60) .. '"}', "integer")
    end)

    it("refuses a body that is not a JSON object, or not sent as JSON", function()
      bad("[1,2]", "JSON object")
      bad("nope", "JSON object")
      bad(helper.create_body(), "Content%-Type", { ["Content-Type"] = "text/plain" })
    end)

    it("refuses a non-positive or fractional amount", function()
      bad(helper.create_body({ amount = 0 }), "amount")
      bad(helper.create_body({ amount = 10.5 }), "amount")
    end)
  end)

  describe("deactivate", function()
    it("answers {} and {} again on a repeat", function()
      local id = create_id(sb)
      local r = request(sb, "PUT", API .. "/" .. id)
      assert.equal(200, r.status)
      assert.equal("{}", r.body)
      r = request(sb, "PUT", API .. "/" .. id)
      assert.equal(200, r.status)
      assert.equal("{}", r.body)
      assert.equal(2, sb:stats().deactivates)
    end)

    it("answers 404 for an unknown id", function()
      local r = request(sb, "PUT", API .. "/deadbeef")
      assert.equal(404, r.status)
      assert.equal(-1, cjson.decode(r.body).code)
    end)
  end)

  describe("link page", function()
    it("shows title, name, amount and labels, HTML-escaped", function()
      local id = create_id(sb, {
        title = "<script>alert(1)</script> 결제", name = "A & B", amount = 1234567,
        pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "카드 \"결제\"" },
                        { pg = "kakaopay", pay_method = "kakaopay", label = "Kakao<Pay>" } },
      })
      local r = request(sb, "GET", "/" .. id)
      assert.equal(200, r.status)
      assert.matches("text/html; charset=utf-8", r.headers["content-type"], 1, true)
      assert.matches("&lt;script&gt;alert(1)&lt;/script&gt; 결제", r.body, 1, true)
      assert.is_nil(r.body:find("<script>", 1, true))
      assert.matches("A &amp; B", r.body, 1, true)
      assert.matches("1,234,567 KRW", r.body, 1, true)
      assert.matches("카드 &quot;결제&quot;", r.body, 1, true)
      assert.matches("Kakao&lt;Pay&gt;", r.body, 1, true)
    end)

    it("answers 410 after deactivation", function()
      local id = create_id(sb)
      assert.equal(200, (request(sb, "PUT", API .. "/" .. id)).status)
      local r = request(sb, "GET", "/" .. id)
      assert.equal(410, r.status)
      assert.matches("[Ee]xpired", r.body)
    end)

    it("answers 410 after expired_at (admin clock)", function()
      local id = create_id(sb, nil, os.time() + 60)
      assert.equal(200, (request(sb, "GET", "/" .. id)).status)
      assert(sb:clock(61))
      assert.equal(410, (request(sb, "GET", "/" .. id)).status)
      assert(sb:clock(0))
      assert.equal(200, (request(sb, "GET", "/" .. id)).status)
    end)

    it("answers 404 for an unknown id", function()
      assert.equal(404, (request(sb, "GET", "/0badc0de")).status)
    end)
  end)

  describe("faults", function()
    it("answers a queued status with Retry-After, once", function()
      assert(sb:faults("create", { { status = 429, retry_after = 7 }, { status = 503 } }))
      local r = create(sb)
      assert.equal(429, r.status)
      assert.equal("7", r.headers["retry-after"])
      assert.equal(-1, cjson.decode(r.body).code)
      r = create(sb)
      assert.equal(503, r.status)
      assert.equal(200, create(sb).status)
      assert.equal(0, sb:stats().creates - 1)
    end)

    it("uses a custom body and status 500/502", function()
      assert(sb:faults("any", { { status = 500, body = "oops" }, { status = 502 } }))
      local r = create(sb)
      assert.equal(500, r.status)
      assert.equal("oops", r.body)
      assert.equal(502, (request(sb, "PUT", API .. "/x")).status)
    end)

    it("matches by class: create faults leave deactivates alone", function()
      assert(sb:faults("create", { { status = 500 } }))
      assert.equal(404, (request(sb, "PUT", API .. "/x")).status)
      assert.equal(500, create(sb).status)
    end)

    it("resets the connection with no answer", function()
      assert(sb:faults("create", { { reset = true } }))
      local r = create(sb)
      assert.is_nil(r.status)
      assert.equal("closed", r.err)
      assert.equal(0, sb:stats().creates)
    end)

    it("delays the answer", function()
      assert(sb:faults("create", { { delay_ms = 300 } }))
      local t0 = socket.gettime()
      assert.equal(200, create(sb).status)
      assert.is_true(socket.gettime() - t0 >= 0.28)
    end)

    it("trickles the body a byte at a time after the headers", function()
      assert(sb:faults("create", { { trickle_ms = 20 } }))
      local body = helper.create_body()
      local c = connect(sb)
      c:send("POST " .. API .. " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        .. "Content-Length: " .. #body .. "\r\n\r\n" .. body)
      local line, n = c:receive("*l"), nil
      while line ~= "" do
        line = c:receive("*l")
        n = n or tonumber(line:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)"))
      end
      -- right after the headers at most a byte is there, not the body
      c:settimeout(0)
      local _, why, part = c:receive(n)
      assert.equal("timeout", why)
      assert.is_true(#part < n, "the whole body came at once")
      c:settimeout(10)                      -- only stops a read that never ends
      local answer = part .. assert(c:receive(n - #part))
      c:close()
      assert.truthy(cjson.decode(answer).shortenedUrl)
      assert.equal(1, sb:stats().creates)
    end)

    it("sends the body slowly after the headers", function()
      assert(sb:faults("create", { { slow_body_ms = 1000 } }))
      local c = connect(sb)
      local t0 = socket.gettime()
      c:send("POST " .. API .. " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        .. "Content-Length: " .. #helper.create_body() .. "\r\n\r\n" .. helper.create_body())
      local line = c:receive("*l")
      local t_head = socket.gettime() - t0
      local r = { headers = {} }
      while line ~= "" do
        line = c:receive("*l")
        local k, v = line:match("^([^:]+):%s*(.*)$")
        if k then r.headers[k:lower()] = v end
      end
      local body = c:receive(tonumber(r.headers["content-length"]))
      local t_body = socket.gettime() - t0
      c:close()
      assert.is_true(t_head < 0.7, "head after " .. t_head)   -- not after the 1 s pause
      assert.is_true(t_body >= 0.95, "body after " .. t_body)
      assert.truthy(cjson.decode(body).shortenedUrl)
    end)

    it("truncates the body (Content-Length larger than what is sent)", function()
      assert(sb:faults("create", { { truncate = true } }))
      local r = create(sb)
      assert.equal(200, r.status)
      assert.equal("closed", r.err)
      assert.is_true(#r.partial < tonumber(r.headers["content-length"]))
    end)

    it("answers garbage", function()
      assert(sb:faults("create", { { garbage = true } }))
      local r = create(sb)
      assert.equal(200, r.status)
      assert.is_nil((require "cjson.safe").decode(r.body))
    end)

    it("answers an oversized body of exactly n bytes", function()
      assert(sb:faults("create", { { oversize = 200000 } }))
      local r = create(sb)
      assert.equal(200, r.status)
      assert.equal(200000, #r.body)
      assert.matches('^{"shortenedUrl"', r.body)
    end)

    it("redirects", function()
      assert(sb:faults("deactivate", { { redirect = "http://127.0.0.1:9/elsewhere" } }))
      local r = request(sb, "PUT", API .. "/abc")
      assert.equal(302, r.status)
      assert.equal("http://127.0.0.1:9/elsewhere", r.headers.location)
    end)

    it("takes faults in order and reset clears them", function()
      assert(sb:faults("any", { { status = 500 }, { status = 502 }, { status = 503 } }))
      assert.equal(500, create(sb).status)
      assert(sb:reset())
      assert.equal(200, create(sb).status)
    end)

    it("refuses an unknown match class", function()
      local ok, err = sb:faults("everything", { { status = 500 } })
      assert.is_nil(ok)
      assert.matches("400", err)
    end)

    it("refuses a fault that is not an object or has a bad status, queuing none of the list", function()
      for _, bad in ipairs({ { 1 }, { "reset" }, { { status = "abc" } }, { { status = 99 } },
                             { { status = 503 }, { status = 1e9 } }, { { delay_ms = "soon" } } }) do
        local ok, err = sb:faults("any", bad)
        assert.is_nil(ok)
        assert.matches("400", err)
      end
      assert.equal(0, assert(sb:admin("GET", "faults")).any)
      assert.equal(200, create(sb).status)
    end)

    -- A test's queued fault must neither vanish (the test would pass or
    -- fail for the wrong reason) nor be half-queued. lua-nginx-module's
    -- lpush never evicts: on a full dict it answers "no memory".
    it("a full faults dict refuses a whole list with 507 and keeps every fault queued before", function()
      local small = helper.start_small{ portone_faults = "32k" }
      local ok, err = pcall(function()
        local function counts() return assert(small:admin("GET", "faults")) end
        -- 3 KB faults, queued one call at a time until one does not fit
        local pad, queued, refused = ("x"):rep(3000), 0, nil
        repeat
          local body = ("fault %d%s"):format(queued + 1, pad)
          local r, e = small:faults("create", { { status = 503, body = body } })
          if r then
            queued = queued + 1
            assert.equal(queued, r.queued)
          else
            refused = e
          end
        until refused or queued > 100
        assert.matches("HTTP 507", refused, 1, true)
        assert.is_true(queued >= 2)
        assert(small:faults("page", { { status = 500 } }))
        -- a list whose small faults would fit but its last one does not:
        -- none of it is queued, and the answer says why
        local status, body = sandbox.http(small.host, small.admin_port, "POST", "/__sandbox/faults",
          cjson.encode({ match = "create", faults = { { status = 500 }, { status = 502 },
                                                      { status = 504, body = ("y"):rep(20000) } } }),
          { ["Content-Type"] = "application/json" })
        assert.equal(507, status, body)
        local message = cjson.decode(body).message
        assert.matches("admin: the faults dict is full", message, 1, true)
        assert.matches("none of this call's faults was queued (3)", message, 1, true)
        assert.matches("POST /__sandbox/reset", message, 1, true)
        assert.equal(queued, counts().create)
        assert.equal(1, counts().page)
        -- every fault queued before is still there, taken oldest first
        for i = 1, queued do
          local r = create(small)
          assert.equal(503, r.status)
          assert.equal("fault " .. i .. pad, r.body)
        end
        assert.equal(200, create(small).status)
        -- and their room is free again
        assert(small:faults("create", { { status = 500 }, { status = 502 }, { status = 504, body = pad } }))
        assert.equal(3, counts().create)
      end)
      small:stop()
      assert(ok, err)
    end)
  end)

  describe("admin", function()
    it("applies a global latency", function()
      assert(sb:latency(150))
      local t0 = socket.gettime()
      assert.equal(200, create(sb).status)
      assert.is_true(socket.gettime() - t0 >= 0.14)
      assert.equal(150, sb:stats().latency_ms)
      assert(sb:latency(0))
    end)

    it("counts requests and connections (keep-alive counts once)", function()
      local c = connect(sb)
      local h = { ["Content-Type"] = "application/json" }
      assert.equal(200, exchange(c, "POST", API, helper.create_body(), h).status)
      assert.equal(200, exchange(c, "POST", API, helper.create_body(), h).status)
      c:close()
      assert.equal(200, create(sb).status)
      local s = sb:stats()
      assert.equal(3, s.requests)
      assert.equal(2, s.connections)
      assert.equal(3, s.creates)
    end)

    it("logs what it received", function()
      local body = helper.create_body()
      request(sb, "POST", API, body, { ["Content-Type"] = "application/json", Authorization = "Bearer t" })
      request(sb, "PUT", API .. "/abc")
      local log = sb:requests()
      assert.equal(2, #log)
      assert.equal("POST", log[1].method)
      assert.equal(API, log[1].uri)
      assert.equal(body, log[1].body)
      assert.equal("Bearer t", log[1].headers.authorization)
      assert.equal("PUT", log[2].method)
      assert.equal(API .. "/abc", log[2].uri)
    end)

    it("keeps the last 100 requests", function()
      for i = 1, 105 do request(sb, "GET", "/nope" .. i) end
      local log = sb:requests()
      assert.equal(100, #log)
      assert.equal("/nope6", log[1].uri)
      assert.equal("/nope105", log[100].uri)
    end)

    it("answers [] for an empty request log and 404 for unknown admin paths", function()
      assert.same({}, sb:requests())
      local ok, err = sb:admin("GET", "nope")
      assert.is_nil(ok)
      assert.matches("404", err)
    end)

    -- The settings once shared the stats dict with the counters, tokens and
    -- webhook logs, which are written with set: when that dict is full, a
    -- set evicts the least recently used records, and a setting no request
    -- had read for a while went with them (the latency: admin calls never
    -- read it), the sandbox going on without it. Here the stats dict is
    -- shrunk to 128 KB (the generated config with that one size changed),
    -- so that ten payments with a 30 KB notice_url fill it: the last
    -- webhook of each, kept for redeliver, holds the URL.
    it("keeps its settings when the stats dict fills up", function()
      local small = helper.start_small{ portone_stats = "128k" }
      local ok, err = pcall(function()
        local url = small.url .. "/__sandbox/inbox?" .. ("x"):rep(30000)
        local ids = {}
        for i = 1, 10 do ids[i] = create_id(small, { merchant_uid = "fill-" .. i, notice_url = url }) end
        assert(small:latency(1))
        assert(small:clock(1234))
        assert(small:admin("POST", "webhook", { mode = "drop", format = "form" }))
        assert(small:admin("POST", "test_mode", { on = true }))
        local first
        for i = 1, 10 do
          local r = assert(small:admin("POST", "pay", { id = ids[i] }))
          assert.equal("drop", r.webhook)
          first = first or r.imp_uid
        end
        -- the stats dict did fill: the first payment's delivery log and
        -- last webhook were evicted
        assert.is_nil(assert(small:admin("GET", "payments/" .. first)).webhooks)
        assert.is_nil((small:admin("POST", "redeliver", { imp_uid = first })))
        -- and every setting is still there
        assert.equal(1, small:stats().latency_ms)
        assert.equal(1234, assert(small:admin("GET", "clock")).offset)
        assert.same({ mode = "drop", format = "form" }, assert(small:admin("GET", "webhook")))
        local later = assert(small:admin("POST", "pay", { id = create_id(small) }))
        assert.is_true(later.payment.test)
      end)
      small:stop()
      assert(ok, err)
    end)
  end)

  describe("tls", function()
    it("serves https with the given certificate; shortenedUrl uses https", function()
      local cert = helper.tls_cert()
      local tsb = helper.start{ tls = cert }
      finally(function() tsb:stop() end)
      assert.matches("^https://127%.0%.0%.1:%d+$", tsb.url)
      local out = capture("curl -sS --max-time 5 --cacert '" .. cert.cert
        .. "' -H 'Content-Type: application/json' --data-binary '" .. helper.create_body()
        .. "' " .. tsb.url .. API .. " 2>&1")
      assert.matches("^https://127%.0%.0%.1:" .. tsb.port .. "/%x+$", cjson.decode(out).shortenedUrl)
      -- without the CA, curl refuses the self-signed certificate
      assert.is_false(sh("curl -s --max-time 5 -o /dev/null " .. tsb.url .. "/x"))
      -- the admin API answers plain http on its own port
      assert.equal(1, tsb:stats().creates)
    end)
  end)

  describe("command line", function()
    local cli = require "portone.cli.sandbox"

    it("parses its options", function()
      local o = assert(cli.parse({ "--host", "127.0.0.1", "--port=8080", "--latency", "20" }))
      assert.equal(8080, o.port)
      assert.equal(20, o.latency)
      assert.is_nil(cli.parse({ "--port", "x" }))
      assert.is_nil(cli.parse({ "--tls-cert", "a" }))
      assert.is_nil(cli.parse({ "--bogus" }))
      assert.is_true(cli.parse({ "--help" }).help)
    end)

    -- Runs `portone-link sandbox` in its own session, waits for the banner,
    -- then returns its pid, port and prefix.
    local function launch()
      -- the interpreter running the specs: LUA_CPATH names its build
      local lua = os.getenv("PLINK_LUA") or (jit and "luajit") -- luacheck: ignore 113
        or (_VERSION == "Lua 5.1" and "lua5.1") or "lua5.4"
      local out = os.tmpname()
      sh("sh -c 'setsid " .. lua .. " bin/portone-link sandbox --port 0 >" .. out
        .. " 2>&1 & echo $! >" .. out .. ".pid'")
      local pid = tonumber(io.open(out .. ".pid"):read("*a"))
      local banner = ""
      local deadline = socket.gettime() + 10
      while socket.gettime() < deadline and not banner:find("listening") do
        socket.sleep(0.05)
        banner = io.open(out):read("*a")
      end
      local port = tonumber(banner:match("127%.0%.0%.1:(%d+)"))
      local prefix = capture("ps -o args= --ppid " .. pid):match(
        "(/%S+/portone%-sandbox%.%w+)/run%.sh")
      os.remove(out .. ".pid")
      return pid, port, prefix, out
    end

    local function gone(port, prefix)
      local deadline = socket.gettime() + 5
      while socket.gettime() < deadline do
        local c = socket.tcp()
        c:settimeout(0.2)
        local up = c:connect("127.0.0.1", port)
        c:close()
        if not up and not exists(prefix) then return true end
        socket.sleep(0.05)
      end
      return false
    end

    it("runs in the foreground and stops on SIGINT to its process group", function()
      local pid, port, prefix, out = launch()
      finally(function()
        os.remove(out)
        sh("kill -TERM " .. pid .. " 2>/dev/null") -- the sandbox's watchdog then stops nginx
      end)
      assert.truthy(port, "no banner: " .. io.open(out):read("*a"))
      assert.truthy(prefix)
      assert.equal(200, (request({ host = "127.0.0.1", port = port }, "GET", "/__sandbox/stats")).status)
      sh("kill -INT -- -" .. pid)
      assert.is_true(gone(port, prefix))
      -- the command writes its last line after the wrapper is done
      local text
      local deadline = socket.gettime() + 5
      repeat
        text = io.open(out):read("*a")
        if text:find("sandbox stopped", 1, true) then break end
        socket.sleep(0.05)
      until socket.gettime() > deadline
      assert.matches("sandbox stopped", text)
    end)

    it("stops and cleans up when only the launcher gets SIGTERM", function()
      local pid, port, prefix, out = launch()
      finally(function()
        os.remove(out)
        sh("kill -TERM " .. pid .. " 2>/dev/null") -- the sandbox's watchdog then stops nginx
      end)
      assert.truthy(port, "no banner: " .. io.open(out):read("*a"))
      assert.truthy(prefix)
      sh("kill -TERM " .. pid)
      assert.is_true(gone(port, prefix))
    end)
  end)
end)
