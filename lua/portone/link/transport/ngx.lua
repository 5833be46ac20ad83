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
--    up to `max_sends` sends in all (default 2; the client passes 1 once a
--    call used its one re-send). That is the only re-send made here.
--  * One deadline per request (`timeout`): every read is bounded by the
--    time left, so a body that trickles in cannot outlast it.
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
-- The header block's caps are libcurl's, so that one answer reads the same
-- over both transports: 256 KiB in all (PLINK_HTTP_HEADER_MAX, counted per
-- response) and 100 KiB a line (CURL_MAX_HTTP_HEADER); past either the
-- answer is `too_large`, which no retry can fix.
local MAX_HEADER_BYTES = 256 * 1024
local MAX_HEADER_LINE = 100 * 1024
local HEADER_TOO_LARGE = "response header too large (over " .. MAX_HEADER_BYTES
  .. " bytes, or a line over " .. MAX_HEADER_LINE .. ")"

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
-- A URL with white space or a control character is refused, as libcurl
-- refuses it: its CR/LF would end the request line and start headers.
local function parse_url(url)
  if type(url) ~= "string" then return nil, "the URL must be a string" end
  if url:find("[%s%c]") then return nil, "URL contains white space, CR/LF or other control characters" end
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
-- nginx's resolver reports a lookup that ran out of resolver_timeout as
-- "... could not be resolved (110: Operation timed out)" (ETIMEDOUT's
-- number differs between systems): a timeout too.
local function err_kind(err)
  if err == "timeout" then return "timeout" end
  if type(err) == "string" and err:find("could not be resolved %(%d+: Operation timed out%)") then
    return "timeout"
  end
  return "transport"
end

local function ms(s) return math.max(1, math.floor(s * 1000 + 0.5)) end

-- Reading under one deadline per attempt. nginx's socket timeouts count per
-- read operation and restart whenever data arrives, so a server that
-- trickles a byte at a time could hold `receive(n)` or `receive("*l")`
-- open for ever. Every read here is a `receiveany` (it returns as soon as
-- any data is there) with the time left as its timeout, and the deadline
-- is checked again between reads.
local Reader = {}
Reader.__index = Reader

-- `buf` holds what was read and not yet taken from `pos` on: taking a line
-- or a few bytes moves `pos`, it does not copy the rest of the buffer.
local function new_reader(self, sock, deadline)
  return setmetatable({ t = self, sock = sock, deadline = deadline, buf = "", pos = 1, got = false },
    Reader)
end

-- One read within the deadline: data, or nil, err.
function Reader:more(max)
  local left = self.deadline - ngx.now()
  if left <= 0 then return nil, "timeout" end
  self.sock:settimeouts(ms(self.t.connect_timeout), ms(left), ms(left))
  local data, err = self.sock:receiveany(max or 16384)
  if not data then return nil, err end
  self.got = true
  return data
end

-- Bytes read and not yet taken.
function Reader:left()
  return #self.buf - self.pos + 1
end

-- Takes every byte read and not yet taken.
function Reader:rest()
  local s = self.buf:sub(self.pos)
  self.buf, self.pos = "", 1
  return s
end

