--- The PortOne side of the sandbox: request handlers that run inside nginx
-- (lua-nginx-module, LuaJIT). `portone.sandbox` writes the nginx config that
-- calls `init`, `init_worker` and `handle`; nothing here runs in a plain Lua.
--
-- State lives in three lua_shared_dicts so that it survives across requests
-- (and would be shared by several workers, though the sandbox runs one):
--   portone_links   id -> JSON {title, name, amount, currency, labels, expired_at, active}
--   portone_faults  "q:<match>" lists of JSON faults (lpush / rpop: FIFO, atomic)
--   portone_stats   counters, latency, clock offset, the request log ring
--
-- Faults are described in docs/internals.md ("Sandbox admin API").
local cjson = require "cjson.safe"
-- luacheck: globals ngx  (handlers assign ngx.status and ngx.header fields)

local M = {}

local links = ngx.shared.portone_links
local faults = ngx.shared.portone_faults
local stats = ngx.shared.portone_stats

local REQUEST_LOG = 100
local API = "/api/supplements/v1/link/payment"
local API_ID = "^" .. API:gsub("%p", "%%%0") .. "/([^/]+)$"
local REQUIRED = { "title", "user_code", "amount", "merchant_uid", "name",
                   "currency", "buyer_tel", "pay_methods" }
local MATCHES = { create = true, deactivate = true, page = true, token = true, payment = true,
                  any = true }

-- Set by init() from the generated config (scheme, host, port, base, prefix,
-- imp_key, imp_secret, latency_ms, watch_pid); other sandbox modules read it.
local conf = { scheme = "http", host = "127.0.0.1", port = 0 }
M.conf = conf

--- Called from init_by_lua with the settings start() chose.
function M.init(c)
  for k, v in pairs(c) do conf[k] = v end
  local host = conf.host
  if host:find(":", 1, true) then host = "[" .. host .. "]" end
  conf.base = conf.scheme .. "://" .. host .. ":" .. conf.port
  if conf.latency_ms then stats:set("latency_ms", tonumber(conf.latency_ms) or 0) end
end

-- ---------------------------------------------------------------------------
-- small helpers

--- The sandbox clock: unix seconds plus the admin clock offset.
local function now()
  ngx.update_time()
  return ngx.time() + (stats:get("clock_offset") or 0)
end
M.now = now

local function json_reply(status, tbl)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json;charset=UTF-8"
  ngx.print(cjson.encode(tbl))
  return ngx.exit(ngx.OK)
end

local function api_error(status, message)
  return json_reply(status, { code = -1, message = message })
end

-- Link ids: 8 hex digits from a per-worker generator that init_worker seeds
-- from /dev/urandom (opening the device per request showed in benchmarks).
local function random_id()
  return ("%04x%04x"):format(math.random(0, 0xffff), math.random(0, 0xffff))
end

local function seed()
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(4)
  if f then f:close() end
  local n = ngx.now() * 1000 + ngx.worker.pid()
  if b and #b == 4 then n = n + b:byte(1) * 2^24 + b:byte(2) * 2^16 + b:byte(3) * 2^8 + b:byte(4) end
  math.randomseed(n % 2^31)
end

local function is_integer(v)
  return type(v) == "number" and v == v and v == math.floor(v)
    and v > -2^53 and v < 2^53
end

-- The request body, also when nginx buffered it to a file (shared with the
-- other sandbox modules).
local function read_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    local file = ngx.req.get_body_file()
    if file then
      local f = io.open(file, "rb")
      if f then body = f:read("*a"); f:close() end
    end
  end
  return body
end

M.read_body = read_body

-- ---------------------------------------------------------------------------
-- the request log and counters

-- Every API request is logged, so the log stores cheap raw parts (one
-- string.format, no JSON) and request_log() does the parsing when asked.
local function record(body)
  stats:incr("requests", 1, 0)
  local nreq = ngx.var.connection_requests
  if nreq == "1" then stats:incr("connections", 1, 0) end
  local n = stats:incr("log_seq", 1, 0)
  stats:set("log:" .. n, ("%s\n%s\n%s\n%d\n%s%s"):format(ngx.req.get_method(), ngx.var.request_uri,
    nreq, body and 1 or 0, ngx.req.raw_header(true), body or ""))
  stats:delete("log:" .. (n - REQUEST_LOG))
end

