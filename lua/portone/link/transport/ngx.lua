--- Transport over nginx cosockets (OpenResty, or nginx + lua-nginx-module).
-- A blocking libcurl call inside nginx freezes the whole worker: every other
-- request on it waits. This transport speaks HTTP/1.1 itself over
-- `ngx.socket.tcp`, so a request only suspends the Lua thread that made it.
--
-- Interface (docs/internals.md, "Transport interface"):
--
--     local t = require("portone.link.transport.ngx").new(opts)
--     t:request(method, url, headers, body) --> status, body, resp_headers | nil, info
--     t:close()
--     t.sleep(seconds)                      -- ngx.sleep
--     require("portone.link.transport.ngx").available() --> true | false, reason, in_nginx
--
-- Caveats, each on purpose:
--  * TLS is always verified, against the CAs of nginx's
--    `lua_ssl_trusted_certificate` directive (the `cainfo` option cannot
--    reach a cosocket; set the directive instead). SNI is the URL's host.
--  * Host names go through nginx's `resolver` directive; without one only IP
--    addresses connect. "localhost" is mapped to 127.0.0.1 (RFC 6761) so
--    that the sandbox works with no resolver; SNI and verification still use
--    the name "localhost".
--  * Connections return to the worker's cosocket pool (setkeepalive), keyed
--    by host, port and TLS, only after a complete, well-framed response; any
--    error closes the socket.
--  * Like libcurl (DESIGN §4), a request on a *reused* connection that dies
--    before the first response byte (the server closed an idle keep-alive
--    connection just as we reused it) is sent again on another connection,
--    up to 5 sends in all. That is the only re-send made here; a create is
--    at-least-once in that window, exactly as over libcurl.
--  * No proxy support: a configured proxy is an error, never silently
--    bypassed.
local M = {}

local T = {}
T.__index = T

-- Phases in which lua-nginx-module lets a handler use cosockets and ngx.sleep.
local COSOCKET_PHASES = {
  rewrite = true, server_rewrite = true, access = true, content = true,
  timer = true, ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true,
}
--- The nginx phases where cosockets (and `ngx.sleep`) work: rewrite,
-- server_rewrite, access, content, timer, ssl_cert, ssl_session_fetch,
-- ssl_client_hello (`COSOCKET_PHASES[phase] == true`).
M.COSOCKET_PHASES = COSOCKET_PHASES

local DEFAULTS = {
  timeout = 30,               -- seconds, whole request
  connect_timeout = 10,       -- seconds
  max_response_bytes = 1024 * 1024,
  keepalive_timeout = 10,     -- seconds an idle pooled connection is kept
  pool_size = 64,             -- idle connections per pool (per worker)
}
local MAX_HEADER_BYTES = 64 * 1024

local function in_nginx()
  return type(ngx) == "table" and type(ngx.get_phase) == "function"
end

--- Whether cosockets work here.
-- @return `true`, or `false, reason, in_nginx` where `in_nginx` says the code
-- does run inside nginx but in a phase without cosockets (the client must
-- then fail rather than fall back to blocking curl).
function M.available()
  if not in_nginx() then
    return false, "not running inside nginx (lua-nginx-module)", false
  end
  local phase = ngx.get_phase()
  if COSOCKET_PHASES[phase] then return true end
  return false, ("cannot make a request in nginx's '%s' phase: cosockets are not "
    .. "available there, and a blocking call would freeze the worker. Run the "
    .. "call from a timer instead, e.g. ngx.timer.at(0, function(premature) "
    .. "client:create(req) end)"):format(phase), true
end

-- ngx.sleep raises outside the cosocket phases; a back-off there is skipped
-- (the request itself fails with the phase error first anyway).
local function sleep(seconds)
  if seconds and seconds > 0 and COSOCKET_PHASES[ngx.get_phase()] then
    ngx.sleep(seconds)
  end
end

local function check_num(opts, name)
  local v = opts[name]
  if v == nil then return DEFAULTS[name] end
  if type(v) ~= "number" or v <= 0 then
    error(("portone.link ngx transport: option '%s' must be a positive number"):format(name), 3)
  end
  return v
end