-- A line (LF-terminated; a CR before the LF dropped) of at most `limit`
-- bytes: line, or nil, err (`too_long` when the line passes `limit`).
function Reader:line(limit, too_long)
  local parts, n = nil, 0
  while true do
    local buf, pos = self.buf, self.pos
    local i = buf:find("\n", pos, true)
    if i then
      if n + i - pos > limit then return nil, too_long end
      self.pos = i + 1
      if not parts then
        -- the usual case: the whole line is in the buffer
        if i > pos and buf:byte(i - 1) == 13 then i = i - 1 end
        return buf:sub(pos, i - 1)
      end
      parts[#parts + 1] = buf:sub(pos, i - 1)
      return (table.concat(parts):gsub("\r$", ""))
    end
    n = n + #buf - pos + 1
    if n > limit then return nil, too_long end
    parts = parts or {}
    parts[#parts + 1] = self:rest()
    local data, err = self:more()
    if not data then return nil, err end
    self.buf = data
  end
end

-- Exactly n bytes: data, or nil, err.
function Reader:bytes(n)
  local buf, pos = self.buf, self.pos
  if #buf - pos + 1 >= n then
    self.pos = pos + n
    return buf:sub(pos, pos + n - 1)
  end
  local parts = { self:rest() }
  local have = #parts[1]
  while have < n do
    -- receiveany(max) never returns more than max
    local data, err = self:more(math.min(n - have, 65536))
    if not data then return nil, err end
    parts[#parts + 1] = data
    have = have + #data
  end
  return table.concat(parts)
end

--- Reads the header block (status line + fields) into a table.
-- Returns resp, or nil, err, got_bytes (whether any response byte came).
-- The size of each line and of the whole block is capped (HEADER_TOO_LARGE).
local function read_head(rd)
  local line, err = rd:line(MAX_HEADER_LINE, HEADER_TOO_LARGE)
  if not line then return nil, err, rd.got end
  local version, status = line:match("^HTTP/(%d%.%d) (%d%d%d)")
  if not version then return nil, "malformed HTTP status line", true end
  -- a field sent more than once is joined with ", " at the end (values
  -- gathered in a list: concatenating as they come is quadratic)
  local headers, multi, n = {}, nil, #line + 2
  while true do
    line, err = rd:line(math.min(MAX_HEADER_LINE, MAX_HEADER_BYTES - n), HEADER_TOO_LARGE)
    if not line then return nil, err, true end
    if line == "" then
      if multi then
        for name, list in pairs(multi) do headers[name] = table.concat(list, ", ") end
      end
      return { version = version, status = tonumber(status), headers = headers }
    end
    n = n + #line + 2
    -- linear: a lazy `(.-)` before a trailing `%s*$` is quadratic on a
    -- long value full of spaces
    local name, value = line:match("^([^:%s]+):(.*)$")
    if name then
      local a, b = value:find("[^ \t]") or (#value + 1), #value
      while b >= a do
        local c = value:byte(b)
        if c ~= 32 and c ~= 9 and c ~= 13 then break end
        b = b - 1
      end
      value = value:sub(a, b)
      name = name:lower()
      local old = headers[name]
      if old == nil then
        headers[name] = value
      else
        multi = multi or {}
        local list = multi[name]
        if not list then list = { old }; multi[name] = list end
        list[#list + 1] = value
      end
    end
  end
end

local function too_large(self)
  return "response body larger than max_response_bytes (" .. self.max_response_bytes .. ")"
end

-- Body readers return body, keepalive_ok | nil, err, is_too_large.
local function read_length(self, rd, len)
  if len > self.max_response_bytes then return nil, too_large(self), true end
  if len == 0 then return "", true end
  local body, err = rd:bytes(len)
  if not body then return nil, err end
  return body, true
end

local function read_chunk_line(rd)
  local line, err = rd:line(1024, "malformed chunked body")
  if not line then return nil, err or "malformed chunked body" end
  return line
end

-- Chunk sizes as libcurl reads them: leading zeros allowed, at most 16
-- hex digits; the CRLF after a chunk's data may be a bare LF.
local function read_chunked(self, rd)
  local parts, total = {}, 0
  while true do
    local line, err = read_chunk_line(rd)
    if not line then return nil, err end
    local hex = line:match("^%s*(%x+)%s*;?.*$")
    hex = hex and hex:match("^0*(.-)$")
    if not hex or #hex > 16 then return nil, "malformed chunked body" end
    if hex == "" then
      -- the last chunk; trailer fields, up to the empty line
      repeat
        line, err = read_chunk_line(rd)
        if not line then return nil, err end
      until line == ""
      return table.concat(parts), true
    end
    total = total + tonumber(hex, 16)
    if total > self.max_response_bytes then return nil, too_large(self), true end
    local data
    data, err = rd:bytes(tonumber(hex, 16))
    if not data then return nil, err end
    line, err = read_chunk_line(rd)
    if not line then return nil, err end
    if line ~= "" then return nil, "malformed chunked body" end
    parts[#parts + 1] = data
  end
end

local function read_to_close(self, rd)
  local parts = { rd:rest() }
  local total = #parts[1]
  if total > self.max_response_bytes then return nil, too_large(self), true end
  while true do
    local data, err = rd:more()
    if not data then
      if err == "closed" then return table.concat(parts), false end
      return nil, err
    end
    total = total + #data
    if total > self.max_response_bytes then return nil, too_large(self), true end
    parts[#parts + 1] = data
  end
end

-- The Content-Length: digits; a field sent more than once (joined with
-- ", ") counts when every copy says the same, as libcurl reads it
-- (differing ones are refused: RFC 9112 6.3; libcurl takes the last).
local function content_length(v)
  local len
  for part in (v .. ","):gmatch("([^,]*),") do
    local n = tonumber(part:match("^[ \t]*(%d+)[ \t]*$"))
    if not n or (len and n ~= len) then return nil end
    len = n
  end
  return len
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
  local t0 = ngx.now()
  local left = deadline - t0
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
      -- connect_timeout bounds TCP and TLS together, as libcurl's does:
      -- the handshake (timed by the socket's connect timeout) gets the rest
      local now = ngx.now()
      local rest = cto - (now - t0)
      if rest <= 0 then
        sock:close()
        return nil, "connect to " .. host .. ":" .. port .. " failed: timeout", "timeout"
      end
      sock:settimeouts(ms(rest), ms(math.max(deadline - now, 0.001)), ms(math.max(deadline - now, 0.001)))
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
        -- A certificate that does not verify (an X509 "NN: reason", a name
        -- mismatch) will not verify on a retry either: permanent.
        local cert = not pok or why:find("^%d+:") ~= nil or why:lower():find("certificate", 1, true) ~= nil
          or why:lower():find("verify", 1, true) ~= nil
        if why:find("^20:") or why:find("local issuer", 1, true) then
          why = why .. " (is lua_ssl_trusted_certificate set in nginx.conf?)"
        end
        return nil, "TLS handshake with " .. host .. " failed: " .. why, err_kind(herr), cert
      end
    end
  end
  return sock, reused
end

-- One exchange on one connection. Returns status, body, headers | nil, info
-- | nil, nil when a reused connection died before any response byte.
local function exchange(self, sock, reused, method, req, deadline)
  local left = deadline - ngx.now()
  if left <= 0 then
    sock:close()
    return fail("timeout", "timeout before sending", false)
  end
  sock:settimeouts(ms(self.connect_timeout), ms(left), ms(left))
  local bytes, err = sock:send(req)
  if not bytes then
    sock:close()
    if reused and err ~= "timeout" then return nil, nil end
    return fail(err_kind(err), "send failed: " .. tostring(err), true)
  end
  local rd = new_reader(self, sock, deadline)
  local resp, got
  repeat
    resp, err, got = read_head(rd)
    if not resp then
      sock:close()
      if reused and not got and (err == "closed" or (err and err:find("reset", 1, true))) then
        return nil, nil
      end
      local big = err == HEADER_TOO_LARGE
      return fail(err_kind(err), "reading the response failed: " .. tostring(err), true,
        big and { too_large = true } or nil)
    end
  until resp.status >= 200 or resp.status == 101

  local h = resp.headers
  local body, keep, big
  local te = h["transfer-encoding"]
  if method == "HEAD" or resp.status == 204 or resp.status == 304 then
    body, keep = "", true
  elseif te and te:lower():find("chunked", 1, true) then
    body, keep, big = read_chunked(self, rd)
  elseif h["content-length"] then
    local len = content_length(h["content-length"])
    if not len then
      sock:close()
      return fail("transport", "malformed Content-Length", true)
    end
    body, keep, big = read_length(self, rd, len)
  else
    body, keep, big = read_to_close(self, rd)
  end
  if not body then
    sock:close()
    local msg = big and keep or ("reading the response body failed: " .. tostring(keep))
    return fail(big and "transport" or err_kind(keep), msg, true, { too_large = big and true or false })
  end
  -- bytes past the answer: the connection is out of step, do not pool it
  if keep and rd:left() == 0 and not wants_close(resp) then
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
-- `max_sends` (default 2) bounds the sends: a request whose reused
-- connection died before any response byte is sent again on another
-- connection only while fewer than `max_sends` sends were made. Returns
-- `status, body, headers, sends` or `nil, info` (with `info.sends`).
function T:request(method, url, headers, body, max_sends)
  max_sends = max_sends or 2
  if self.closed then
    return fail("transport", "the transport is closed", false, { sends = 0 })
  end
  local ok, why = M.available()
  if not ok then return fail("transport", why, false, { phase = true, permanent = true, sends = 0 }) end
  local scheme, host, port, path, host_header = parse_url(url)
  if not scheme then return fail("transport", host, false, { permanent = true, sends = 0 }) end
  local pool = M.pool_name(scheme, host, port)
  local req, berr = build_request(method, path, host_header, headers or {}, body)
  if not req then return fail("transport", berr, false, { permanent = true, sends = 0 }) end
  local deadline = ngx.now() + self.timeout
  local sends = 0
  while true do
    local sock, reused, kind, cert = connect(self, scheme, host, port, pool, deadline)
    if not sock then
      -- after a stale reused connection the request may have reached the server
      return fail(kind, reused, sends > 0, { sends = sends, permanent = cert or nil })
    end
    sends = sends + 1
    local status, rbody, rheaders = exchange(self, sock, reused, method, req, deadline)
    if status then return status, rbody, rheaders, sends end
    if rbody then
      rbody.sends = rbody.sent and sends or sends - 1
      -- a failure before this send still follows the earlier one (a dead
      -- reused connection): the request may have reached the server
      if rbody.sends > 0 then rbody.sent = true end
      return nil, rbody
    end
    -- a reused connection died before any response byte
    if sends >= max_sends then
      return fail("transport", ("the connection closed before any response after the "
        .. "request was sent %d time%s (a reused keep-alive connection died); not sent "
        .. "again"):format(sends, sends == 1 and "" or "s"), true, { sends = sends })
    end
  end
end

--- Pooled connections belong to the worker's cosocket pool; nothing to
-- free. Later requests fail unsent, as on the curl transport.
function T:close()
  self.closed = true
end

return M
