--- Starts and stops a private nginx that plays the PortOne side on loopback.
-- Runs in the host process (Lua 5.4 or LuaJIT; needs luasocket and lua-cjson).
--
--   local sandbox = require "portone.sandbox"
--   local sb = assert(sandbox.start{ port = 0 })   -- 0/nil: a free port
--   print(sb.url)                                  -- http://127.0.0.1:PORT
--   sb:faults("create", { { status = 503, retry_after = 1 } })
--   sb:stop()
--
-- nginx is OpenResty's `openresty` when it is on PATH, else Debian's
-- /usr/sbin/nginx with lua-nginx-module loaded by `load_module`. Each sandbox
-- gets a fresh temp prefix holding the config, pid file, error log and every
-- temp path; stop() removes it.
local socket = require "socket"
local cjson = require "cjson.safe"

local M = {}

local MODULES = "/usr/lib/nginx/modules/"

-- ---------------------------------------------------------------------------
-- shell helpers (no lua-posix: everything goes through /bin/sh)

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Test suites preload ASan into this process; some tools (ps) hang with it,
-- and nginx must not get it: every command runs without LD_PRELOAD.
local function clean(cmd)
  return "env -u LD_PRELOAD sh -c " .. quote(cmd)
end

-- os.execute returns true/nil on 5.2+ and a status number on 5.1/LuaJIT.
local function run(cmd)
  local a, _, c = os.execute(clean(cmd))
  if type(a) == "number" then return a == 0, a end
  return a == true, c
end

local function capture(cmd)
  local p = io.popen(clean(cmd))
  if not p then return nil end
  local out = p:read("*a")
  p:close()
  return out
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, data)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  f:write(data)
  f:close()
  return true
end

