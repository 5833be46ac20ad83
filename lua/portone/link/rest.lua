--- portone.link.rest: the few REST V1 calls a webhook handler needs.
--
--     local rest = link.rest.new{ imp_key = "...", imp_secret = "..." }
--     local payment, err = rest:payment("imp_123")
--     local payment, err = rest:verify(notice, { amount = 10000, merchant_uid = "order-1" })
--     local refunded, err = rest:cancel{ imp_uid = "imp_123", amount = 3000, checksum = 10000 }
--     local payment, err = rest:find("order-1")            -- the order's newest payment
--     local prepared, err = rest:prepare("order-2", 25000) -- the amount the order must be paid with
--
-- Test mode: PortOne hides test-mode payments (a test channel: no money
-- moved) from every lookup unless it carries `include_sandbox=true`. This
-- client sends it only when made with `test_mode = true`, so a live back
-- office never takes a test payment for a paid order.
--
-- The access token (`POST /users/getToken`, 30 minutes) is cached. Its expiry
-- is computed on the local clock as `local now + (expired_at - now)`, both
-- taken from the answer, so a server clock that is off by minutes does not
-- matter. One refresh runs at a time: under OpenResty the other light threads
-- of the worker wait on an `ngx.semaphore` for it; with a blocking transport
-- there is nothing to wait for. A refresh still in flight after
-- `WAIT_TIMEOUT` seconds counts as abandoned (its light thread was killed,
-- e.g. with the request that ran it) and the next caller runs its own. A 401
-- on a lookup drops the token, fetches a new one and tries once more.
--
-- The secret and the token live in a private table, not on the object, and
-- never reach an error, a log line or `tostring`.
--
-- @module portone.link.rest
local errors = require "portone.link.errors"
local protocol = require "portone.link.protocol"
local retry = require "portone.link.retry"
local transports = require "portone.link.transports"

local M = {}

--- The REST V1 base URL unless `base_url` says otherwise.
M.DEFAULT_BASE_URL = "https://api.iamport.kr"
--- Refresh this many seconds before the token's computed expiry.
M.DEFAULT_MARGIN = 60
--- PortOne hands the token held back unchanged until this many seconds are
-- left of it (then it adds 5 minutes to it).
M.RENEW_WITHIN = 60
--- Longest a light thread waits for another's refresh; a refresh in flight
-- for longer is taken as abandoned.
M.WAIT_TIMEOUT = 15

local Rest = {}
Rest.__index = Rest

-- self -> {secret =, token =, expires =, renew_at =, gen =, last_err =}; weak keys, so a
-- dropped client takes its secret with it.
local private = setmetatable({}, { __mode = "k" })

-- lua-cjson on 5.4 decodes every number as a float (10000.0); amounts and
-- times are integers, so turn integral floats back into integers.
local tointeger = math.tointeger -- luacheck: ignore 143 (nil on 5.1)
local function integers(v, depth)
  if type(v) == "number" then return tointeger and tointeger(v) or v end
  if type(v) == "table" and depth < 8 then
    for k, x in pairs(v) do v[k] = integers(x, depth + 1) end
  end
  return v
end

local cjson
local function decode(body)
  cjson = cjson or require "cjson.safe"
  return integers(cjson.decode(body), 0)
end

-- Minimal JSON string literal (cjson is kept away from request bodies; see
-- DESIGN §6). Escapes quotes, backslashes and control characters.
local function jstr(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local b = c:byte()
    if c == '"' then return '\\"' elseif c == "\\" then return "\\\\" end
    return ("\\u%04x"):format(b)
  end) .. '"'
end

local function make_transport(opts, base)
  local t = opts.transport
  if type(t) == "table" then return t end
  local tr = transports.open(t, {
    timeout = opts.timeout or 10,
    connect_timeout = opts.connect_timeout or 5,
    cainfo = opts.cainfo,
    -- a loopback host is reached directly, never through the environment's proxy
    proxy = transports.proxy_for(base, opts.proxy),
    max_response_bytes = opts.max_response_bytes or 256 * 1024,
  })
  if not tr then error("bad argument #1 to 'new' (unknown transport '" .. tostring(t) .. "')", 3) end
  return tr