-- "Name: value" lines -> lower-case names; a repeated header gives a list,
-- as ngx.req.get_headers() does.
local function parse_headers(raw)
  local h = {}
  for name, value in raw:gmatch("([^:\r\n]+):[ \t]*([^\r\n]*)") do
    name = name:lower()
    local old = h[name]
    if old == nil then h[name] = value
    elseif type(old) == "table" then old[#old + 1] = value
    else h[name] = { old, value } end
  end
  return h
end

local function log_entry(raw)
  local method, uri, nreq, has_body, rest = raw:match("^([^\n]*)\n([^\n]*)\n([^\n]*)\n(%d)\n(.*)$")
  local head_end = rest:find("\r\n\r\n", 1, true) or #rest
  local head, body = rest:sub(1, head_end + 1), rest:sub(head_end + 4)
  return { method = method, uri = uri, headers = parse_headers(head),
           body = has_body == "1" and body or cjson.null, connection_requests = tonumber(nreq) }
end

local function request_log()
  local n = stats:get("log_seq") or 0
  local out = {}
  for i = math.max(1, n - REQUEST_LOG + 1), n do
    local e = stats:get("log:" .. i)
    if e then out[#out + 1] = log_entry(e) end
  end
  return out
end

-- ---------------------------------------------------------------------------
-- faults

local function take_fault(class)
  for _, match in ipairs({ class, "any" }) do
    local v = faults:rpop("q:" .. match)
    if v then return cjson.decode(v) end
  end
  return nil
end

-- Sends `body` (the normal answer, already built) the way `fault` asks.
-- Returns true when the fault took over the whole answer.
local function early_fault(f)
  if f.reset then
    return ngx.exit(444) -- nginx closes the connection without a response
  end
  if f.status then
    ngx.status = tonumber(f.status)
    if f.retry_after ~= nil then ngx.header["Retry-After"] = tostring(f.retry_after) end
    if f.body then
      ngx.header["Content-Type"] = f.content_type or "application/json;charset=UTF-8"
      ngx.print(f.body)
    else
      ngx.header["Content-Type"] = "application/json;charset=UTF-8"
      ngx.print(cjson.encode({ code = -1, message = "sandbox fault: HTTP " .. f.status }))
    end
    return ngx.exit(ngx.OK)
  end
  if f.garbage then
    ngx.status = 200
    ngx.header["Content-Type"] = "text/html"
    ngx.print("<html><body>502 Bad Gateway? no: garbage from the sandbox</body></html>")
    return ngx.exit(ngx.OK)
  end
  if f.oversize then
    local n = math.max(tonumber(f.oversize) or 0, 40)
    local head = '{"shortenedUrl":"' .. conf.base .. '/ffffffff","pad":"'
    local tail = '"}'
    local pad = n - #head - #tail
    if pad < 0 then head, pad = '{"pad":"', n - 8 - #tail end
    ngx.status = 200
    ngx.header["Content-Type"] = "application/json;charset=UTF-8"
    ngx.header["Content-Length"] = #head + pad + #tail
    ngx.print(head)
    local chunk = string.rep("x", 65536)
    while pad > 0 do
      local k = math.min(pad, #chunk)
      ngx.print(k == #chunk and chunk or chunk:sub(1, k))
      pad = pad - k
    end
    ngx.print(tail)
    return ngx.exit(ngx.OK)
  end
  if f.redirect then
    ngx.status = 302
    ngx.header["Location"] = tostring(f.redirect)
    ngx.header["Content-Type"] = "application/json;charset=UTF-8"
    ngx.print('{"code":-1,"message":"moved"}')
    return ngx.exit(ngx.OK)
  end
  return false
end

-- ---------------------------------------------------------------------------
-- the API

-- Each handler returns status, content_type, body (strings), so that the
-- fault layer can deliver the answer slowly or cut it short.
local function JSON(status, tbl)
  return status, "application/json;charset=UTF-8", cjson.encode(tbl)
end

local function fail(message) return JSON(400, { code = -1, message = message }) end

local function create(body)
  local ctype = ngx.var.content_type or ""
  if not ctype:lower():find("^application/json") then
    return fail("Content-Type must be application/json, got '" .. ctype .. "'")
  end
  local req = body and cjson.decode(body)
  if type(req) ~= "table" or req[1] ~= nil then return fail("body is not a JSON object") end
  if type(req.payment_info) ~= "string" then
    return fail("payment_info must be a string holding JSON, got " .. type(req.payment_info))
  end
  local info = cjson.decode(req.payment_info)
  if type(info) ~= "table" then return fail("payment_info does not hold a JSON object") end
  for _, k in ipairs(REQUIRED) do
    if info[k] == nil or info[k] == cjson.null then
      return fail("payment_info." .. k .. " is required")
    end
  end
  if info.expired_at ~= nil then return fail("expired_at belongs outside payment_info") end
  if not is_integer(info.amount) or info.amount <= 0 then
    return fail("payment_info.amount must be a positive integer")
  end
  if type(info.pay_methods) ~= "table" or #info.pay_methods == 0 then
    return fail("payment_info.pay_methods must be a non-empty array")
  end
  for i, pm in ipairs(info.pay_methods) do
    if type(pm) ~= "table" or type(pm.pay_method) ~= "string" then
      return fail("payment_info.pay_methods[" .. i .. "].pay_method is required")
    end
  end
  local exp = req.expired_at
  if exp == nil then return fail("expired_at is required") end
  if not is_integer(exp) then return fail("expired_at must be an integer (unix seconds)") end
  if exp <= now() then return fail("expired_at must be in the future") end

  local labels = {}
  for _, pm in ipairs(info.pay_methods) do labels[#labels + 1] = pm.label or pm.pay_method end
  local rec = cjson.encode({
    title = tostring(info.title), name = tostring(info.name), amount = info.amount,
    currency = tostring(info.currency), labels = labels, expired_at = exp,
    merchant_uid = tostring(info.merchant_uid), active = true,
    info = info, -- the whole payment_info, for the bridge page and payments
  })
  for _ = 1, 10 do
    local id = random_id()
    if links:add(id, rec) then
      stats:incr("creates", 1, 0)
      return JSON(200, { shortenedUrl = conf.base .. "/" .. id })
    end
  end
  return JSON(500, { code = -1, message = "sandbox: no free id (links dict full?)" })
end

local function deactivate(id)
  local raw = links:get(id)
  if not raw then return JSON(404, { code = -1, message = "no such link: " .. id }) end
  local rec = cjson.decode(raw)
  rec.active = false
  links:set(id, cjson.encode(rec))
  stats:incr("deactivates", 1, 0)
  return JSON(200, {})
end

-- The customer's pages (GET/POST /{id}) live in portone.sandbox.bridge and the
-- REST V1 endpoints (getToken, payments) in portone.sandbox.rest_v1.

local function route(method, uri)
  if uri == API then
    if method == "POST" then return "create", create end
    return "create", function() return JSON(405, { code = -1, message = "method not allowed" }) end
  end
  local id = uri:match(API_ID)
  if id then
    if method == "PUT" then return "deactivate", function() return deactivate(id) end end
    return "deactivate", function() return JSON(405, { code = -1, message = "method not allowed" }) end
  end
  local class, handler = require("portone.sandbox.rest_v1").route(method, uri)
  if class then return class, handler end
  class, handler = require("portone.sandbox.bridge").route(method, uri)
  if class then return class, handler end
  return "other", function() return JSON(404, { code = -1, message = "not found: " .. uri }) end
end

-- Delivers an answer, honouring the delivery faults (delay already done).
local function deliver(f, status, ctype, body)
  if f and f.reset_after then
    -- The request was handled (a create made its link) but the answer never
    -- leaves: the connection closes first, as when a keep-alive connection
    -- dies under a request. The client cannot know the link exists.
    return ngx.exit(444)
  end
  ngx.status = status
  ngx.header["Content-Type"] = ctype
  if f and f.truncate then
    -- Promise more than we send, then close: the client sees a short read.
    local cut = math.max(0, math.floor(#body / 2))
    ngx.header["Content-Length"] = #body + 64
    ngx.print(body:sub(1, cut))
    ngx.flush(true)
    return ngx.exit(444)
  end
  if f and f.slow_body_ms then
    ngx.header["Content-Length"] = #body
    local cut = math.floor(#body / 2)
    ngx.send_headers()
    ngx.print(body:sub(1, cut))
    ngx.flush(true)
    ngx.sleep(tonumber(f.slow_body_ms) / 1000)
    ngx.print(body:sub(cut + 1))
    return ngx.exit(ngx.OK)
  end
  ngx.header["Content-Length"] = #body
  ngx.print(body)
  return ngx.exit(ngx.OK)
end

local function api(method, uri)
  local body = read_body()
  record(body)
  local class, handler = route(method, uri)
  local latency = stats:get("latency_ms") or 0
  if latency > 0 then ngx.sleep(latency / 1000) end
  local f = take_fault(class)
  if f then
    if f.delay_ms then ngx.sleep(tonumber(f.delay_ms) / 1000) end
    early_fault(f)
  end
  return deliver(f, handler(body))
end

-- ---------------------------------------------------------------------------
-- the admin API (never counted, never faulted)

local function admin(method, uri)
  local what = uri:match("^/__sandbox/([%w_]+)$")
  local body = read_body()
  local req = body and body ~= "" and cjson.decode(body) or {}
  if type(req) ~= "table" then return api_error(400, "admin: body is not a JSON object") end
  if what == "faults" and method == "POST" then
    local match = req.match or "any"
    if not MATCHES[match] then return api_error(400, "admin: unknown match '" .. tostring(match) .. "'") end
    local list = req.faults or {}
    if type(list) ~= "table" then return api_error(400, "admin: faults must be an array") end
    for _, f in ipairs(list) do
      local ok, err = faults:lpush("q:" .. match, cjson.encode(f))
      if not ok then return api_error(500, "admin: " .. tostring(err)) end
    end
    return json_reply(200, { queued = faults:llen("q:" .. match) })
  elseif what == "faults" and method == "GET" then
    local out = {}
    for m in pairs(MATCHES) do out[m] = faults:llen("q:" .. m) or 0 end
    return json_reply(200, out)
  elseif what == "latency" and method == "POST" then
    stats:set("latency_ms", tonumber(req.ms) or 0)
    return json_reply(200, { ms = stats:get("latency_ms") })
  elseif what == "clock" and method == "POST" then
    stats:set("clock_offset", tonumber(req.offset) or 0)
    return json_reply(200, { offset = stats:get("clock_offset"), now = now() })
  elseif what == "clock" and method == "GET" then
    return json_reply(200, { offset = stats:get("clock_offset") or 0, now = now() })
  elseif what == "stats" and method == "GET" then
    return json_reply(200, {
      requests = stats:get("requests") or 0, connections = stats:get("connections") or 0,
      creates = stats:get("creates") or 0, deactivates = stats:get("deactivates") or 0,
      latency_ms = stats:get("latency_ms") or 0, pid = ngx.worker.pid(),
    })
  elseif what == "requests" and method == "GET" then
    local log = request_log()
    ngx.header["Content-Type"] = "application/json;charset=UTF-8"
    ngx.print(#log == 0 and "[]" or cjson.encode(log)) -- Debian's cjson has no array_mt
    return ngx.exit(ngx.OK)
  elseif what == "links" and method == "GET" then
    local out = {}
    for _, k in ipairs(links:get_keys(0)) do out[k] = cjson.decode(links:get(k) or "null") end
    return json_reply(200, out)
  elseif what == "reset" and method == "POST" then
    links:flush_all(); links:flush_expired()
    faults:flush_all(); faults:flush_expired()
    stats:flush_all(); stats:flush_expired()
    return json_reply(200, {})
  end
  return api_error(404, "admin: no such endpoint " .. method .. " " .. uri)
end

--- content_by_lua entry for every request.
function M.handle()
  local method, uri = ngx.req.get_method(), ngx.var.uri
  if uri:sub(1, 11) == "/__sandbox/" then
    if require("portone.sandbox.pay").admin(method, uri) then return end
    return admin(method, uri)
  end
  return api(method, uri)
end

-- ---------------------------------------------------------------------------
-- the launcher watchdog: when the process that started the sandbox is gone
-- (killed with SIGTERM, crashed), stop nginx and remove the temp prefix.

-- A zombie still answers kill(pid, 0), and a killed launcher may stay one
-- for a while: read its state from /proc when there is one.
local function launcher_alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if f then
    local stat = f:read("*l") or ""
    f:close()
    local state = stat:match("%) (%a)")
    return state ~= "Z" and state ~= "X"
  end
  local ffi = require "ffi"
  if ffi.C.kill(pid, 0) == 0 then return true end
  return ffi.errno() ~= 3 -- ESRCH: gone; EPERM: alive
end

local function watchdog(premature)
  if premature then return end
  local C = require("ffi").C
  if launcher_alive(conf.watch_pid) then return end
  if conf.cleanup_prefix and conf.prefix and conf.prefix:match("^/.+/portone%-sandbox%.[%w]+/?$") then
    os.execute("rm -rf '" .. conf.prefix .. "'")
  end
  C.kill(C.getppid(), 3) -- SIGQUIT to the master: graceful stop
end

--- init_worker_by_lua entry.
function M.init_worker()
  seed()
  if conf.watch_pid then
    local ffi = require "ffi"
    pcall(ffi.cdef, "int kill(int pid, int sig); int getppid(void);")
    ngx.timer.every(0.5, watchdog)
  end
  if conf.announce then
    ngx.timer.at(0, function()
      io.stdout:write(conf.announce, "\n")
      io.stdout:flush()
    end)
  end
end

return M