local function tail(s, n)
  if not s then return "" end
  local lines = {}
  for line in s:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return table.concat(lines, "\n", math.max(1, #lines - (n or 10) + 1))
end

local function sleep(s) socket.sleep(s) end

-- This file's directory, then the `lua/` root above portone/sandbox/.
local function lua_root()
  local src = debug.getinfo(1, "S").source
  src = src:sub(1, 1) == "@" and src:sub(2) or src
  local dir = src:match("^(.*)/portone/sandbox/init%.lua$")
    or src:match("^(.*)/portone/sandbox/[^/]*$") or "."
  if dir:sub(1, 1) ~= "/" then
    local cwd = (capture("pwd") or "."):gsub("%s+$", "")
    dir = dir == "." and cwd or cwd .. "/" .. dir:gsub("^%./", "")
  end
  return dir
end

--- Finds nginx: `openresty` on PATH, else Debian's nginx (which needs the
-- lua module loaded). Returns path, needs_load_module.
function M.find_nginx()
  local env = os.getenv("PORTONE_SANDBOX_NGINX")
  if env and env ~= "" then
    return env, not env:find("openresty", 1, true)
  end
  local o = capture("command -v openresty 2>/dev/null")
  o = o and o:gsub("%s+$", "")
  if o and o ~= "" then return o, false end
  for _, p in ipairs({ "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx" }) do
    if read_file(p) ~= nil or run("test -x " .. quote(p)) then return p, true end
  end
  return nil
end

--- A free TCP port on `host` (bind to 0, read it, close). Racy by nature;
-- start() retries when nginx then finds it taken.
function M.free_port(host)
  host = host or "127.0.0.1"
  local s = assert(host:find(":", 1, true) and socket.tcp6 and socket.tcp6() or (socket.tcp4 or socket.tcp)())
  local ok, err = s:bind(host, 0)
  if not ok then s:close(); return nil, err end
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

local function lua_literal(v)
  local t = type(v)
  if t == "string" then return (("%q"):format(v):gsub("\\\n", "\\n")) end
  if t == "number" or t == "boolean" then return tostring(v) end
  if v == nil then return "nil" end
  local parts = {}
  for k, x in pairs(v) do parts[#parts + 1] = "[" .. lua_literal(k) .. "]=" .. lua_literal(x) end
  return "{" .. table.concat(parts, ",") .. "}"
end

local function listen_addr(host, port)
  if host:find(":", 1, true) then return "[" .. host .. "]:" .. port end
  return host .. ":" .. port
end

--- The nginx config for one sandbox (exposed for the CLI and tests).
function M.config(o)
  local P = o.prefix
  local lines = {}
  local function add(s) lines[#lines + 1] = s end
  if o.load_modules then
    add("load_module " .. MODULES .. "ndk_http_module.so;")
    add("load_module " .. MODULES .. "ngx_http_lua_module.so;")
  end
  -- As root, nginx would run the worker as nobody, which could neither
  -- signal the master (watchdog) nor remove the prefix: keep root.
  if o.as_root then add("user root;") end
  -- One worker by default (state lives in shared dicts, so more are safe);
  -- benchmarks ask for more so the sandbox is not what they measure.
  add("worker_processes " .. math.floor(tonumber(o.workers) or 1) .. ";")
  add("daemon " .. (o.daemon and "on" or "off") .. ";")
  add("master_process on;")
  add("pid " .. P .. "/nginx.pid;")
  add("error_log " .. P .. "/error.log " .. (o.log_level or "warn") .. ";")
  add("events { worker_connections 1024; }")
  add("http {")
  add("  access_log off;")
  add("  client_body_temp_path " .. P .. "/client_body;")
  add("  proxy_temp_path " .. P .. "/proxy;")
  add("  fastcgi_temp_path " .. P .. "/fastcgi;")
  add("  uwsgi_temp_path " .. P .. "/uwsgi;")
  add("  scgi_temp_path " .. P .. "/scgi;")
  add("  client_max_body_size 8m;")
  add("  client_body_buffer_size 8m;")
  add("  keepalive_requests 10000;")
  add("  keepalive_timeout 60s;")
  add("  server_tokens off;")
  add("  lua_socket_log_errors off;")
  add('  lua_package_path "' .. o.lua_root .. "/?.lua;" .. o.lua_root .. '/?/init.lua;;";')
  add("  lua_shared_dict portone_links 16m;")
  -- queued faults: lpush never evicts, a full dict refuses a queue call (507)
  add("  lua_shared_dict portone_faults 1m;")
  -- payments and their marks: never evicted (safe_set/safe_add only); a
  -- full store refuses the next payment (HTTP 507) until a reset
  add("  lua_shared_dict portone_payments 16m;")
  -- the admin API's settings (clock offset, latency, webhook and test
  -- mode): a few small keys, never evicted (safe_set only), so that a full
  -- stats dict cannot silently reset one
  add("  lua_shared_dict portone_settings 1m;")
  -- counters and webhook logs: small records an eviction may drop
  -- (diagnostics only, never a payment, a setting or a token)
  add("  lua_shared_dict portone_stats 16m;")
  -- REST V1 tokens, alone: a revoke empties the dict, and what fills the
  -- stats dict cannot evict a token
  add("  lua_shared_dict portone_tokens 1m;")
  -- the request log and the inbox: records that may be evicted (a huge
  -- request body pushes out old ones, never a payment or a link)
  add("  lua_shared_dict portone_log 16m;")
  add("  init_by_lua_block { require('portone.sandbox.server').init(" .. lua_literal(o.server) .. ") }")
  add("  init_worker_by_lua_block { require('portone.sandbox.server').init_worker() }")
  local function server(port, tls)
    add("  server {")
    add("    listen " .. listen_addr(o.host, port) .. (tls and " ssl" or "") .. ";")
    if tls then
      add("    ssl_certificate " .. tls.cert .. ";")
      add("    ssl_certificate_key " .. tls.key .. ";")
    end
    add("    location / { content_by_lua_block { require('portone.sandbox.server').handle() } }")
    add("  }")
  end
  server(o.port, o.tls)
  if o.admin_port and o.admin_port ~= o.port then server(o.admin_port, nil) end
  add("}")
  return table.concat(lines, "\n") .. "\n"
end

-- ---------------------------------------------------------------------------
-- a tiny HTTP/1.1 client over luasocket (plain http; the admin port)

--- One request; returns status, body, headers (lower-case names) or nil, err.
function M.http(host, port, method, path, body, headers, timeout)
  local c = socket.tcp()
  c:settimeout(timeout or 5)
  local ok, err = c:connect(host, port)
  if not ok then c:close(); return nil, "connect: " .. tostring(err) end
  local req = { method .. " " .. path .. " HTTP/1.1", "Host: " .. listen_addr(host, port),
                "Connection: close" }
  for k, v in pairs(headers or {}) do req[#req + 1] = k .. ": " .. v end
  if body then
    req[#req + 1] = "Content-Length: " .. #body
  end
  local data = table.concat(req, "\r\n") .. "\r\n\r\n" .. (body or "")
  ok, err = c:send(data)
  if not ok then c:close(); return nil, "send: " .. tostring(err) end
  local status_line
  status_line, err = c:receive("*l")
  if not status_line then c:close(); return nil, "receive: " .. tostring(err) end
  local status = tonumber(status_line:match("^HTTP/%d%.%d (%d%d%d)"))
  local hdrs = {}
  while true do
    local line
    line, err = c:receive("*l")
    if not line then c:close(); return nil, "receive: " .. tostring(err) end
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    if k then hdrs[k:lower()] = v end
  end
  local resp
  if hdrs["content-length"] then
    resp, err = c:receive(tonumber(hdrs["content-length"]))
  elseif (hdrs["transfer-encoding"] or ""):lower():find("chunked") then
    local parts = {}
    while true do
      local size = c:receive("*l")
      local n = size and tonumber(size:match("^%x+"), 16)
      if not n then err = "bad chunk"; break end
      if n == 0 then c:receive("*l"); break end
      parts[#parts + 1] = c:receive(n)
      c:receive("*l")
    end
    resp = table.concat(parts)
  else
    local partial
    resp, err, partial = c:receive("*a")
    resp = resp or partial
  end
  c:close()
  if not resp then return nil, "receive body: " .. tostring(err) end
  return status, resp, hdrs
end

-- ---------------------------------------------------------------------------
-- the handle

local Sandbox = {}
Sandbox.__index = Sandbox

--- Calls the admin API; returns the decoded JSON answer, or nil, err.
function Sandbox:admin(method, path, body)
  if path:sub(1, 1) ~= "/" then path = "/__sandbox/" .. path end
  local data = body ~= nil and cjson.encode(body) or nil
  local status, resp = M.http(self.host, self.admin_port, method, path, data,
    data and { ["Content-Type"] = "application/json" } or nil)
  if not status then return nil, resp end
  local v = cjson.decode(resp)
  if status ~= 200 then
    return nil, "admin " .. method .. " " .. path .. ": HTTP " .. status .. " " .. tostring(resp)
  end
  return v
end

--- Queues faults for the next requests of a class ("create", "deactivate",
-- "page", "token" or "any").
function Sandbox:faults(match, list)
  return self:admin("POST", "faults", { match = match or "any", faults = list or {} })
end

--- Delays every API answer by `ms` milliseconds (admin requests are never
-- delayed).
-- @tparam[opt=0] number ms the delay; 0 turns it off
-- @return the admin API's answer, or `nil, err`
function Sandbox:latency(ms) return self:admin("POST", "latency", { ms = ms or 0 }) end
--- Moves the sandbox clock by `offset` seconds (expiry checks, the expired
-- page's 410, token lifetimes).
-- @tparam[opt=0] number offset seconds added to the real time; 0 resets it
-- @return the admin API's answer, or `nil, err`
function Sandbox:clock(offset) return self:admin("POST", "clock", { offset = offset or 0 }) end
--- Counters since start or the last `reset`.
-- @return `{requests =, connections =, creates =, deactivates =, latency_ms =}`,
--   or `nil, err`
function Sandbox:stats() return self:admin("GET", "stats") end
--- The last 100 API requests, oldest first.
-- @return an array of `{method =, uri =, headers =, body =, connection_requests =}`
--   (`headers`: lower-case name to value), or `nil, err`
function Sandbox:requests() return self:admin("GET", "requests") end
--- The REST V1 key pair getToken accepts (made up at start when none was
-- given; also `sb.imp_key`, `sb.imp_secret`).
-- @return `{imp_key =, imp_secret =, made_up =}`, or `nil, err`
function Sandbox:keys() return self:admin("GET", "keys") end
--- Clears faults, latency, the clock offset, counters, the request log,
-- every link and every payment (which also empties a full payment store).
-- @return the admin API's answer, or `nil, err`
function Sandbox:reset() return self:admin("POST", "reset") end

-- A stopped master stays a zombie until init reaps it, which can take a
-- second or more; kill -0 would call it alive. Read its state on Linux.
local function pid_alive(pid)
  if not pid then return false end
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if f then
    local state = (f:read("*l") or ""):match("%) (%a)")
    f:close()
    return state ~= "Z" and state ~= "X"
  end
  if read_file("/proc/self/stat") then return false end -- /proc works: gone
  return run("kill -0 " .. pid .. " 2>/dev/null")
end

--- The master's pid (from the pid file), or nil.
function Sandbox:pid()
  local s = read_file(self.prefix .. "/nginx.pid")
  return s and tonumber(s:match("%d+"))
end

--- Stops nginx (graceful, then forced) and removes the temp prefix.
function Sandbox:stop()
  if self.stopped then return true end
  self.stopped = true
  local pid = self:pid() or self.master_pid
  if pid then
    run("kill -QUIT " .. pid .. " 2>/dev/null")
    local deadline = socket.gettime() + 5
    while pid_alive(pid) and socket.gettime() < deadline do sleep(0.02) end
    if pid_alive(pid) then
      run("kill -KILL " .. pid .. " 2>/dev/null")
      sleep(0.05)
    end
  end
  M.remove_prefix(self.prefix)
  return true
end
--- Another name for `Sandbox:stop`.
-- @function Sandbox:close
Sandbox.close = Sandbox.stop

--- Removes a sandbox's temp prefix (`rm -rf`), only when its name is one
-- `prepare` makes (`.../portone-sandbox.XXXXXXXX`); anything else is left alone.
-- @tparam ?string prefix the directory
function M.remove_prefix(prefix)
  if prefix and prefix:match("/portone%-sandbox%.[%w]+$") then
    run("rm -rf " .. quote(prefix))
  end
end

local function make_prefix()
  local p = capture("mktemp -d \"${TMPDIR:-/tmp}/portone-sandbox.XXXXXXXX\"")
  p = p and p:gsub("%s+$", "")
  if not p or p == "" then return nil, "mktemp -d failed" end
  return p
end

local function my_pid()
  -- $PPID of the shell that popen starts is this process (a builtin: no
  -- LD_PRELOAD trouble).
  local p = io.popen("echo $PPID")
  local s = p and p:read("*a")
  if p then p:close() end
  return s and tonumber(s:match("%d+"))
end

--- Prepares a sandbox: prefix, config, port. Returns the plan (a table) or
-- nil, err. `opts.daemon` picks `daemon on` (start) or off (CLI foreground);
-- `opts.forward_to` sends every webhook to that loopback URL (the CLI's
-- `--forward-to`).
function M.prepare(opts)
  opts = opts or {}
  local host = opts.host or "127.0.0.1"
  local nginx, load_modules = M.find_nginx()
  if not nginx then return nil, "nginx not found (install nginx + libnginx-mod-http-lua, or OpenResty)" end
  if load_modules and not read_file(MODULES .. "ngx_http_lua_module.so") then
    return nil, "lua-nginx-module not found at " .. MODULES .. " (install libnginx-mod-http-lua)"
  end
  if opts.tls then
    if not (opts.tls.cert and opts.tls.key) then return nil, "tls needs cert and key paths" end
    if not read_file(opts.tls.cert) then return nil, "cannot read TLS certificate " .. opts.tls.cert end
    if not read_file(opts.tls.key) then return nil, "cannot read TLS key " .. opts.tls.key end
  end
  local prefix, err = make_prefix()
  if not prefix then return nil, err end
  local plan = {
    nginx = nginx, load_modules = load_modules, prefix = prefix, host = host,
    tls = opts.tls, daemon = opts.daemon ~= false, lua_root = opts.lua_root or lua_root(),
    fixed_port = opts.port and opts.port ~= 0, log_level = opts.log_level, workers = opts.workers,
    watch_pid = opts.watch_pid == nil and my_pid() or opts.watch_pid or nil,
    as_root = (capture("id -u") or ""):match("^0%s*$") ~= nil,
  }
  plan.conf = prefix .. "/nginx.conf"
  M.choose_ports(plan, opts)
  return plan
end

local function random_digits(n)
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(n)
  if f then f:close() end
  local out = {}
  for i = 1, n do out[i] = b and #b == n and (b:byte(i) % 10) or math.random(0, 9) end
  return table.concat(out)
end

--- A made-up REST V1 key pair in PortOne's shape: a 16-digit imp_key and an
-- 80-character imp_secret. Returns key, secret, true.
function M.made_up_keys()
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
  local digits = random_digits(160)
  local secret = {}
  for i = 1, 80 do
    local n = tonumber(digits:sub(2 * i - 1, 2 * i)) % #alphabet + 1
    secret[i] = alphabet:sub(n, n)
  end
  return random_digits(16), table.concat(secret), true
end

--- (Re)picks ports and writes the config for a plan.
function M.choose_ports(plan, opts)
  plan.port = plan.fixed_port and tonumber(opts.port) or M.free_port(plan.host)
  if plan.tls then
    plan.admin_port = opts.admin_port or M.free_port(plan.host)
  else
    plan.admin_port = plan.port
  end
  local scheme = plan.tls and "https" or "http"
  local urlhost = plan.host:find(":", 1, true) and "[" .. plan.host .. "]" or plan.host
  plan.url = scheme .. "://" .. urlhost .. ":" .. plan.port
  plan.admin_url = "http://" .. urlhost .. ":" .. plan.admin_port
  -- Without a key pair of its own the sandbox makes one up, so that a
  -- wrong key is caught as PortOne would (printed at start, GET /__sandbox/keys).
  if not plan.imp_key then
    if opts.imp_key then
      plan.imp_key, plan.imp_secret = opts.imp_key, opts.imp_secret
    else
      plan.imp_key, plan.imp_secret, plan.keys_made_up = M.made_up_keys()
    end
  end
  plan.server = {
    scheme = scheme, host = plan.host, port = plan.port, prefix = plan.prefix,
    imp_key = plan.imp_key, imp_secret = plan.imp_secret, keys_made_up = plan.keys_made_up,
    watch_pid = plan.watch_pid, cleanup_prefix = true, latency_ms = opts.latency_ms,
    forward_to = opts.forward_to,   -- read by portone.sandbox.webhooks
  }
  if opts.announce then
    plan.server.announce = "sandbox listening on " .. plan.url
      .. (plan.admin_url ~= plan.url and " (admin API on " .. plan.admin_url .. "/__sandbox/)" or "")
      .. "\nREST V1 keys: imp_key " .. plan.imp_key .. " imp_secret " .. plan.imp_secret
      .. (plan.keys_made_up and " (made up: pass --imp-key/--imp-secret to choose them)" or "")
      .. "\nstop it with Ctrl-C" .. (plan.watch_pid and " or kill -TERM " .. plan.watch_pid or "")
      .. (opts.forward_to and "\nwebhooks go to " .. opts.forward_to or "")
  end
  return write_file(plan.conf, M.config(plan))
end

--- The shell command that runs nginx for a plan.
function M.command(plan)
  return "env -u LD_PRELOAD " .. quote(plan.nginx) .. " -p " .. quote(plan.prefix .. "/")
    .. " -c " .. quote(plan.conf) .. " -e " .. quote(plan.prefix .. "/error.log")
end

local function wait_ready(sb, deadline)
  while socket.gettime() < deadline do
    local status = M.http(sb.host, sb.admin_port, "GET", "/__sandbox/stats", nil, nil, 1)
    if status == 200 then sb.master_pid = sb:pid() or sb.master_pid; return true end
    if not pid_alive(sb:pid()) and sb:pid() then return false end
    sleep(0.02)
  end
  return false
end

--- Starts a sandbox (nginx daemonized). Options: host, port (0/nil = free),
-- tls = {cert=, key=}, latency_ms, imp_key, imp_secret, timeout (s, 10).
-- Returns the handle {url, host, port, prefix, admin_port} or nil, err.
function M.start(opts)
  opts = opts or {}
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.daemon = true
  local plan, err = M.prepare(o)
  if not plan then return nil, err end
  local last = ""
  for attempt = 1, (plan.fixed_port and 1 or 5) do
    if attempt > 1 then
      M.choose_ports(plan, o)
      os.remove(plan.prefix .. "/error.log")
    end
    local ok = run(M.command(plan) .. " >/dev/null 2>&1")
    local log = read_file(plan.prefix .. "/error.log") or ""
    if ok then
      local sb = setmetatable({
        url = plan.url, host = plan.host, port = plan.port, prefix = plan.prefix,
        admin_port = plan.admin_port, admin_url = plan.admin_url, tls = plan.tls,
        conf = plan.conf, imp_key = plan.imp_key, imp_secret = plan.imp_secret,
      }, Sandbox)
      sb.master_pid = sb:pid()
      if wait_ready(sb, socket.gettime() + (opts.timeout or 10)) then
        return sb
      end
      last = read_file(plan.prefix .. "/error.log") or log
      sb:stop()
      return nil, "sandbox did not answer; nginx error log:\n" .. tail(last, 15)
    end
    last = log
    if not log:find("Address already in use", 1, true) then break end
  end
  M.remove_prefix(plan.prefix)
  return nil, "nginx failed to start; error log:\n" .. tail(last, 15)
end

M.Sandbox = Sandbox
return M