end

-- An ngx.semaphore for waiting light threads; made by the first waiter, in a
-- request or timer phase (nil outside nginx).
local function semaphore()
  local ngx = rawget(_G, "ngx")
  if not (ngx and ngx.get_phase) then return nil end
  local ok, sema = pcall(require, "ngx.semaphore")
  if not ok then return nil end
  return sema.new(0)
end

--- Makes a REST V1 client.
-- @tparam table opts `imp_key`, `imp_secret` (strings, required); `base_url`
--   (default `https://api.iamport.kr`); `transport` (`"curl"`, `"ngx"`, or
--   an object with `request`/`close`/`sleep`; by default the ngx one inside
--   nginx, else curl, as for `link.new`); `timeout` (10), `connect_timeout`
--   (5), `cainfo`, `proxy`, `max_response_bytes` (256 KiB) for a named
--   transport; `user_agent` (replaces the default User-Agent; no control
--   characters);
--   `test_mode` (default false: lookups send `include_sandbox=true`, and
--   so find test-mode payments, only when true; `include_sandbox` is an
--   older name for it);
--   `margin` (seconds before expiry to refresh, default 60; PortOne renews
--   a token only in its last minute, so a token it hands back unchanged
--   inside a larger margin is kept until then); `clock` (a
--   function returning unix seconds, for tests). An unknown option raises,
--   naming the nearest known one.
local OPTIONS = { imp_key = true, imp_secret = true, base_url = true, transport = true, timeout = true,
                  connect_timeout = true, cainfo = true, proxy = true, max_response_bytes = true,
                  user_agent = true, test_mode = true, include_sandbox = true, margin = true,
                  clock = true, semaphore = true }

function M.new(opts)
  if type(opts) ~= "table" then
    error(("bad argument #1 to 'new' (table expected, got %s)"):format(type(opts)), 2)
  end
  -- a misspelt option would be dropped: `tset_mode` or `base_ur` (the
  -- live API) must not pass unnoticed
  local why = errors.unknown_option(opts, OPTIONS)
  if why then error("bad argument #1 to 'new' (" .. why .. ")", 2) end
  local m = opts.margin
  if m ~= nil and not (type(m) == "number" and m >= 0 and m <= 86400) then
    error("bad argument #1 to 'new' (margin must be a number of seconds in [0, 86400])", 2)
  end
  for _, k in ipairs({ "imp_key", "imp_secret" }) do
    if type(opts[k]) ~= "string" or opts[k] == "" then
      error(("bad argument #1 to 'new' (%s must be a non-empty string)"):format(k), 2)
    end
  end
  if opts.imp_key:find("[%c]") or opts.imp_secret:find("[%c]") then
    error("bad argument #1 to 'new' (imp_key and imp_secret must not contain control characters)", 2)
  end
  local base, berr = transports.check_base_url(opts.base_url or M.DEFAULT_BASE_URL)
  if not base then error("bad argument #1 to 'new' (base_url " .. berr .. ")", 2) end
  if opts.user_agent ~= nil and (type(opts.user_agent) ~= "string" or opts.user_agent == ""
      or protocol.bad_header_value(opts.user_agent)) then
    error("bad argument #1 to 'new' (user_agent must be a non-empty string without CR, LF "
      .. "or control characters)", 2)
  end
  if opts.clock ~= nil and type(opts.clock) ~= "function" then
    error("bad argument #1 to 'new' (clock must be a function)", 2)
  end
  local self = setmetatable({
    base_url = base,
    imp_key = opts.imp_key,
    include_sandbox = opts.test_mode == true or opts.include_sandbox == true,
    margin = opts.margin or M.DEFAULT_MARGIN,
    clock = opts.clock or (rawget(_G, "ngx") and ngx.time) or os.time,
    transport = make_transport(opts, base),
    user_agent = opts.user_agent or require("portone.link.client").USER_AGENT,
    refreshing = false,
    waiters = 0,
  }, Rest)
  self.sema = opts.semaphore
  private[self] = { secret = opts.imp_secret, gen = 0 }
  return self
