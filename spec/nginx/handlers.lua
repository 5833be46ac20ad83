--- Handlers that run inside the test nginx (spec/nginx/harness.lua).
-- They drive portone.link on cosockets and answer with JSON, so that the
-- specs (running under lua5.4 or luajit as a separate host) can check the
-- results over HTTP.
-- luacheck: globals ngx
local cjson = require "cjson.safe"
local env = require "plink_testenv"

local M = {}

local function json_out(status, v)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.print(cjson.encode(v))
end

local function read_json()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    local file = ngx.req.get_body_file()
    if file then
      local f = io.open(file); body = f:read("*a"); f:close()
    end
  end
  return body and cjson.decode(body) or {}
end

--- An error object or transport info as plain data (plus its tostring).
local function plain(e)
  if type(e) ~= "table" then return e end
  local out = {}
  for k, v in pairs(e) do
    if type(v) ~= "function" and type(v) ~= "userdata" then out[k] = v end
  end
  out.text = tostring(e)
  return out
end
M.plain = plain

--- A valid create request; `uid` makes the merchant_uid unique.
function M.sample_request(uid)
  return {
    title = "Order " .. uid, user_code = "imp12345678", amount = 10000,
    merchant_uid = "order-" .. uid, name = "T-shirt", currency = "KRW",
    buyer_tel = "010-1234-5678",
    pay_methods = { { pg = "html5_inicis", pay_method = "card", label = "Card" } },
    expired_at = ngx.time() + 3600,
  }
end

-- The client, if client.lua has landed; else nil, why.
local function new_client(opts)
  local ok, link = pcall(require, "portone.link")
  if not ok then return nil, link end
  local cok, client, err = pcall(link.new, opts)
  if not cok then return nil, client end
  return client, err
end
M.new_client = new_client

-- Calls the client the way a user would, in whatever phase this runs.
-- Returns the error text (or "no error").
function M.try_client(phase)
  local client, err = new_client { base_url = env.sandbox_url or "http://127.0.0.1:9", retries = 2 }
  if not client then return "client unavailable: " .. tostring(err) end
  local ok, res, cerr = pcall(client.create, client, M.sample_request(phase .. "-" .. ngx.now()))
  if not ok then return "raised: " .. tostring(res) end
  if res then return "no error" end
  return tostring(cerr)
end

local function remember(key, value)
  ngx.shared.plink_test:set(key, value)
end

function M.init()
  remember("phase:init", M.try_client("init"))
end

function M.init_worker()
  remember("phase:init_worker", M.try_client("init_worker"))
end

function M.log_phase()
  remember("phase:log", M.try_client("log"))
end

function M.header_filter_phase()
  remember("phase:header_filter", M.try_client("header_filter"))
end

local routes = {}

routes["/t/ping"] = function()
  ngx.say("pong")
end

routes["/t/rest/log/result"] = function()
  ngx.say(ngx.shared.plink_test:get("rest_log") or "null")
end

routes["/t/phase"] = function()
  local name = ngx.var.arg_name
  ngx.say(ngx.shared.plink_test:get("phase:" .. name) or "(nothing recorded)")
end

routes["/t/available"] = function()
  local ok, why, inside = require("portone.link.transport.ngx").available()
  json_out(200, { ok = ok, why = why, inside = inside, phase = ngx.get_phase() })
end

-- Raw transport: {method, url | urls = [...], headers, body, opts, n, drain}
--   -> {results = [...], connects, reuses}
routes["/t/transport"] = function()
  local a = read_json()
  local mod = require "portone.link.transport.ngx"
  local t = mod.new(a.opts or {})
  local urls = a.urls or {}
  if a.drain then mod.drain_pool(a.url or urls[1]) end
  local results = {}
  for i = 1, a.n or #urls > 0 and #urls or 1 do
    local url = urls[i] or a.url
    local status, body, headers, sends = t:request(a.method or "GET", url, a.headers or {}, a.body,
      a.max_sends)
    if status then
      results[i] = { status = status, body = body, headers = headers, sends = sends }
    else
      results[i] = { info = plain(body) }
    end
    if a.pause_ms then ngx.sleep(a.pause_ms / 1000) end
  end
  t:close()
  json_out(200, { results = results, connects = t.connects, reuses = t.reuses })