--- Makes a transport. Options are the client's: `timeout`, `connect_timeout`
-- (seconds), `max_response_bytes`, plus `keepalive_timeout` (seconds) and
-- `pool_size`. `proxy` is refused; `cainfo` is ignored (see the caveats).
-- @tparam[opt] table opts the options (defaults: `timeout` 30, `connect_timeout`
--   10, `max_response_bytes` 1 MiB, `keepalive_timeout` 10, `pool_size` 64)
-- @return the transport (raises when `proxy` is set)
function M.new(opts)
  opts = opts or {}
  if opts.proxy ~= nil and opts.proxy ~= false and opts.proxy ~= "" then
    error("portone.link ngx transport: 'proxy' is not supported inside nginx", 2)
  end
  if opts.cainfo and not M._warned_cainfo and in_nginx() then
    M._warned_cainfo = true
    ngx.log(ngx.WARN, "portone.link: the 'cainfo' option does not reach cosockets; ",
      "TLS is verified against lua_ssl_trusted_certificate (add the CA there)")
  end
  return setmetatable({
    timeout = check_num(opts, "timeout"),
    connect_timeout = check_num(opts, "connect_timeout"),
    max_response_bytes = check_num(opts, "max_response_bytes"),
    keepalive_timeout = check_num(opts, "keepalive_timeout"),
    pool_size = check_num(opts, "pool_size"),
    sleep = sleep,
    -- counters for tests and the benchmark
    connects = 0, reuses = 0,
  }, T)
end

--- Splits an http(s) URL into scheme, host, port, path (with query), Host header.
local function parse_url(url)
  local scheme, rest = url:match("^(https?)://(.*)$")
  if not scheme then return nil, "only http and https URLs are supported" end
  local authority, path = rest:match("^([^/?#]*)([^#]*)")
  if authority == "" or authority:find("@", 1, true) then
    return nil, "bad host in URL"
  end
  local host, port = authority:match("^(%[[%x:.]+%]):?(%d*)$")
  if not host then host, port = authority:match("^([%w.-]+):?(%d*)$") end
  if not host then return nil, "bad host in URL" end
  local default = scheme == "https" and 443 or 80
  port = port ~= "" and tonumber(port) or default
  if port < 1 or port > 65535 then return nil, "bad port in URL" end
  if path == "" then path = "/" elseif path:sub(1, 1) == "?" then path = "/" .. path end
  local host_header = port == default and host or (host .. ":" .. port)
  return scheme, host:lower(), port, path, host_header
end
M._parse_url = parse_url

local function fail(kind, message, sent, extra)
  local info = { kind = kind, message = message, sent = sent and true or false, too_large = false }
  if extra then for k, v in pairs(extra) do info[k] = v end end
  return nil, info
end

-- kind of a cosocket error string
local function err_kind(err)
  return err == "timeout" and "timeout" or "transport"
end

local function ms(s) return math.max(1, math.floor(s * 1000 + 0.5)) end

-- Remaining time before the deadline as a read/send timeout, or nil when spent.
local function set_deadline_timeout(self, sock, deadline)
  local left = deadline - ngx.now()
  if left <= 0 then return nil end
  sock:settimeouts(ms(self.connect_timeout), ms(left), ms(left))
  return true
end

--- Reads the header block (status line + fields) into a table.
-- Returns resp or nil, err, got_bytes. Line by line: a header block has a
-- handful of lines, and the count and total size are capped.
local MAX_HEADER_LINES = 100
local function read_head(self, sock, deadline)
  if not set_deadline_timeout(self, sock, deadline) then return nil, "timeout", false end
  local line, err, partial = sock:receive("*l")
  if not line then return nil, err, partial ~= nil and partial ~= "" end
  local version, status = line:match("^HTTP/(%d%.%d) (%d%d%d)")
  if not version then return nil, "malformed HTTP status line", true end
  local headers, n = {}, #line
  for _ = 1, MAX_HEADER_LINES do
    line, err = sock:receive("*l")
    if not line then return nil, err, true end
    if line == "" or line == "\r" then
      return { version = version, status = tonumber(status), headers = headers }
    end
    n = n + #line
    if n > MAX_HEADER_BYTES then break end
    local name, value = line:match("^([^:%s]+):[ \t]*(.-)[ \t\r]*$")
    if name then
      name = name:lower()
      local old = headers[name]
      headers[name] = old and (old .. ", " .. value) or value
    end
  end
  return nil, "response header too large", true
end

local function read_line(self, sock, deadline)
  local reader = sock:receiveuntil("\r\n")
  if not set_deadline_timeout(self, sock, deadline) then return nil, "timeout" end
  local line, err = reader(1024)
  if not line then return nil, err or "malformed chunked body" end
  -- the line must end within 1024 bytes: the next call reports the pattern
  local more, err2 = reader(1)
  if more ~= nil then return nil, "malformed chunked body" end
  if err2 then return nil, err2 end
  return line
