--- Starts a private nginx with lua-nginx-module (Debian's packages) that runs
-- the portone.link client on cosockets, for spec/openresty_spec.lua and
-- bench/openresty.lua.
--
--     local harness = require "nginx.harness"
--     local ngx_srv = harness.start{ sandbox_url = sb.url, sandbox_tls_url = ... }
--     ngx_srv.url            -- http://127.0.0.1:PORT (the test locations)
--     ngx_srv.url .. "/portone/webhook"  -- examples/webhook/handler.lua, mounted
--                            -- as its README says (env PORTONE_* from opts.env)
--     ngx_srv.url .. "/orders/link", "/orders/metrics"  -- examples/openresty
--     ngx_srv.upstream       -- plain/TLS fake upstreams for raw transport tests
--     ngx_srv:stop()
--
-- Everything lives in a temp prefix: config, pid, logs, temp paths, certs.
-- nginx runs with LD_PRELOAD removed (the ASan suite preloads the runtimes,
-- which nginx is not built for).
local socket = require "socket"

local M = {}

local ROOT = (function()
  local pwd = os.getenv("PWD")
  local p = io.popen("pwd")
  if p then pwd = p:read("*l") or pwd; p:close() end
  return pwd
end)()
M.ROOT = ROOT

local MODULES = "/usr/lib/nginx/modules/"

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
M.read = read

--- n free TCP ports on loopback (default 1), all different: each socket
-- stays bound until all are read, so the kernel cannot hand out one port
-- twice (a config that listened twice on one port once failed CI).
function M.free_port(n)
  local socks, ports = {}, {}
  for i = 1, n or 1 do
    socks[i] = assert(socket.bind("127.0.0.1", 0))
    local _, port = socks[i]:getsockname()
    ports[i] = tonumber(port)
  end
  for _, s in ipairs(socks) do s:close() end
  return (table.unpack or unpack)(ports) -- luacheck: ignore 113 (5.1)
end

--- Makes a test PKI in `dir` with the openssl CLI: a CA, a leaf for
-- localhost/127.0.0.1 signed by it, a leaf for another name signed by it
-- (host-name mismatch), and a self-signed localhost cert nobody trusts.
function M.make_certs(dir)
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  local o = " >/dev/null 2>&1"
  local function leaf(name, cn, san)
    write(dir .. "/" .. name .. ".ext", "subjectAltName=" .. san .. "\n")
    return sh(("env -u LD_PRELOAD openssl req %s -keyout %s/%s.key -out %s/%s.csr -subj /CN=%s%s"):format(
        ec, dir, name, dir, name, cn, o))
      and sh(("env -u LD_PRELOAD openssl x509 -req -in %s/%s.csr -CA %s/ca.crt -CAkey %s/ca.key "
        .. "-CAcreateserial -days 2 -out %s/%s.crt -extfile %s/%s.ext%s"):format(
        dir, name, dir, dir, dir, name, dir, name, o))
  end
  assert(sh(("env -u LD_PRELOAD openssl req -x509 %s -keyout %s/ca.key -out %s/ca.crt -days 2 "
    .. "-subj /CN=portone-link-test-ca%s"):format(ec, dir, dir, o)), "openssl: CA")
  assert(leaf("leaf", "localhost", "DNS:localhost,IP:127.0.0.1"), "openssl: leaf")
  assert(leaf("other", "other.example", "DNS:other.example"), "openssl: other")
  assert(sh(("env -u LD_PRELOAD openssl req -x509 %s -keyout %s/rogue.key -out %s/rogue.crt -days 2 "
    .. "-subj /CN=localhost -addext subjectAltName=DNS:localhost%s"):format(ec, dir, dir, o)),
    "openssl: rogue")
  return {
    ca = dir .. "/ca.crt",
    cert = dir .. "/leaf.crt", key = dir .. "/leaf.key",
    other_cert = dir .. "/other.crt", other_key = dir .. "/other.key",
    rogue_cert = dir .. "/rogue.crt", rogue_key = dir .. "/rogue.key",
  }
end

local function lua_string(s)
  return ("%q"):format(s)
end

-- The test config. ${NAME} placeholders are filled from `vars`.
local CONF = [[
load_module ${MODULES}ndk_http_module.so;
load_module ${MODULES}ngx_http_lua_module.so;

daemon on;
master_process on;
worker_processes 1;
pid ${PREFIX}/logs/nginx.pid;
error_log ${PREFIX}/logs/error.log ${LOG_LEVEL};

events { worker_connections 4096; }
${ENV_DIRECTIVES}

http {
  access_log off;
  client_body_temp_path ${PREFIX}/tmp/body;
  proxy_temp_path ${PREFIX}/tmp/proxy;
  fastcgi_temp_path ${PREFIX}/tmp/fastcgi;
  uwsgi_temp_path ${PREFIX}/tmp/uwsgi;
  scgi_temp_path ${PREFIX}/tmp/scgi;
  client_body_buffer_size 1m;
  client_max_body_size 8m;
  keepalive_requests 100000;

  lua_package_path "${LUA_PATH}";
  lua_package_cpath "${ROOT}/build/5.1/?.so;;";
  lua_ssl_trusted_certificate ${CA};
  lua_ssl_verify_depth 3;
  lua_socket_log_errors off;
  lua_shared_dict plink_test 1m;
  lua_shared_dict orders 1m;  # examples/webhook/handler.lua's order store
  lua_shared_dict portone_link_metrics 1m;  # examples/openresty/link_handler.lua

  init_by_lua_block {
    require("nginx.handlers").init()
  }
  init_worker_by_lua_block {
    require("nginx.handlers").init_worker()
  }

  # the test and bench locations: the client runs here
  server {
    listen 127.0.0.1:${PORT};
    location /t/ {
      content_by_lua_block { require("nginx.handlers").dispatch() }
    }
    # the same, resolving host names through a DNS server that never answers
    location /t/slowdns/ {
      resolver 127.0.0.1:${DNS_PORT} ipv6=off;
      resolver_timeout 1s;
      content_by_lua_block { require("nginx.handlers").dispatch() }
    }
    location = /t/phase/set {
      set_by_lua_block $phase_err { return require("nginx.handlers").try_client("set") }
      content_by_lua_block { ngx.say(ngx.var.phase_err) }
    }
    location = /t/phase/log {
      content_by_lua_block { ngx.say("ok") }
      log_by_lua_block { require("nginx.handlers").log_phase() }
    }
    location = /t/phase/header_filter {
      content_by_lua_block { ngx.say("ok") }
      header_filter_by_lua_block { require("nginx.handlers").header_filter_phase() }
    }
    # link.rest in the log phase while a timer refreshes the token
    location = /t/rest/log {
      content_by_lua_block { require("nginx.handlers").rest_log_content() }
      log_by_lua_block { require("nginx.handlers").rest_log_phase() }
    }
    # the OpenResty webhook example, mounted as examples/webhook/README.md says
    location = /portone/webhook {
      client_max_body_size 16k;
      content_by_lua_block { require("handler").handle() }
    }
    # the OpenResty link example (PORTONE_LINK_BASE_URL from opts.env)
    location = /orders/link {
      content_by_lua_block { require("link_handler").create() }
    }
    location = /orders/metrics {
      content_by_lua_block { require("link_handler").metrics() }
    }
    location = /bench/ngx {
      content_by_lua_block { require("nginx.handlers").bench("ngx") }
    }
    location = /bench/curl {
      content_by_lua_block { require("nginx.handlers").bench("curl") }
    }
  }

  # fake upstreams for raw transport tests (same handlers, plain and TLS)
  server {
    listen 127.0.0.1:${UP_PORT};
    listen 127.0.0.1:${UP_TLS_PORT} ssl;
    ssl_certificate ${CERT};
    ssl_certificate_key ${KEY};
    location / { content_by_lua_block { require("nginx.handlers").upstream() } }
  }
  server {
    listen 127.0.0.1:${ROGUE_PORT} ssl;
    ssl_certificate ${ROGUE_CERT};
    ssl_certificate_key ${ROGUE_KEY};
    location / { content_by_lua_block { require("nginx.handlers").upstream() } }
  }
  server {
    listen 127.0.0.1:${OTHER_PORT} ssl;
    ssl_certificate ${OTHER_CERT};
    ssl_certificate_key ${OTHER_KEY};
    location / { content_by_lua_block { require("nginx.handlers").upstream() } }
  }
}
]]

local function http_get(url)
  local http = require "socket.http"
  http.TIMEOUT = 2
  return http.request(url)
end

--- One HTTP request from the test process: status, body text. A table
-- body is sent as JSON; a string as it is, with `ctype` (default JSON).
function M.request(method, url, body, ctype)
  local cjson = require "cjson"
  local http, ltn12 = require "socket.http", require "ltn12"
  local out = {}
  local src = type(body) == "table" and cjson.encode(body) or body
  local _, code = http.request {
    url = url, method = method, sink = ltn12.sink.table(out),
    source = src and ltn12.source.string(src),
    headers = src and { ["content-type"] = ctype or "application/json", ["content-length"] = #src } or nil,
  }
  return code, table.concat(out)
end

local Server = {}
Server.__index = Server

--- POSTs a JSON body to a test location and decodes the JSON answer
-- (raises unless the status is 200).
function Server:post(path, body)
  local code, text = M.request("POST", self.url .. path, body)
  assert(code == 200, ("POST %s -> %s %s"):format(path, tostring(code), text))
  return require("cjson").decode(text)
end

--- Starts nginx. opts: sandbox_url, sandbox_tls_url (optional), log_level,
-- extra_env (table put into the plink_testenv module), env (table of
-- environment variables nginx keeps for the workers: an `env NAME;` directive
-- each, e.g. the webhook example's PORTONE_IMP_KEY).
function M.start(opts)
  opts = opts or {}
  local so = ROOT .. "/build/5.1/portone/link/core.so"
  if opts.need_core ~= false then
    local f = io.open(so)
    assert(f, "build the LuaJIT core first: make LUA_VERSION=5.1 (" .. so .. " missing)")
    f:close()
  end
  local p = io.popen("mktemp -d /tmp/plink-nginx.XXXXXX")
  local prefix = p:read("*l"); p:close()
  for _, d in ipairs { "logs", "tmp", "lua", "certs", "conf" } do
    assert(sh("mkdir -p " .. q(prefix .. "/" .. d)))
  end
  local certs = M.make_certs(prefix .. "/certs")
  -- the trusted bundle: our test CA plus any extra CA files (the sandbox's)
  local bundle = { assert(read(certs.ca)) }
  for _, f in ipairs(opts.extra_ca or {}) do bundle[#bundle + 1] = assert(read(f), f) end
  certs.bundle = prefix .. "/certs/trusted.pem"
  write(certs.bundle, table.concat(bundle, "\n"))
  -- When run as root the workers run as nobody: let them read the prefix
  -- (test keys only) and write the temp paths.
  sh("chmod -R a+rX " .. q(prefix) .. " && chmod a+rwx " .. q(prefix .. "/tmp"))
  local port, up_port, up_tls_port, rogue_port, other_port = M.free_port(5)
  -- a UDP socket nobody reads: nginx's queries to it are never answered
  local silent_dns = assert(socket.udp())
  assert(silent_dns:setsockname("127.0.0.1", 0))
  local _, dns_port = silent_dns:getsockname()
  local self = setmetatable({
    prefix = prefix, certs = certs, silent_dns = silent_dns,
    port = port, up_port = up_port, up_tls_port = up_tls_port,
    rogue_port = rogue_port, other_port = other_port,
  }, Server)
  self.url = "http://127.0.0.1:" .. self.port
  self.upstream = {
    http = "http://127.0.0.1:" .. self.up_port,
    https = "https://localhost:" .. self.up_tls_port,
    https_ip = "https://127.0.0.1:" .. self.up_tls_port,
    rogue = "https://localhost:" .. self.rogue_port,
    other = "https://localhost:" .. self.other_port,
  }
  -- values the handlers inside nginx read
  local env = {
    sandbox_url = opts.sandbox_url, sandbox_tls_url = opts.sandbox_tls_url,
    upstream = self.upstream, root = ROOT,
  }
  for k, v in pairs(opts.extra_env or {}) do env[k] = v end
  local function ser(v)
    if type(v) == "table" then
      local parts = {}
      for k, x in pairs(v) do parts[#parts + 1] = "[" .. lua_string(k) .. "]=" .. ser(x) end
      return "{" .. table.concat(parts, ",") .. "}"
    elseif type(v) == "string" then return lua_string(v)
    else return tostring(v) end
  end
  write(prefix .. "/lua/plink_testenv.lua", "return " .. ser(env) .. "\n")

  local vars = {
    MODULES = MODULES, PREFIX = prefix, ROOT = ROOT, LOG_LEVEL = opts.log_level or "warn",
    -- the client, the spec helpers, and examples/webhook (require "handler")
    LUA_PATH = table.concat({ prefix .. "/lua/?.lua", ROOT .. "/lua/?.lua", ROOT .. "/lua/?/init.lua",
      ROOT .. "/spec/?.lua", ROOT .. "/examples/webhook/?.lua", ROOT .. "/examples/openresty/?.lua",
      ";" }, ";"),
    PORT = self.port, UP_PORT = self.up_port, UP_TLS_PORT = self.up_tls_port, DNS_PORT = dns_port,
    ROGUE_PORT = self.rogue_port, OTHER_PORT = self.other_port,
    CA = certs.bundle, CERT = certs.cert, KEY = certs.key,
    ROGUE_CERT = certs.rogue_cert, ROGUE_KEY = certs.rogue_key,
    OTHER_CERT = certs.other_cert, OTHER_KEY = certs.other_key,
  }
  local env_lines, env_cmd = {}, {}
  for k, v in pairs(opts.env or {}) do
    assert(tostring(k):match("^[%a_][%w_]*$"), "bad env name " .. tostring(k))
    env_lines[#env_lines + 1] = "env " .. k .. ";"
    env_cmd[#env_cmd + 1] = q(k .. "=" .. tostring(v))
  end
  vars.ENV_DIRECTIVES = table.concat(env_lines, "\n")
  local conf = CONF:gsub("%${([%w_]+)}", function(k) return tostring(assert(vars[k], k)) end)
  self.conf = prefix .. "/conf/nginx.conf"
  write(self.conf, conf)
  local cmd = ("env -u LD_PRELOAD %s nginx -p %s -c %s -e %s"):format(
    table.concat(env_cmd, " "), q(prefix .. "/"), q(self.conf), q(prefix .. "/logs/error.log"))
  if not sh(cmd .. " >" .. q(prefix .. "/logs/start.out") .. " 2>&1") then
    error("nginx failed to start:\n" .. (read(prefix .. "/logs/start.out") or "")
      .. (read(prefix .. "/logs/error.log") or ""))
  end
  -- wait until it answers
  for _ = 1, 100 do
    local body = http_get(self.url .. "/t/ping")
    if body == "pong\n" then return self end
    socket.sleep(0.05)
  end
  local log = self:log()
  self:stop()
  error("nginx did not answer on " .. self.url .. "\n" .. (log or ""))
end

function Server:log()
  return read(self.prefix .. "/logs/error.log")
end

function Server:pid()
  local s = read(self.prefix .. "/logs/nginx.pid")
  return s and tonumber(s:match("%d+"))
end

--- Stops nginx (SIGQUIT to its master, by pid) and removes the prefix.
function Server:stop(keep)
  local pid = self:pid()
  if pid then
    sh("kill -QUIT " .. pid .. " 2>/dev/null")
    for _ = 1, 100 do
      if not sh("kill -0 " .. pid .. " 2>/dev/null") then break end
      socket.sleep(0.02)
    end
  end
  if not keep and self.prefix and self.prefix:match("^/tmp/plink%-nginx%.") then
    sh("rm -rf " .. q(self.prefix))
  end
  if self.silent_dns then self.silent_dns:close(); self.silent_dns = nil end
end

return M