end

function Rest:__tostring()
  local k = self.imp_key
  local shown = #k > 4 and (k:sub(1, 4) .. "…") or "…"
  return ("portone.link.rest (%s, imp_key %s)"):format(self.base_url, shown)
end

-- Removes the secret and the token from a string that came back from the
-- server or the transport, in case either echoed them, in every form a
-- server may echo them in (JSON `\/`, `\u00XX`, percent-encoding), also
-- inside a table (a `code` the server sent as a JSON object or array).
local function scrub(self, s)
  local p = private[self]
  return errors.scrub_value(s, { p.secret, p.token }, "***")
end

-- `retryable` as `portone.link.retry` says for an idempotent call (these are
-- a token fetch and a GET; the client itself does not retry them).
local function transport_error(self, info, what)
  local err = protocol.transport_error(info)
  err.message = what .. ": " .. tostring(scrub(self, err.message))
  err.retryable = retry.retryable("lookup", err)
  return err
end

local function http_error(what, status, message, fields)
  local err = errors.new("http", what .. ": HTTP " .. status .. (message and (": " .. message) or ""), fields)
  err.retryable = retry.retryable("lookup", err)
  return err
end

-- A number as PortOne's JSON gives it: a number, or a string of digits
-- (never "0x2710", " 1e4 " or "inf", which tonumber would take); else nil.
local function json_number(v)
  if type(v) == "number" then return v end
  if type(v) == "string" and v:match("^%-?%d+%.?%d*$") then return tonumber(v) end
  return nil
end