end

local function too_large(self)
  return "response body larger than max_response_bytes (" .. self.max_response_bytes .. ")"
end

-- Body readers return body, keepalive_ok | nil, err, is_too_large.
local function read_length(self, sock, deadline, len)
  if len > self.max_response_bytes then return nil, too_large(self), true end
  if len == 0 then return "", true end
  if not set_deadline_timeout(self, sock, deadline) then return nil, "timeout" end
  local body, err = sock:receive(len)
  if not body then return nil, err end
  return body, true
end

local function read_chunked(self, sock, deadline)
  local parts, total = {}, 0
  while true do
    local line, err = read_line(self, sock, deadline)
    if not line then return nil, err end
    local hex = line:match("^%s*(%x+)%s*;?.*$")
    if not hex or #hex > 8 then return nil, "malformed chunked body" end
    local size = tonumber(hex, 16)
    if size == 0 then
      -- trailer fields, up to the empty line
      repeat
        line, err = read_line(self, sock, deadline)
        if not line then return nil, err end
      until line == ""
      return table.concat(parts), true
    end
    total = total + size
    if total > self.max_response_bytes then return nil, too_large(self), true end
    if not set_deadline_timeout(self, sock, deadline) then return nil, "timeout" end
    local data
    data, err = sock:receive(size)
    if not data then return nil, err end
    parts[#parts + 1] = data
    if not set_deadline_timeout(self, sock, deadline) then return nil, "timeout" end
    local crlf
    crlf, err = sock:receive(2)
    if not crlf then return nil, err end
    if crlf ~= "\r\n" then return nil, "malformed chunked body" end
  end
end

local function read_to_close(self, sock, deadline)
  local parts, total = {}, 0
  while true do
    if not set_deadline_timeout(self, sock, deadline) then return nil, "timeout" end
    local data, err = sock:receiveany(16384)
    if not data then
      if err == "closed" then return table.concat(parts), false end
      return nil, err
    end
    total = total + #data
    if total > self.max_response_bytes then return nil, too_large(self), true end
    parts[#parts + 1] = data
  end
end

local function wants_close(resp)
  local conn = resp.headers["connection"]
  conn = conn and conn:lower() or ""
  if conn:find("close", 1, true) then return true end
  if resp.version == "1.0" and not conn:find("keep-alive", 1, true) then return true end
  return false
end

local function build_request(method, path, host_header, headers, body)
  local out = { method, " ", path, " HTTP/1.1\r\nHost: ", host_header, "\r\n" }
  for i = 1, #headers do
    local h = headers[i]
    if type(h) ~= "string" or h:find("[\r\n]") or not h:find(":", 1, true) then
      return nil, "bad request header (CR/LF or no colon)"
    end
    local lname = h:match("^([^:]*)"):lower()
    if lname ~= "host" and lname ~= "content-length" and lname ~= "transfer-encoding"
      and lname ~= "connection" then
      out[#out + 1] = h
      out[#out + 1] = "\r\n"
    end
  end
  if body ~= nil or method == "POST" or method == "PUT" or method == "PATCH" then
    out[#out + 1] = "Content-Length: " .. #(body or "") .. "\r\n"
  end
  out[#out + 1] = "\r\n"
  if body and body ~= "" then out[#out + 1] = body end
  return out
end

-- Opens (or takes from the pool) a connection; TLS handshake on fresh ones.
local function connect(self, scheme, host, port, pool, deadline)
  local sock = ngx.socket.tcp()
  local left = deadline - ngx.now()
  local cto = math.min(self.connect_timeout, math.max(left, 0.001))
  sock:settimeouts(ms(cto), ms(math.max(left, 0.001)), ms(math.max(left, 0.001)))
  local addr = host == "localhost" and "127.0.0.1" or host
  local ok, err = sock:connect(addr, port, { pool = pool, pool_size = self.pool_size })
  if not ok then
    if err and err:find("no resolver", 1, true) then
      err = err .. " (add a 'resolver' directive to nginx.conf)"
    end
    return nil, "connect to " .. host .. ":" .. port .. " failed: " .. tostring(err), err_kind(err)
  end
  local reused = sock:getreusedtimes() > 0
  if reused then
    self.reuses = self.reuses + 1
  else
    self.connects = self.connects + 1
    if scheme == "https" then
      local sni = host:match("^%[") and nil or host
      -- A host-name mismatch raises inside lua-resty-core 0.1.25 instead of
      -- returning an error (DESIGN §6): hence the pcall.
      local pok, hs, herr = pcall(sock.sslhandshake, sock, false, sni, true)
      if not pok or not hs then
        local why = pok and tostring(herr) or "certificate does not match host " .. host
        if not pok then
          ngx.log(ngx.INFO, "portone.link: sslhandshake raised: ", tostring(hs))
        end
        pcall(sock.close, sock)
        if why:find("^20:") or why:find("local issuer", 1, true) then
          why = why .. " (is lua_ssl_trusted_certificate set in nginx.conf?)"
        end
        return nil, "TLS handshake with " .. host .. " failed: " .. why, err_kind(herr)
      end
    end
  end
  return sock, reused
end

-- One exchange on one connection. Returns status, body, headers | nil, info
-- | nil, nil when a reused connection died before any response byte.
local function exchange(self, sock, reused, req, deadline)
  local bytes, err = sock:send(req)
  if not bytes then
    sock:close()
    if reused and err ~= "timeout" then return nil, nil end
    return fail(err_kind(err), "send failed: " .. tostring(err), true)
  end
  local resp, got
  repeat
    resp, err, got = read_head(self, sock, deadline)
    if not resp then
      sock:close()
      if reused and not got and (err == "closed" or (err and err:find("reset", 1, true))) then
        return nil, nil
      end
      return fail(err_kind(err), "reading the response failed: " .. tostring(err), true)
    end
  until resp.status >= 200 or resp.status == 101

  local h = resp.headers
  local body, keep, big
  local te = h["transfer-encoding"]
  if resp.status == 204 or resp.status == 304 then
    body, keep = "", true
  elseif te and te:lower():find("chunked", 1, true) then
    body, keep, big = read_chunked(self, sock, deadline)
  elseif h["content-length"] then
    local len = tonumber(h["content-length"]:match("^%d+$"))
    if not len then
      sock:close()
      return fail("transport", "malformed Content-Length", true)
    end
    body, keep, big = read_length(self, sock, deadline, len)
  else
    body, keep, big = read_to_close(self, sock, deadline)
  end
  if not body then
    sock:close()
    local msg = big and keep or ("reading the response body failed: " .. tostring(keep))
    return fail(big and "transport" or err_kind(keep), msg, true, { too_large = big and true or false })
  end
  if keep and not wants_close(resp) then
    local ok = sock:setkeepalive(ms(self.keepalive_timeout))
    if not ok then sock:close() end
  else
    sock:close()
  end
  return resp.status, body, h
end

--- The cosocket pool name for an origin: host, port and TLS.
function M.pool_name(scheme, host, port)
  return "portone.link:" .. host .. ":" .. port .. (scheme == "https" and ":tls" or "")
end

--- Closes the idle pooled connections to `url`'s origin (tests use it to
-- start from a known state; nothing else needs it).
function M.drain_pool(url)
  local scheme, host, port = parse_url(url)
  if not scheme then return nil, host end
  local n = 0
  for _ = 1, 1000 do
    local sock = ngx.socket.tcp()
    sock:settimeouts(1000, 1000, 1000)
    local ok = sock:connect(host == "localhost" and "127.0.0.1" or host, port,
      { pool = M.pool_name(scheme, host, port) })
    if not ok then break end
    local reused = sock:getreusedtimes() > 0
    sock:close()
    if not reused then break end
    n = n + 1
  end
  return n
end

--- Sends one request; see the module comment for the results.
function T:request(method, url, headers, body)
  local ok, why = M.available()
  if not ok then return fail("transport", why, false, { phase = true, permanent = true }) end
  local scheme, host, port, path, host_header = parse_url(url)
  if not scheme then return fail("transport", host, false, { permanent = true }) end
  local pool = M.pool_name(scheme, host, port)
  local req, berr = build_request(method, path, host_header, headers or {}, body)
  if not req then return fail("transport", berr, false, { permanent = true }) end
  local deadline = ngx.now() + self.timeout
  local resent = false
  for _ = 1, 5 do
    local sock, reused, kind = connect(self, scheme, host, port, pool, deadline)
    if not sock then
      -- after a stale reused connection the request may have reached the server
      return fail(kind, reused, resent)
    end
    local status, rbody, rheaders = exchange(self, sock, reused, req, deadline)
    if status then return status, rbody, rheaders end
    if rbody then return nil, rbody end
    -- a reused connection died before any response byte: send once more
    resent = true
  end
  return fail("transport", "connection closed before any response", true)
end

--- Pooled connections belong to the worker's cosocket pool; nothing to free.
function T:close()
  self.closed = true
end

return M