end

routes["/t/slowdns/transport"] = routes["/t/transport"]

-- A request on a closed transport: {url} -> {info}
routes["/t/transport/closed"] = function()
  local a = read_json()
  local t = require("portone.link.transport.ngx").new({})
  t:close()
  local status, info = t:request("GET", a.url, {})
  json_out(200, { status = status, info = plain(info) })
end

-- Client calls: {opts, calls = [{op = "create"|"deactivate", arg = ...}]}
routes["/t/client"] = function()
  local a = read_json()
  local opts = a.opts or {}
  opts.base_url = opts.base_url or env.sandbox_url
  if opts.transport == nil then opts.transport = "ngx" end
  if opts.transport == "auto" then opts.transport = nil end
  local client, err = new_client(opts)
  if not client then return json_out(500, { error = tostring(err) }) end
  local out = {}
  for i, c in ipairs(a.calls or {}) do
    local arg = c.arg
    if c.op == "create" and arg == nil then arg = M.sample_request(c.uid or (ngx.now() .. "-" .. i)) end
    local ok, res, cerr = pcall(client[c.op], client, arg)
    if not ok then
      out[i] = { raised = tostring(res) }
    elseif res ~= nil then
      out[i] = { ok = res }
    else
      out[i] = { err = plain(cerr) }
    end
  end
  json_out(200, { results = out })
end

-- Client proxy: the spec's shared cases (spec/helpers/cases.lua) run in the
-- host with a stand-in client whose every call executes here, on a real
-- client over cosockets. Clients live per worker (worker_processes 1).
local proxied, next_id = {}, 0
local current_token

-- {opts, token_fn = bool, fresh = bool} -> {id}
routes["/t/proxy/new"] = function()
  local a = read_json()
  local opts = a.opts or {}
  if opts.transport == nil then opts.transport = "ngx" end
  if opts.transport == "auto" then opts.transport = nil end
  if a.token_fn then opts.token = function() return current_token end end
  if a.fresh and opts.base_url then
    -- A new curl client starts without connections; the cosocket pool is
    -- per worker and outlives clients, so empty it for this origin.
    require("portone.link.transport.ngx").drain_pool(opts.base_url)
  end
  local ok, client = pcall(require("portone.link").new, opts)
  if not ok then return json_out(200, { raised = tostring(client) }) end
  next_id = next_id + 1
  proxied[next_id] = client
  json_out(200, { id = next_id })
end

-- {id, op, args = [...], token} -> {ok = result} | {err = plain error} | {raised = msg}
routes["/t/proxy/call"] = function()
  local a = read_json()
  local client = proxied[a.id]
  if not client then return json_out(404, { error = "no client " .. tostring(a.id) }) end
  current_token = a.token
  local args = a.args or {}
  local ok, res, err = pcall(client[a.op], client, args[1], args[2])
  current_token = nil
  if not ok then return json_out(200, { raised = tostring(res) }) end
  if res ~= nil then return json_out(200, { ok = res }) end
  json_out(200, { err = plain(err) })
end

-- link.rest inside nginx (transport auto: the cosocket one). Clients live per
-- worker under a name, as a handler's would, so that several requests can
-- share one token cache.
local rest_clients = {}
local rest_clock = {} -- name -> seconds the client's test clock is ahead