-- Sends one request; returns the decoded envelope's `response`, or nil, err,
-- and third the `status` of the HTTP answer either way. An error carries
-- `unanswered` when a send got no answer (the transport's silent re-send):
-- a refund with it may have gone through (portone.link.retry).
function Rest:_call(method, path, headers, body, what)
  local r, err, status, unanswered = self:_call1(method, path, headers, body, what)
  if err and unanswered > 0 then err.unanswered = unanswered end
  return r, err, status
end

-- _call's work; fourth, how many of its sends got no answer.
function Rest:_call1(method, path, headers, body, what)
  headers[#headers + 1] = "Accept: application/json"
  headers[#headers + 1] = "User-Agent: " .. self.user_agent
  local status, rbody, _, n = self.transport:request(method, self.base_url .. path, headers, body)
  local unanswered = protocol.unanswered_of(status, protocol.sends_of(status, rbody, n))
  if not status then return nil, transport_error(self, rbody, what), nil, unanswered end
  local t = type(rbody) == "string" and decode(rbody) or nil
  -- scrub, then cut: a cut first could leave the start of an echoed secret
  local cut = errors.cut(scrub(self, rbody))
  if status == 401 then
    return nil, errors.new("auth", what .. ": unauthorized", { status = status, body = cut }), status,
      unanswered
  end
  if type(t) ~= "table" then
    if status < 200 or status > 299 then
      return nil, http_error(what, status, nil, { status = status, body = cut }), status, unanswered
    end
    return nil, errors.new("decode", what .. ": the answer is not a JSON object",
      { status = status, body = cut }), status, unanswered
  end
  local code = json_number(t.code)
  local message = type(t.message) == "string" and scrub(self, t.message) or nil
  if status < 200 or status > 299 then
    return nil, http_error(what, status, message,
      { status = status, code = scrub(self, code), body = cut }), status, unanswered
  end
  if code ~= 0 then
    return nil, errors.new("api", what .. ": " .. (message or "non-zero code"),
      { status = status, code = scrub(self, t.code), body = cut }), status, unanswered
  end
  if type(t.response) ~= "table" then
    return nil, errors.new("decode", what .. ": no response object", { status = status, body = cut }), status,
      unanswered
  end
  return t.response, nil, status, unanswered
end

function Rest:_fetch_token()
  local p = private[self]
  local body = "{" .. '"imp_key":' .. jstr(self.imp_key) .. ',"imp_secret":' .. jstr(p.secret) .. "}"
  local before = self.clock()
  local r, err = self:_call("POST", "/users/getToken", { "Content-Type: application/json" }, body, "getToken")
  if not r then return nil, err end
  local tok, exp, now = r.access_token, tonumber(r.expired_at), tonumber(r.now)
  if type(tok) ~= "string" or tok == "" or tok:find("[%c]") or not exp or not now then
    return nil, errors.new("decode", "getToken: the answer has no usable access_token/expired_at/now")
  end
  p.token = tok
  -- local clock + what the server says is left: skew between the clocks cancels.
  p.expires = before + (exp - now)
  -- A token that comes back already inside the margin (PortOne renews
  -- none before its last minute) is kept until that minute: asking again
  -- before it would only repeat this answer, on every call.
  p.renew_at = p.expires - self.margin
  if p.renew_at <= before then p.renew_at = p.expires - math.min(self.margin, M.RENEW_WITHIN) end
  return tok
end

function Rest:_valid_token()
  local p = private[self]
  if p.token and self.clock() < p.renew_at then return p.token end
  return nil
end

-- Waits until the refresh in flight ends (semaphore under OpenResty; the
-- transport's sleep otherwise, which yields in a cooperative transport), or
-- until it turns out abandoned; a refresh that took over an abandoned one is
-- waited for in turn. Returns nil, why when this phase cannot wait (nginx's
-- log, header filter or set phase: the semaphore refuses at once there, and
-- ngx.time stands still until the handler returns, so waiting on would spin
-- the worker for good).
function Rest:_wait_refresh()
  local ngx = rawget(_G, "ngx")
  if ngx and ngx.get_phase then
    local ok, why = require("portone.link.transport.ngx").available()
    if not ok then return nil, why end
  end
  while self:_refresh_alive() do
    self.sema = self.sema or semaphore()
    if self.sema then
      self.waiters = self.waiters + 1
      local left = self.refresh_started + M.WAIT_TIMEOUT - self.clock()
      local ok, err = self.sema:wait(math.max(0.001, left))
      if not ok then
        self.waiters = self.waiters - 1
        if err ~= "timeout" then return nil, err end
      end
    else
      local sleep = self.transport.sleep
      if not sleep then break end
      sleep(0.005)
    end
  end
end

-- True while a refresh runs that is not older than WAIT_TIMEOUT. The light
-- thread running one can be killed mid-request (ngx.thread.kill, the request
-- ending or aborted) and never get to clear `refreshing`.
function Rest:_refresh_alive()
  return self.refreshing and self.clock() - self.refresh_started < M.WAIT_TIMEOUT
end

--- The current access token, fetched or refreshed as needed.
-- Meant for the library's own calls; a caller that logs it leaks it.
-- @return token, or `nil, err` (`auth` when the key or secret is refused)
function Rest:token()
  local tok = self:_valid_token()
  if tok then return tok end
  local p = private[self]
  if self:_refresh_alive() then
    local gen = p.gen
    local waited, why = self:_wait_refresh()
    if waited == nil and why then
      -- as the transport fails in such a phase: permanent, nothing sent
      return nil, errors.new("transport", "getToken: cannot wait for the refresh in flight: "
        .. tostring(why), { sent = false, permanent = true, retryable = false })
    end
    tok = self:_valid_token()
    if tok then return tok end
    if p.gen ~= gen and p.last_err then return nil, p.last_err end
    if self:_refresh_alive() then
      return nil, errors.new("timeout", "getToken: gave up waiting for the refresh in flight",
        { retryable = true })
    end
  end
  -- `mine` tells this refresh from a newer one that took over an abandoned
  -- one: only the newest clears `refreshing`.
  local mine = (self.refresh_seq or 0) + 1
  self.refresh_seq = mine
  self.refreshing = true
  self.refresh_started = self.clock()
  local ok, t, err = pcall(self._fetch_token, self)
  if self.refresh_seq == mine then self.refreshing = false end
  p.gen = p.gen + 1
  if self.sema and self.waiters > 0 then
    local n = self.waiters
    self.waiters = 0
    self.sema:post(n)
  end
  if not ok then
    p.last_err = errors.new("transport", "getToken: " .. tostring(scrub(self, tostring(t))))
    error(p.last_err, 0)
  end
  p.last_err = err
  return t, err
end

--- Forgets the cached token (the next call fetches a new one).
function Rest:forget_token()
  local p = private[self]
  p.token, p.expires, p.renew_at = nil, nil, nil
end

-- nil and a validation error for one field (code "format" unless given)
local function invalid(field, message, code)
  return nil, errors.new("validation", field .. " " .. message,
    { errors = { { field = field, code = code or "format", message = message } } })
end

-- The token's failure as a call's own error: a copy (the threads that
-- waited for one refresh share its error, and callers add to theirs),
-- without the getToken's `unanswered`: the call itself was never sent, so
-- it is as retryable as the fetch is, even for a cancel.
local function token_failure(err)
  local e = setmetatable({}, getmetatable(err))
  for k, v in pairs(err) do e[k] = v end
  e.unanswered = nil
  return e
end

local function check_imp_uid(imp_uid)
  return type(imp_uid) == "string" and #imp_uid <= 64 and imp_uid:match("^[%w_%-]+$") ~= nil
end

--- Looks a payment up: `GET /payments/{imp_uid}`.
-- @return the `response` object (`amount`, `status`, `merchant_uid`, ...), or
--   `nil, err`: `http` with status 404 for an unknown imp_uid, `auth`,
--   `api`, `transport`, `timeout`, `decode`, or `validation` for an imp_uid
--   that cannot go into a path.
function Rest:payment(imp_uid)
  if not check_imp_uid(imp_uid) then return invalid("imp_uid", "must match [A-Za-z0-9_-]{1,64}") end
  local path = "/payments/" .. imp_uid .. (self.include_sandbox and "?include_sandbox=true" or "")
  local used
  for attempt = 1, 2 do
    local tok, terr = self:token()
    if not tok then return nil, token_failure(terr) end
    used = tok
    local r, err, status = self:_call("GET", path, { "Authorization: Bearer " .. tok }, nil,
      "payment " .. imp_uid)
    if r then return r end
    if status ~= 401 or attempt == 2 then return nil, err end
    -- the token was refused: drop it unless another thread already replaced it
    if private[self].token == used then self:forget_token() end
  end
end


--- Checks a webhook notice against the payment PortOne holds and the order.
-- @tparam table notice from `link.webhook.parse` (only `imp_uid` and
--   `merchant_uid` are read; the notice's own status is never trusted)
-- @tparam table expect `amount` (required: what the order costs);
--   `merchant_uid` (default: the notice's; one of the two is required, else
--   any payment of that amount would do); `status` (default `"paid"`);
--   `currency` (default `"KRW"`, PortOne's: 10000 JPY is not 10000 KRW)
-- @return the payment, or `nil, err` with `err.kind`:
--   `mismatch` (amount, merchant_uid, imp_uid or currency differ;
--   `err.field`, `err.expected`, `err.actual`, `err.payment`), `unpaid` (the
--   payment's status is not the expected one, or a payment expected
--   `"paid"` was refunded in part: its status stays `"paid"`, and
--   `err.cancel_amount` is set; `err.payment_status`, `err.payment`),
--   `validation` (no merchant_uid to check, nothing looked up), or the
--   lookup's own kind (`http` 404, `auth`, `transport`,
--   `timeout`, `api`, `decode`, `validation`) with `err.stage == "lookup"`:
--   answer the webhook with a 5xx so PortOne sends it again (it does so
--   only when resends were turned on for you; by default a notice comes
--   once: see the webhooks guide).
function Rest:verify(notice, expect)
  if type(notice) ~= "table" then
    error(("bad argument #1 to 'verify' (table expected, got %s)"):format(type(notice)), 2)
  end
  if type(expect) ~= "table" or type(expect.amount) ~= "number" then
    error("bad argument #2 to 'verify' (table with a number 'amount' expected)", 2)
  end
  -- without an order id, one real payment would verify any order of its
  -- amount: refused before the lookup
  local want_uid = expect.merchant_uid or notice.merchant_uid
  if want_uid == nil then
    return invalid("merchant_uid", "is required (in the notice or the expectation): "
      .. "without it any payment of that amount would verify", "required")
  end
  local p, err = self:payment(notice.imp_uid)
  if not p then
    err.stage = "lookup"
    return nil, err
  end
  local function mismatch(field, expected, actual)
    return nil, errors.new("mismatch", ("verify: %s is %s, expected %s"):format(field, tostring(actual),
      tostring(expected)), { field = field, expected = expected, actual = actual, payment = p })
  end
  if p.imp_uid ~= nil and p.imp_uid ~= notice.imp_uid then
    return mismatch("imp_uid", notice.imp_uid, p.imp_uid)
  end
  if p.merchant_uid ~= want_uid then
    return mismatch("merchant_uid", want_uid, p.merchant_uid)
  end
  local amount = json_number(p.amount)
  if amount ~= expect.amount then
    -- integral amounts without ".0"; others as they are (10000.4 must not
    -- read as 10000)
    local function show(v)
      if v == math.floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then return ("%.0f"):format(v) end
      local s = ("%.14g"):format(v)
      return tonumber(s) == v and s or ("%.17g"):format(v)
    end
    return mismatch("amount", show(expect.amount), amount and show(amount) or tostring(p.amount))
  end
  local want_currency = expect.currency or "KRW"
  if p.currency ~= want_currency then
    return mismatch("currency", want_currency, p.currency)
  end
  local want_status = expect.status or "paid"
  if p.status ~= want_status then
    return nil, errors.new("unpaid", ("verify: payment status is %s, expected %s"):format(tostring(p.status),
      want_status), { payment_status = p.status, payment = p })
  end
  -- a partial refund leaves the status "paid": the order is no longer paid
  -- in full (a missing or null cancel_amount is 0; anything else not a
  -- number fails)
  local ca = p.cancel_amount
  if want_status == "paid" and ca ~= nil and type(ca) ~= "userdata" and json_number(ca) ~= 0 then
    return nil, errors.new("unpaid", ("verify: payment was refunded in part (cancel_amount %s of %s)")
      :format(tostring(ca), tostring(p.amount)),
      { payment_status = p.status, cancel_amount = ca, payment = p })
  end
  return p
end

-- ---------------------------------------------------------------------------
-- cancel, find, prepare

-- RFC 3986 unreserved characters stay; everything else is %XX (a
-- merchant_uid may hold any character and goes into a path; one of only
-- dots is refused before: see find).
local function path_escape(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end


local function check_merchant_uid(v)
  return type(v) == "string" and #v >= 1 and #v <= 80 and not v:find("%c")
end

-- A non-negative integer amount (a float only when integral), below 2^53.
local function check_amount(v, positive)
  return type(v) == "number" and v == v and v == math.floor(v) and v < 2^53
    and (v > 0 or (not positive and v == 0))
end

-- One authenticated call with the token, retried once with a fresh token
-- on a 401 (the server refused it before doing anything, so this is safe
-- for a cancel too). Returns the envelope's response or nil, err, and
-- third true when the call was not sent (the token could not be had).
function Rest:_authed(method, path, body, what)
  local used
  for attempt = 1, 2 do
    local tok, terr = self:token()
    if not tok then return nil, token_failure(terr), true end
    used = tok
    local headers = { "Authorization: Bearer " .. tok }
    if body then headers[#headers + 1] = "Content-Type: application/json" end
    local r, err, status = self:_call(method, path, headers, body, what)
    if r then return r end
    -- not after a send that got no answer: that one may have been done
    if status ~= 401 or attempt == 2 or err.unanswered then return nil, err end
    if private[self].token == used then self:forget_token() end
  end
end

function Rest:_query()
  return self.include_sandbox and "?include_sandbox=true" or ""
end

-- The body fields of a cancel besides the payment's id, in the order they
-- are sent: name, encoder (the JSON text, or nil when the value breaks the
-- rule), the rule. Any other key is refused.
local function amount_json(positive)
  return function(v) return check_amount(v, positive) and ("%.0f"):format(v) or nil end
end
local function string_json(v) return type(v) == "string" and jstr(v) or nil end
local function boolean_json(v) return type(v) == "boolean" and tostring(v) or nil end
local CANCEL_FIELDS = {
  { "amount", amount_json(true), "must be a positive integer" },
  { "tax_free", amount_json(false), "must be an integer >= 0" },
  { "vat_amount", amount_json(false), "must be an integer >= 0" },
  { "checksum", amount_json(false), "must be an integer >= 0" },
  { "reason", string_json, "must be a string" },
  { "refund_holder", string_json, "must be a string" },
  { "refund_bank", string_json, "must be a string" },
  { "refund_account", string_json, "must be a string" },
  { "refund_tel", string_json, "must be a string" },
  { "enable_webhook", boolean_json, "must be a boolean" },
}
local CANCEL_KEYS, names = { imp_uid = true, merchant_uid = true }, { "imp_uid", "merchant_uid" }
for _, f in ipairs(CANCEL_FIELDS) do CANCEL_KEYS[f[1]] = true; names[#names + 1] = f[1] end
local CANCEL_FIELD_LIST = table.concat(names, ", ")

--- Refunds all or part of a payment: `POST /payments/cancel`.
-- @tparam table req `imp_uid` or `merchant_uid` (one of them); `amount`
--   (omit for the whole balance); `tax_free`; `checksum` (the refundable
--   balance you believe is left: PortOne refuses the cancel when it
--   differs, so two partial refunds racing cannot both go through);
--   `vat_amount`; `reason` (text); `refund_holder`, `refund_bank`,
--   `refund_account`, `refund_tel` (a virtual account's refund goes back
--   by transfer: PortOne needs them); `enable_webhook` (true: PortOne
--   posts the `cancelled` notice to the payment's webhook URL, which it
--   does not for a cancel over REST otherwise). Any other key is refused
--   as a `validation` error (code `unknown_field`, with `suggestion` when a
--   field is close), nothing sent: a misspelt `amount` would otherwise
--   refund the whole balance.
-- @return the payment after the cancel (`cancel_amount`, `cancel_history`,
--   `status` `"cancelled"` once nothing is left), or `nil, err`: `api` with
--   PortOne's `code` and message (already fully cancelled, checksum or
--   balance refused, no such payment), `validation`, `auth`, `http`,
--   `transport`, `timeout`, `decode`. A cancel is not idempotent:
--   `err.retryable` follows the rules of a create (retry only when the
--   request surely did not reach PortOne, or on a 429/503 to its only
--   send: with `err.unanswered` it is false; a failure to get the token,
--   before the cancel was sent, is as retryable as that fetch); after any
--   other failure, look the payment up before trying again. libcurl itself may
--   send the request a second time when a reused connection dies before
--   any answer (once per call: see "Sends per call" in the errors guide):
--   pass `checksum`, and PortOne refuses the copy.
function Rest:cancel(req)
  if type(req) ~= "table" then
    error(("bad argument #1 to 'cancel' (table expected, got %s)"):format(type(req)), 2)
  end
  local parts = {}
  if req.imp_uid ~= nil then
    if not check_imp_uid(req.imp_uid) then return invalid("imp_uid", "must match [A-Za-z0-9_-]{1,64}") end
    parts[#parts + 1] = '"imp_uid":' .. jstr(req.imp_uid)
  elseif req.merchant_uid ~= nil then
    if not check_merchant_uid(req.merchant_uid) then
      return invalid("merchant_uid", "must be a string of 1 to 80 bytes without control characters")
    end
    parts[#parts + 1] = '"merchant_uid":' .. jstr(req.merchant_uid)
  else
    return invalid("imp_uid", "or merchant_uid is required")
  end
  for k in pairs(req) do
    -- a misspelt key would otherwise be dropped: `ammount` refunds the lot
    if not CANCEL_KEYS[k] then
      local near = errors.nearest(k, CANCEL_KEYS)
      local r, err = invalid(tostring(k), "is not a field of a cancel" .. (near
        and (": did you mean '" .. near .. "'?") or " (" .. CANCEL_FIELD_LIST .. ")"), "unknown_field")
      err.errors[1].suggestion = near
      return r, err
    end
  end
  for _, f in ipairs(CANCEL_FIELDS) do
    local k, v = f[1], req[f[1]]
    if v ~= nil then
      local json = f[2](v)
      if not json then return invalid(k, f[3]) end
      parts[#parts + 1] = '"' .. k .. '":' .. json
    end
  end
  if req.tax_free and req.amount and req.tax_free > req.amount then
    return invalid("tax_free", "must not exceed amount")
  end
  local what = "cancel " .. tostring(req.imp_uid or req.merchant_uid)
  local body = "{" .. table.concat(parts, ",") .. "}"
  local r, err, unsent = self:_authed("POST", "/payments/cancel", body, what)
  if not r and not unsent then err.retryable = retry.retryable("create", err) end
  return r, err
end

--- The newest payment of an order: `GET /payments/find/{merchant_uid}[/{status}]`.
-- @tparam string merchant_uid the order
-- @tparam[opt] string status `ready`, `paid`, `cancelled` or `failed`
-- @return the payment, or `nil, err` (`http` 404 when the order has none)
function Rest:find(merchant_uid, status)
  if not check_merchant_uid(merchant_uid) then
    return invalid("merchant_uid", "must be a string of 1 to 80 bytes without control characters")
  end
  -- "." and ".." are dot segments: a URL (or a server that decodes %2E
  -- first) drops them from the path, and another lookup would be made
  if merchant_uid:match("^%.+$") and #merchant_uid <= 2 then
    return invalid("merchant_uid", "cannot be '.' or '..' in a lookup: they are path segments")
  end
  local path = "/payments/find/" .. path_escape(merchant_uid)
  if status ~= nil then
    local ok = ({ ready = true, paid = true, cancelled = true, failed = true })[status]
    if not ok then return invalid("status", "must be ready, paid, cancelled or failed") end
    path = path .. "/" .. status
  end
  return self:_authed("GET", path .. self:_query(), nil, "find " .. merchant_uid)
end

--- Registers the amount an order must be paid with: `POST /payments/prepare`.
-- PortOne then fails a payment of that order for any other amount.
-- @return `{merchant_uid =, amount =}`, or `nil, err` (`api` when the order
--   is registered already)
function Rest:prepare(merchant_uid, amount)
  if not check_merchant_uid(merchant_uid) then
    return invalid("merchant_uid", "must be a string of 1 to 80 bytes without control characters")
  end
  if not check_amount(amount, true) then return invalid("amount", "must be a positive integer") end
  local body = ('{"merchant_uid":%s,"amount":%.0f}'):format(jstr(merchant_uid), amount)
  return self:_authed("POST", "/payments/prepare", body, "prepare " .. merchant_uid)
end

--- Closes the transport.
function Rest:close()
  if self.transport and self.transport.close then self.transport:close() end
end

M.Rest = Rest
return M
