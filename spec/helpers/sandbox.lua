--- Test harness for the sandbox: start one on a free port, make TLS certs.
--
--   local helper = require "helpers.sandbox"
--   local sb = helper.start()            -- raises a clear error if nginx can't start
--   local sb = helper.start{ tls = helper.tls_cert() }
--   local sb = helper.start_small{ portone_stats = "128k" }  -- a dict to fill
--   ... sb.url, sb:faults("create", {{status = 503}}), sb:stats() ...
--   sb:stop()
--
-- helper.post / helper.put / helper.get do raw HTTP over luasocket (plain http).
local sandbox = require "portone.sandbox"
local cjson = require "cjson"

local M = {}

M.API = "/api/supplements/v1/link/payment"

--- Starts a sandbox; raises with nginx's error log when it cannot start.
function M.start(opts)
  local sb, err = sandbox.start(opts)
  if not sb then
    error("sandbox: could not start nginx (nginx + libnginx-mod-http-lua or OpenResty"
      .. " needed):\n" .. tostring(err), 2)
  end
  return sb
end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function run(cmd)
  local a = os.execute(cmd)
  return a == true or a == 0
end

local cert_cache

--- Starts a sandbox whose named shared dicts have other sizes than the
-- generated config gives them ({portone_stats = "128k"}): a spec that must
-- fill a dict fills a small one. Raises as `start` does.
function M.start_small(sizes, opts)
  local config = sandbox.config
  sandbox.config = function(o)
    local conf = config(o)
    for name, size in pairs(sizes) do
      local n
      local decl = "lua_shared_dict " .. name .. " "
      conf, n = conf:gsub(decl .. "%w+;", decl .. size .. ";")
      assert(n == 1, "no lua_shared_dict " .. name .. " in the generated config")
    end
    return conf
  end
  local ok, sb = pcall(M.start, opts)
  sandbox.config = config
  if not ok then error(sb, 2) end
  return sb
end

--- A self-signed certificate for 127.0.0.1 and localhost (made once per
-- process with the openssl CLI). Returns {cert=, key=, dir=}; `cert` also
-- serves as the CA file for clients (`cainfo`, `curl --cacert`).
function M.tls_cert()
  if cert_cache then return cert_cache end
  local p = io.popen("mktemp -d \"${TMPDIR:-/tmp}/portone-certs.XXXXXXXX\"")
  local dir = p:read("*l"); p:close()
  assert(dir and dir ~= "", "mktemp failed")
  local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
  local cmd = "env -u LD_PRELOAD openssl req -x509 -newkey rsa:2048 -nodes -days 2"
    .. " -subj /CN=127.0.0.1 -addext 'subjectAltName=IP:127.0.0.1,DNS:localhost'"
    .. " -addext basicConstraints=critical,CA:TRUE"
    .. " -keyout " .. quote(key) .. " -out " .. quote(cert) .. " >/dev/null 2>&1"
  assert(run(cmd), "openssl req failed: " .. cmd)
  cert_cache = { cert = cert, key = key, dir = dir }
  return cert_cache
end

--- Another self-signed certificate whose names do not match 127.0.0.1 or
-- localhost (for host-name-mismatch specs).
function M.wrong_host_cert()
  local c = M.tls_cert()
  local cert, key = c.dir .. "/wrong.pem", c.dir .. "/wrong-key.pem"
  if not io.open(cert) then
    assert(run("env -u LD_PRELOAD openssl req -x509 -newkey rsa:2048 -nodes -days 2"
      .. " -subj /CN=wrong.example -addext 'subjectAltName=DNS:wrong.example'"
      .. " -keyout " .. quote(key) .. " -out " .. quote(cert) .. " >/dev/null 2>&1"))
  end
  return { cert = cert, key = key, dir = c.dir }
end

--- Removes the certificate directory (call from a final teardown if wanted).
function M.cleanup_certs()
  if cert_cache then run("rm -rf " .. quote(cert_cache.dir)); cert_cache = nil end
end

--- A valid create body (double-encoded) with `over` merged into payment_info.
function M.create_body(over, expired_at)
  local info = {
    title = "Sandbox test", user_code = "imp12345678", amount = 10000,
    merchant_uid = "order-1", name = "Item", currency = "KRW", buyer_tel = "010-1234-5678",
    pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "Card" } },
  }
  for k, v in pairs(over or {}) do info[k] = v end
  return '{"payment_info":' .. cjson.encode(cjson.encode(info)) .. ',"expired_at":'
    .. string.format("%d", expired_at or (os.time() + 3600)) .. "}"
end

--- Raw request to the sandbox's API port (plain http only).
function M.request(sb, method, path, body, headers)
  headers = headers or {}
  if body and not headers["Content-Type"] then headers["Content-Type"] = "application/json;charset=UTF-8" end
  return sandbox.http(sb.host, sb.port, method, path, body, headers)
end

return M