local function run_rest_call(rest, c, name)
  local ok, res, err
  if c.op == "advance" then
    -- moves the test clock of a client made with test_clock
    rest_clock[name] = (rest_clock[name] or 0) + c.seconds
    return { ok = rest_clock[name] }
  elseif c.op == "abandon" then
    -- a light thread starts a token refresh and is killed while getToken is
    -- in flight (as a request's threads are when it ends or is aborted)
    local th = assert(ngx.thread.spawn(rest.token, rest))
    ngx.sleep(c.after or 0.02)
    local killed, kerr = ngx.thread.kill(th)
    return { ok = { killed = killed or false, kill_error = kerr, refreshing = rest.refreshing } }
  elseif c.op == "payment" then
    ok, res, err = pcall(rest.payment, rest, c.imp_uid)
  elseif c.op == "verify" then
    ok, res, err = pcall(rest.verify, rest, c.notice, c.expect)
  elseif c.op == "cancel" then
    ok, res, err = pcall(rest.cancel, rest, c.req)
  elseif c.op == "token" then
    ok, res, err = pcall(rest.token, rest)
    if ok and res then res = "(a token)" end -- never shown
  else
    return { raised = "unknown op " .. tostring(c.op) }
  end
  if not ok then return { raised = tostring(res) } end
  if res ~= nil then return { ok = res } end
  return { err = plain(err) }
end

-- {name = "c1", fresh = bool, opts = {imp_key =, imp_secret =, base_url =,
--  ...}, calls = [{op = "payment", imp_uid =} | {op = "verify", notice =,
--  expect =} | {op = "cancel", req =} | {op = "token"} | {op = "abandon"} |
--  {op = "advance", seconds =}],
--  concurrent = bool, test_clock = bool (a clock "advance" moves)}
--   -> {results = [{ok =} | {err =} | {raised =}], transport = "ngx"|...,
--       waited = n (light threads that waited on the semaphore, last run)}
-- With `concurrent`, every call runs in its own ngx.thread at once.
routes["/t/rest"] = function()
  local a = read_json()
  local name = a.name or "default"
  local rest = rest_clients[name]
  if a.fresh or not rest then
    local opts = a.opts or {}
    opts.base_url = opts.base_url or env.sandbox_url
    if a.test_clock then
      rest_clock[name] = 0
      opts.clock = function() return ngx.now() + rest_clock[name] end
    end
    local ok, r = pcall(require("portone.link").rest.new, opts)
    if not ok then return json_out(200, { raised = tostring(r) }) end
    rest = r
    rest_clients[name] = rest
  end
  local calls, results = a.calls or {}, {}
  if a.concurrent then
    local threads = {}
    for i, c in ipairs(calls) do
      threads[i] = assert(ngx.thread.spawn(run_rest_call, rest, c, name))
    end
    for i, th in ipairs(threads) do
      local ok, r = ngx.thread.wait(th)
      results[i] = ok and r or { raised = tostring(r) }
    end
  else
    for i, c in ipairs(calls) do results[i] = run_rest_call(rest, c, name) end
  end
  local t = rest.transport
  json_out(200, {
    results = results,
    transport = t.keepalive_timeout and t.pool_size and "ngx" or "other",
    refreshing = rest.refreshing, waiters = rest.waiters,
  })
end

-- /t/rest/log?name=: a timer starts a token refresh on the worker's rest
-- client `name` (a slow getToken keeps it in flight); the request's log
-- phase then asks that client for a token, where no light thread may wait,
-- and keeps what it got under "rest_log" in the shared dict.
function M.rest_log_content()
  local rest = assert(rest_clients[ngx.var.arg_name], "no rest client")
  ngx.shared.plink_test:delete("rest_log")
  assert(ngx.timer.at(0, function() rest:token() end))
  ngx.sleep(0.1)
  ngx.say(rest.refreshing and "refreshing" or "not refreshing")
end

function M.rest_log_phase()
  local rest = rest_clients[ngx.var.arg_name]
  local ok, tok, err = pcall(rest.token, rest)
  ngx.shared.plink_test:set("rest_log", cjson.encode(
    ok and { token = tok and "(a token)" or nil, err = plain(err) } or { raised = tostring(tok) }))
end

-- The same calls as N separate requests to /t/rest (sent at once over
-- cosockets to this very nginx), all on the worker's client `name`:
-- {name, calls} -> {results = [...]} (each /t/rest answer's first result)
routes["/t/rest/fanout"] = function()
  local a = read_json()
  local url = "http://127.0.0.1:" .. ngx.var.server_port .. "/t/rest"
  local function one(c)
    local t = require("portone.link.transport.ngx").new { timeout = 30 }
    local status, body = t:request("POST", url, { "Content-Type: application/json" },
      cjson.encode { name = a.name, calls = { c } })
    if status ~= 200 then return { raised = "HTTP " .. tostring(status) .. " " .. tostring(body) } end
    return cjson.decode(body).results[1]
  end
  local threads, results = {}, {}
  for i, c in ipairs(a.calls or {}) do threads[i] = assert(ngx.thread.spawn(one, c)) end
  for i, th in ipairs(threads) do
    local ok, r = ngx.thread.wait(th)
    results[i] = ok and r or { raised = tostring(r) }
  end
  json_out(200, { results = results })
end

-- examples/webhook/handler.lua's order store (lua_shared_dict orders):
-- {merchant_uid, amount} sets an order up; ?merchant_uid= reads it back
-- (&imp_uid=: with the claim on that payment's notice).
routes["/t/orders/set"] = function()
  local a = read_json()
  assert(ngx.shared.orders:set("amount:" .. a.merchant_uid, a.amount))
  json_out(200, { ok = true })
end

routes["/t/orders/get"] = function()
  local uid = ngx.var.arg_merchant_uid
  local d = ngx.shared.orders
  local imp_uid = ngx.var.arg_imp_uid
  json_out(200, { amount = d:get("amount:" .. uid), paid = d:get("paid:" .. uid),
                  claim = imp_uid and imp_uid ~= "" and d:get("claim:" .. imp_uid) or nil })
end

-- Fills the worker's pending timers (lua_max_pending_timers) with timers
-- that fire after `delay` seconds and do nothing: {delay} -> {n, err}
routes["/t/timers/fill"] = function()
  local a = read_json()
  local n, err = 0, nil
  for _ = 1, 100000 do
    local ok, terr = ngx.timer.at(a.delay or 2, function() end)
    if not ok then err = terr; break end
    n = n + 1
  end
  json_out(200, { n = n, err = err })
end

routes["/t/timers/pending"] = function()
  json_out(200, { pending = ngx.timer.pending_count() })
end

function M.dispatch()
  local route = routes[ngx.var.uri]
  if not route then return json_out(404, { error = "no route " .. ngx.var.uri }) end
  local ok, err = xpcall(route, debug.traceback)
  if not ok then
    ngx.log(ngx.ERR, err)
    json_out(500, { error = tostring(err) })
  end
end

-- Fake upstream for raw transport tests. The answer depends on the path;
-- /raw/* answers through the raw request socket with hand-made bytes.
local RAW = {
  close = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nread until close",
  http10 = "HTTP/1.0 200 OK\r\n\r\nold server",
  continue = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n"
    .. "X-Multi: a\r\nX-Multi: b\r\n\r\nok",
  chunked_ext = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    .. "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n",
  bad_chunk = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
  garbage = "SMTP ready\r\n\r\n",
  truncated = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
  reset = "",
  -- over the 256 KB the header block may take (libcurl's cap, PLINK_HTTP_HEADER_MAX)
  many_headers = "HTTP/1.1 200 OK\r\n" .. ("X-A: b\r\n"):rep(40000) .. "Content-Length: 0\r\n\r\n",
  -- what libcurl reads: 150 header lines, 200 KB of them, a Content-Length
  -- repeated with one value, chunk sizes with leading zeros, chunks ended
  -- by a bare LF
  lines_150 = "HTTP/1.1 200 OK\r\n" .. ("X-A: b\r\n"):rep(150) .. "Content-Length: 2\r\n\r\nok",
  kb_200 = "HTTP/1.1 200 OK\r\n" .. ("X-Pad: " .. ("p"):rep(1015) .. "\r\n"):rep(200)
    .. "Content-Length: 2\r\n\r\nok",
  dup_length = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
  chunk_zeros = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    .. "0000000005\r\nhello\r\n00000000000\r\n\r\n",
  chunk_lf = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
  -- 120 KB in one line: over libcurl's 100 KB line limit
  long_line = "HTTP/1.1 200 OK\r\nX-Long: " .. ("l"):rep(120 * 1024) .. "\r\nContent-Length: 2\r\n\r\nok",
  -- two values: which one frames the body is unknown (refused: RFC 9112 6.3;
  -- libcurl 7.88 takes the last)
  two_lengths = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
}

function M.upstream()
  local uri = ngx.var.uri
  local kind = uri:match("^/raw/(.+)$")
  if kind then
    ngx.req.read_body()
    local sock = assert(ngx.req.socket(true))
    if RAW[kind] ~= "" then sock:send(RAW[kind]) end
    return ngx.exit(444) -- closes the connection
  end
  ngx.req.read_body()
  local args = ngx.req.get_uri_args()
  if args.sleep_ms then ngx.sleep(tonumber(args.sleep_ms) / 1000) end
  if uri == "/chunked" then
    for i = 1, tonumber(args.n or 3) do
      ngx.print(("chunk%d;"):format(i))
      ngx.flush(true)
    end
    return
  end
  if uri == "/trickle" then
    -- n body bytes, one every ms milliseconds: each read is short, the
    -- whole answer long (head=1: the header block trickles too)
    local n, ms = tonumber(args.n or 40), tonumber(args.ms or 100)
    if args.head then
      local sock = assert(ngx.req.socket(true))
      local head = "HTTP/1.1 200 OK\r\nX-Slow: " .. ("x"):rep(n) .. "\r\nContent-Length: 2\r\n\r\nok"
      for i = 1, #head do
        if not sock:send(head:sub(i, i)) then return ngx.exit(444) end
        ngx.sleep(ms / 1000)
      end
      return ngx.exit(444)
    end
    ngx.header["Content-Length"] = n
    ngx.send_headers()
    ngx.flush(true)
    for _ = 1, n do
      ngx.sleep(ms / 1000)
      ngx.print("x")
      if not ngx.flush(true) then return end
    end
    return
  end
  if uri == "/big" then
    local n = tonumber(args.n or 1000)
    local body = ("x"):rep(n)
    if args.chunked then
      ngx.print(body:sub(1, math.floor(n / 2))); ngx.flush(true)
      ngx.print(body:sub(math.floor(n / 2) + 1))
    else
      ngx.header["Content-Length"] = n
      ngx.print(body)
    end
    return
  end
  if uri == "/status" then
    ngx.status = tonumber(args.code or 200)
    if args.close then ngx.header["Connection"] = "close" end
  end
  -- echo: what arrived, and which connection carried it
  local body = cjson.encode {
    method = ngx.req.get_method(), uri = ngx.var.request_uri,
    headers = ngx.req.get_headers(), body = ngx.req.get_body_data() or "",
    connection = tonumber(ngx.var.connection),
    connection_requests = tonumber(ngx.var.connection_requests),
    scheme = ngx.var.scheme,
  }
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Content-Length"] = #body
  ngx.print(body)
end

-- Benchmark: one link per request through the sandbox.
local bench_clients = {}
local bench_n = 0
function M.bench(kind)
  local client = bench_clients[kind]
  if not client then
    local err
    client, err = new_client { base_url = env.sandbox_url, transport = kind, retries = 0,
      timeout = 10 }
    if not client then
      ngx.status = 500
      return ngx.say("client: ", tostring(err))
    end
    bench_clients[kind] = client
  end
  bench_n = bench_n + 1
  local res, err = client:create(M.sample_request(ngx.worker.pid() .. "-" .. kind .. "-" .. bench_n))
  if not res then
    ngx.status = 502
    return ngx.say(tostring(err))
  end
  ngx.say(res.url)
end

return M
