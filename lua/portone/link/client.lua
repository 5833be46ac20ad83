--- The link client: create and deactivate payment links over a transport.
--
--    local client = link.new{ token = "...", timeout = 10 }
--    local res, err = client:create(req)        -- {url =, id =, status = 200}
--    local ok, err = client:deactivate(res.url)  -- or res.id
--    client:close()
--
-- Every failure returns `nil, err` (see `portone.link.errors`): `err.kind` is
-- `validation`, `transport`, `timeout`, `http`, `api` or `decode`, and
-- `err.attempts` (and a create's `res.attempts`) says how many times the
-- request went out, every send counted. Wrong argument or option
-- types are programmer errors and raise.
--
-- A closed client returns `nil, err` with `kind = "transport"` and the message
-- "client is closed" (one of the contract's kinds; `retryable = false`).
--
-- Retries follow `portone.link.retry` (the "Errors and retries" guide): a
-- create is re-sent only when it surely did not reach the server, or on
-- 429/503. The transports re-send by themselves once a *reused* keep-alive
-- connection turns out dead before any response byte arrived; `_run` allows
-- that once per call, so a create goes out at most twice without an answer
-- in between, and at most `retries + 2` times in all (README "Sends per call").
-- @module portone.link.client
local core = require "portone.link.core"
local errors = require "portone.link.errors"
local protocol = require "portone.link.protocol"
local retry = require "portone.link.retry"
local transports = require "portone.link.transports"

local M = {}
local clock = core.monotonic

--- Default options.
-- Options without an entry here: `token` (none), `insecure_http` (false),
-- `cainfo` (the system bundle), `proxy` (libcurl's environment handling),
-- `user_agent` (none), `transport` (`"ngx"` inside nginx, else `"curl"`) and
-- `max_concurrent` (16, `portone.link.async.DEFAULT_CONCURRENT`). See `new`.
-- @field base_url "https://api.iamport.co"
-- @field timeout 10 seconds for a whole request (each attempt)
-- @field connect_timeout 3 seconds to connect (TCP + TLS)
-- @field retries 2 further attempts after the first, when the rules allow
-- @field max_response_bytes 1 MiB (1048576): larger answers fail while reading
-- @field retry_base 0.25 seconds: first back-off window (full jitter)
-- @field retry_cap 8 seconds: largest back-off window
-- @field retry_after_max 30 seconds: a larger Retry-After is not waited for
M.DEFAULTS = {
  base_url = "https://api.iamport.co",
  timeout = 10,
  connect_timeout = 3,
  retries = 2,
  max_response_bytes = 1024 * 1024,
  retry_base = retry.DEFAULTS.base,
  retry_cap = retry.DEFAULTS.cap,
  retry_after_max = retry.DEFAULTS.retry_after_max,
}

--- The User-Agent prefix: `portone-link/VERSION`. Kept short: libcurl
-- formats every header byte into every request.
M.USER_AGENT = "portone-link/" .. core.version

local function opt_error(name, msg)
  error(("portone.link.new: option '%s' %s"):format(name, msg), 4)
end
local function new_error(msg) error("portone.link.new: " .. msg, 4) end

local KNOWN = {
  base_url = "string", token = "string|function", timeout = "number",
  connect_timeout = "number", retries = "number", cainfo = "string", proxy = "string",
  max_response_bytes = "number", user_agent = "string", transport = "string|table",
  insecure_http = "boolean", retry_base = "number", retry_cap = "number",
  retry_after_max = "number", max_concurrent = "number", on_attempt = "function",
}

-- Checks base_url (see portone.link.transports): raises naming the option.
local bind_create      -- below, beside create's other fast paths

local function check_base_url(url, insecure)
  local ok, why = transports.check_base_url(url, { insecure = insecure, path = true })
  if not ok and why:find("plain http", 1, true) then
    why = why .. ", or set insecure_http = true to send payment data unencrypted"
  end
  if not ok then opt_error("base_url", why) end
  return ok
end

local function check_opts(opts)
  local why = errors.unknown_option(opts, KNOWN)
  if why then new_error(why) end
  for k, v in pairs(opts) do
    local want = KNOWN[k]
    if not want:find(type(v), 1, true) then
      opt_error(k, ("must be a %s, got %s"):format(want:gsub("|", " or "), type(v)))
    end
  end
  for _, k in ipairs({ "timeout", "connect_timeout" }) do
    local v = opts[k]
    if v ~= nil and not (v > 0 and v <= 86400) then opt_error(k, "must be in (0, 86400] seconds") end
  end
  for _, k in ipairs({ "retry_base", "retry_cap", "retry_after_max" }) do
    local v = opts[k]
    if v ~= nil and not (v >= 0 and v <= 3600) then opt_error(k, "must be in [0, 3600] seconds") end
  end
  local r = opts.retries
  if r ~= nil and not (r >= 0 and r <= 10 and r % 1 == 0) then
    opt_error("retries", "must be an integer in [0, 10]")
  end
  local mc = opts.max_concurrent
  if mc ~= nil and not (mc >= 1 and mc <= 4096 and mc % 1 == 0) then
    opt_error("max_concurrent", "must be an integer in [1, 4096]")
  end
  local m = opts.max_response_bytes
  if m ~= nil and not (m >= 1 and m % 1 == 0 and m <= 2 ^ 40) then
    opt_error("max_response_bytes", "must be a positive integer")
  end
  -- Header values: a static string with CR/LF is a programmer error.
  if type(opts.token) == "string" and (opts.token == "" or protocol.bad_header_value(opts.token)) then
    opt_error("token", "must be non-empty and contain no CR, LF or control characters")
  end
  if opts.user_agent and protocol.bad_header_value(opts.user_agent) then
    opt_error("user_agent", "must contain no CR, LF or control characters")
  end
  for _, k in ipairs({ "cainfo", "proxy" }) do
    if opts[k] and opts[k]:find("[%z\r\n]") then opt_error(k, "must contain no CR, LF or NUL") end
  end
  if type(opts.transport) == "string" and not transports.MODULES[opts.transport] then
    opt_error("transport", "must be one of: curl, ngx")
  end
  if type(opts.transport) == "table" and type(opts.transport.request) ~= "function" then
    opt_error("transport", "must have a request method")
  end
end

local Client = {}
Client.__index = Client

--- Makes a client (`link.new` is this function).
-- Every option is checked: an unknown key, a wrong type or a value out of
-- range raises `portone.link.new: option 'NAME' ...` (a programmer error).
-- @tparam[opt] table opts the options; all are optional
-- @tparam[opt="https://api.iamport.co"] string opts.base_url the API's base URL:
--   an absolute `https://` URL with a host, no user info, query or fragment
--   (trailing `/` dropped); plain `http://` only to a loopback host
--   (`localhost`, `127.x.x.x`, `[::1]`, e.g. the sandbox) unless `insecure_http`
-- @tparam[opt=false] boolean opts.insecure_http allow plain `http://` to any
--   host (payment data then travels unencrypted)
-- @tparam[opt] string|function opts.token the API token, sent as
--   `Authorization: Bearer TOKEN`; a non-empty string without control
--   characters, or a function called once per call that returns one (or nil:
--   no header; or `nil, err`: the call fails with `err`). Default: none
-- @tparam[opt=10] number opts.timeout seconds for each whole attempt, in (0, 86400]
-- @tparam[opt=3] number opts.connect_timeout seconds to connect (TCP + TLS), in (0, 86400]
-- @tparam[opt=2] int opts.retries further attempts after the first, when the
--   retry rules allow (`portone.link.retry`), an integer in [0, 10]
-- @tparam[opt=0.25] number opts.retry_base seconds, first back-off window
--   (full jitter), in [0, 3600]
-- @tparam[opt=8] number opts.retry_cap seconds, largest back-off window, in [0, 3600]
-- @tparam[opt=30] number opts.retry_after_max seconds; a larger `Retry-After`
--   is not waited for (the call fails with `err.retry_after`), in [0, 3600]
-- @tparam[opt] string opts.cainfo a PEM file of CA certificates that *replaces*
--   libcurl's default bundle (like `curl --cacert`); no CR, LF or NUL.
--   Default: the system bundle. TLS is always verified
-- @tparam[opt] string opts.proxy a proxy URL; no CR, LF or NUL. Default:
--   libcurl's own `http_proxy`/`https_proxy`/`no_proxy` handling, and no
--   proxy for a loopback `base_url` (the ngx transport refuses a proxy)
-- @tparam[opt=1048576] int opts.max_response_bytes cap on a response body
--   (1 MiB), enforced while reading; a positive integer
-- @tparam[opt] string opts.user_agent appended to the User-Agent
--   `portone-link/VERSION`; no control characters
-- @tparam[opt] string|table opts.transport `"curl"` (blocking libcurl easy
--   handle), `"ngx"` (nginx cosockets), or an object with a `request` method
--   (the transport interface). Default: `"ngx"` inside nginx, else `"curl"`
-- @tparam[opt=16] int opts.max_concurrent async transfers in flight on the
--   client's multi handle (`portone.link.async`), an integer in [1, 4096]
-- @tparam[opt] function opts.on_attempt called once per attempt on every
--   transport, sync and async, with `{op, method, url, attempt, status,
--   duration, err_kind, sent, sends}` (no header, body or token); what it
--   does (raise, close the client) never changes the call's result
-- @return the client (raises on a bad option)
function M.new(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    error(("bad argument #1 to 'new' (table expected, got %s)"):format(type(opts)), 2)
  end
  check_opts(opts)
  local o = {}
  for k, v in pairs(M.DEFAULTS) do o[k] = v end
  for k, v in pairs(opts) do o[k] = v end
  o.base_url = check_base_url(o.base_url, o.insecure_http)
  -- a loopback host is reached directly, never through the environment's proxy
  o.proxy = transports.proxy_for(o.base_url, o.proxy)

  -- TLS sessions and the DNS cache, shared by the client's curl handles (the
  -- sync one and the async multi), so a new connection resumes a session.
  o.share = core.share_new()
  local transport = o.transport
  if type(transport) ~= "table" then transport = transports.open(transport, o) end
  local self = setmetatable({}, Client)
  -- The curl transport's C handle, for create's first send:
  -- h:encode_create validates and encodes the request into the codec's
  -- buffer, sends it from there and reads the usual answer in C into the
  -- result (no body string unless a retry needs one, no decoding in Lua).
  -- Only a transport opened here: an object passed in is always called
  -- through its request method.
  if type(o.transport) ~= "table" and transport.handle then
    self._h = transport:handle()
  end
  -- Private state lives in a closure-free table keyed off the client, so that
  -- pairs(client) / inspect(client) shows no token.
  self._t = transport
  self._policy = { retries = o.retries, base = o.retry_base, cap = o.retry_cap,
                   retry_after_max = o.retry_after_max }
  -- what the async layer's multi handle needs (portone.link.async); no token
  self._http = { timeout = o.timeout, connect_timeout = o.connect_timeout, cainfo = o.cainfo,
                 proxy = o.proxy, max_response_bytes = o.max_response_bytes,
                 max_concurrent = o.max_concurrent, share = o.share }
  self._base_url = o.base_url
  self._link_hosts = protocol.link_hosts(o.base_url)
  self._on_attempt = o.on_attempt
  self._ua = M.USER_AGENT .. (o.user_agent and o.user_agent ~= "" and (" " .. o.user_agent) or "")
  local token = o.token
  -- The token is kept in an upvalue, not in a field of the client.
  self._token = function() return token end
  bind_create(self, token)
  return self
end

function Client.__tostring(self)
  return ("portone.link client (%s%s)"):format(self._base_url, self._closed and ", closed" or "")
end

-- Calls a token function for one call's token. It may return `nil, err`
-- (err passed on if it is an error object), return nil (no Authorization
-- header), or raise (kind transport, with its message: the token is not
-- known then, so a function must not put it there).
local function call_token(t)
  local ok, v, e = pcall(t)
  if not ok then
    return false, errors.new("transport", "token function failed: " .. tostring(v), { sent = false })
  end
  if v == nil and e ~= nil then
    if errors.is(e) then return false, e end
    return false, errors.new("transport", "token function failed: " .. tostring(e), { sent = false })
  end
  if v ~= nil and type(v) ~= "string" then
    return false, errors.new("validation", "token function must return a string", {
      errors = { { field = "token", code = "type", message = "token function must return a string" } } })
  end
  return true, v
end

-- Resolves the token for one call: a string, or what a function returns.
local function resolve_token(self)
  local t = self._token()
  if type(t) ~= "function" then return true, t end
  return call_token(t)
end

-- Removes the token from every field of the error, in every form the server
-- may echo it in (errors.scrub), and the start of one the 512-byte cut of
-- `body` left at its end.
local function scrub(err, token)
  if type(token) ~= "string" or token == "" then return err end
  return errors.scrub(err, { token }, "[token]")
end

local function closed_error()
  return errors.new("transport", "client is closed", { sent = false, retryable = false, attempts = 0 })
end

local sends_of, unanswered_of = protocol.sends_of, protocol.unanswered_of

-- Calls the user's on_attempt hook; whatever it does (raise, yield an
-- error, close the client) never changes the call's result.
local function report(hook, ev)
  if hook then pcall(hook, ev) end
end

-- The event of one attempt for on_attempt: no header, no body, no token.
-- Built only when a hook is set.
local function event(op, method, url, attempt, sends, t0, status, err)
  return {
    op = op, method = method, url = url, attempt = attempt, sends = sends,
    status = status or (err and err.status) or nil,
    duration = clock() - t0,
    err_kind = err and err.kind or nil,
    sent = sends > 0,
  }
end

-- Sends the request with retries; `decode(status, body, headers, now,
-- sends)` turns an answer into a result (`now` nil: the decoder reads the
-- clock if a Retry-After date needs it).
--
-- Per attempt, nothing is allocated here beyond what the transport returns
-- and the result: no request table, no event (nor clock read) without a
-- hook.
--
-- The bound on sends (README "Sends per call"): a transport call sends at
-- most `max_sends` times; it sends more than once only when a reused
-- keep-alive connection died before any response byte. That blind re-send
-- is allowed once per call: after it, every transport call gets
-- max_sends = 1. Our own retries of a create follow only an unsent failure
-- or a 429/503 answer (portone.link.retry).
--
-- A send that got no answer (one before a blind re-send, or every send of
-- a failed transfer) may have been acted on: `err.unanswered` counts them,
-- and a create error with any is never retried (portone.link.retry), even
-- when the last send was answered 429 or 503.
--
-- `status, rbody, rheaders, n` (optional): what the transport answered to a
-- first send made by the caller (create's fast call, made only without a
-- hook), taken as attempt 1.
function Client:_run(op, method, url, headers, body, decode, token, status, rbody, rheaders, n)
  local t, hook = self._t, self._on_attempt
  local attempt, sends, blind, unanswered = 0, 0, 1, 0
  local sent = rbody ~= nil
  while true do
    attempt = attempt + 1
    local t0 = hook and clock()
    if sent then
      sent = false
    else
      status, rbody, rheaders, n = t:request(method, url, headers, body, 1 + blind)
    end
    local k = sends_of(status, rbody, n)
    sends = sends + k
    if k > 1 then blind = 0 end
    unanswered = unanswered + unanswered_of(status, k)
    local res, err
    if status then
      res, err = decode(status, rbody, rheaders, nil, sends)
    else
      err = protocol.transport_error(rbody)
    end
    if err then scrub(err, token) end
    if hook then report(hook, event(op, method, url, attempt, k, t0, status, err)) end
    if res then
      if type(res) == "table" then res.attempts = sends end
      return res
    end
    if unanswered > 0 then err.unanswered = unanswered end
    local wait = retry.delay(op, err, attempt, self._policy)
    if not wait or self._closed then
      err.attempts = sends
      return nil, err
    end
    -- a transport object without sleep (a test double) falls back to nanosleep
    if wait > 0 then (t.sleep or core.sleep)(wait) end
    if self._closed then
      err.attempts = sends
      return nil, err
    end
  end
end

function Client:_cfg(token)
  return { base_url = self._base_url, user_agent = self._ua, token = token,
           link_hosts = self._link_hosts }
end

-- Fast paths of create (the hot loop): the URL and header list are built
-- once per token, not per call. They live in a weak table keyed by the
-- client, never in a field of it (the list holds the token).
local PARTS = setmetatable({}, { __mode = "k" })
local encode = core.encode

-- The URL and header list of a create for `token` ({url =, headers =},
-- built once per token), or nil, err for a bad header value.
local function create_parts(self, token)
  local p = PARTS[self]
  if not p or p.token ~= token then
    local headers, err = protocol.headers(self:_cfg(token), true)
    if not headers then return nil, err end
    p = { token = token, headers = headers, url = self._base_url .. protocol.PATH }
    PARTS[self] = p
  end
  return p
end

-- The usual create, one C call (h:bind_create): a function of the request
-- with the URL and header list bound, for a client whose every create
-- would take them unchanged: the curl transport opened here, a fixed token
-- (a string or none) and no on_attempt hook. Kept out of the client's
-- fields like the parts (its headers hold the token); dropped by close.
local FAST = setmetatable({}, { __mode = "k" })

function bind_create(self, token)
  local h = self._h
  if not h or self._on_attempt or type(token) == "function" then return end
  local p = create_parts(self, token)
  if p then FAST[self] = h:bind_create(p.url, p.headers) end   -- else create reports it
end

-- The body of a create and its parts: body, parts, or nil, err with
-- protocol.create_request's errors in the same order (body, then header
-- values).
local function create_body(self, token, req, now)
  local body, list = encode(req, now)
  if not body then return nil, errors.validation(list) end
  local p, err = create_parts(self, token)
  if not p then return nil, err end
  return body, p
end

-- The create request for `token` (the async layer's).
local function create_request(self, token, req, now)
  local body, p = create_body(self, token, req, now)
  if not body then return nil, p end
  return { method = "POST", url = p.url, headers = p.headers, body = body }
end

-- The usual answer, {"shortenedUrl":"https://host/ID"}, is read by one
-- anchored pass in C (core.usual_answer, src/answer.c: what the general path
-- below yields for such a body, in a few hundred instructions where cjson and
-- the URL patterns take ~29,000); anything else takes the general path.
local usual_answer = core.usual_answer
local create_result_general = protocol.create_result
-- `sends` (optional) fills `attempts` in the one constructor: a field added
-- later would grow the table.
local function create_result(status, body, headers, now, sends)
  if type(status) == "number" and status >= 200 and status < 300 and type(body) == "string" then
    local url, id = usual_answer(body)
    if url then return { url = url, id = id, status = status, attempts = sends } end
  end
  return create_result_general(status, body, headers, now)
end
M._create_result = create_result    -- for the specs: same answers as the general path

-- What follows h:encode_create's outcome other than the usual answer's
-- table (`false, list`, or a send to read and maybe retry), for the
-- call's `token` (nil: no header; a token function's nil is that too, so
-- nil never stands for "the client's": the fast call passes its own).
function Client:_create_sent(s, b, hd, n, body, token)
  if s == false then
    local err = errors.validation(b)
    err.attempts = 0
    return nil, err
  end
  local p = create_parts(self, token)
  return self:_run("create", "POST", p.url, p.headers, body, create_result, token, s, b, hd, n)
end

local CREATE_OPTS = { now = true }

--- Creates a payment link.
-- @tparam table req the request (see `link.validate`)
-- @tparam[opt] table opts `{now = unix_seconds}` for the expiry rule
-- @return `{url =, id =, status =}`, or `nil, err`
function Client:create(req, opts)
  local fast = opts == nil and FAST[self]
  if fast then
    local s, b, hd, n, body = fast(req)
    -- a client with FAST has a fixed token (a string or none)
    if b ~= nil then return self:_create_sent(s, b, hd, n, body, self._token()) end
    if s then return s end
    -- not a table: the checks below say so
  end
  if getmetatable(self) ~= Client then error("bad self to 'create' (use client:create)", 2) end
  if type(req) ~= "table" then
    error(("bad argument #1 to 'create' (table expected, got %s)"):format(type(req)), 2)
  end
  if opts ~= nil then
    -- false: not a table, or now = false; NaN would pass every expiry check
    local on = type(opts) == "table" and opts.now
    if on == false or (on ~= nil and (type(on) ~= "number" or on ~= on)) then
      error("bad argument #2 to 'create' (table {now = number} expected)", 2)
    end
    local why = errors.unknown_option(opts, CREATE_OPTS)
    if why then error("bad argument #2 to 'create' (" .. why .. ")", 2) end
  end
  if self._closed then return nil, closed_error() end
  local token = self._token()
  if type(token) == "function" then
    local ok
    ok, token = call_token(token)
    if not ok then token.attempts = 0; return nil, token end
    -- the token function may have closed the client
    if self._closed then return nil, closed_error() end
  end
  local now = opts and opts.now or os.time()
  local h = self._h
  local p = h and not self._on_attempt and create_parts(self, token)
  if p then
    -- validation and attempt 1 in one C call: the usual answer comes back
    -- as the result; any other outcome of the send with the wire body
    local s, b, hd, n, body = h:encode_create("POST", p.url, p.headers, req, 2, now)
    if type(s) == "table" then return s end
    return self:_create_sent(s, b, hd, n, body, token)
  end
  -- the general path (also a bad header value, reported after the body's
  -- errors)
  local body
  body, p = create_body(self, token, req, now)
  if not body then p.attempts = 0; return nil, p end
  return self:_run("create", "POST", p.url, p.headers, body, create_result, token)
end

--- Deactivates a payment link. Deactivating twice is not an error.
-- @tparam string url_or_id the link's URL (`https://impay.link/4bdf239e`) or id
-- @return `true`, or `nil, err` (a bad id is a validation error, field `id`)
function Client:deactivate(url_or_id)
  if getmetatable(self) ~= Client then error("bad self to 'deactivate' (use client:deactivate)", 2) end
  if type(url_or_id) ~= "string" then
    error(("bad argument #1 to 'deactivate' (string expected, got %s)"):format(type(url_or_id)), 2)
  end
  if self._closed then return nil, closed_error() end
  local ok, token = resolve_token(self)
  if not ok then token.attempts = 0; return nil, token end
  if self._closed then return nil, closed_error() end
  local r, err = protocol.deactivate_request(self:_cfg(token), url_or_id)
  if not r then err.attempts = 0; return nil, err end
  return self:_run("deactivate", r.method, r.url, r.headers, r.body, protocol.deactivate_result, token)
end

--- Connections the transport opened so far (curl transport; nil otherwise).
function Client:connections()
  local t = self._t
  if t and t.connections and not self._closed then return t:connections() end
  return nil
end

--- Frees the transport (the curl handle). Safe to call more than once; later
-- calls of create/deactivate return `nil, err` ("client is closed").
function Client:close()
  if not self._closed then
    self._closed = true
    FAST[self] = nil
    local t = self._t
    self._t = nil
    if t and t.close then t:close() end
  end
  return true
end

-- `local c <close> = link.new{...}` on Lua 5.4. The curl handle also has its
-- own __gc, so a client that is merely dropped frees libcurl too.
Client.__close = Client.close

-- create_async, deactivate_async, poll, timeout, on_error, create_many
require("portone.link.async").install(Client, {
  resolve_token = resolve_token, scrub = scrub, closed_error = closed_error,
  sends_of = sends_of, unanswered_of = unanswered_of, report = report, event = event,
  create_request = create_request, create_result = create_result })

return M
