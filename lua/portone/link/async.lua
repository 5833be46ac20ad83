--- Async and bulk calls for the link client: the client never blocks the
-- host's main loop.
--
--    client:create_async(req, function(res, err) ... end)      --> handle | nil, err
--    client:deactivate_async(url_or_id, function(ok, err) ... end)
--    local running, errs = client:poll(timeout_ms)  -- call it from your loop
--    client:timeout()      --> ms until poll has work (-1: nothing pending)
--    client:on_error(fn)   -- errors raised by callbacks go here
--    client:cancel(handle) --> true, may_exist when the call was still pending
--    client:create_many(reqs, {concurrency = 32, on_progress = fn, allow_duplicates = false})
--        --> {{res = ...} | {err = ...}, ...} in input order
--
-- **Engine.** The transfers run on one libcurl multi handle per client
-- (`core.multi_new`, made on first use; `max_concurrent` bounds the
-- transfers in flight, 16 by default) over keep-alive connections.
-- `poll(timeout_ms)` drives them for at most `timeout_ms` (0: never waits),
-- decodes each answer with `portone.link.protocol` (so `res` and `err` are
-- the very objects `create` and `deactivate` return) and calls each callback
-- exactly once. It returns the number of calls still pending.
--
-- **Retries** follow `portone.link.retry`, as for the sync calls, without
-- blocking: a failed attempt that may be retried goes on a timer (a min-heap
-- of due times) and is sent again by the first poll after it is due.
--
-- **Callbacks** run inside `poll`, under `pcall`. An error raised by one does
-- not disturb the other transfers: it goes to the `on_error(fn)` handler
-- (`fn(message, {op =, handle =})`), or, without one, comes back from `poll`
-- as its second value, a list of messages. A callback may start new calls
-- or close the client; it may not call `poll` or `warm` (they raise inside
-- it).
--
-- **close()** (or dropping the client: the multi handle has its own `__gc`)
-- cancels every pending call and frees the handles. No callback runs after
-- `close`; it returns the handles of the cancelled calls PortOne may have
-- acted on (their transfer had started), so that no sent create goes
-- unnoticed; `cancel(handle)` says the same of one call.
--
-- **External event loops.** Simplest: call `client:poll(0)` on every tick.
-- Better: sleep at most `client:timeout()` ms (libcurl's own
-- `curl_multi_timeout`, shortened by the attempts' deadlines and the retry
-- timers; -1 when nothing is pending) and, for loops that watch sockets,
-- also wake when one of `client:fds()` (readable, writable arrays) is
-- ready; then call `client:poll(0)`. A poll that comes late (a stall, a
-- loading screen) still reads an answer that arrived before it: a call
-- fails on its `timeout` only when its answer is not there.
--
-- **create_many** makes a private multi handle with `max_concurrent =
-- concurrency`, feeds it while it runs (requests are encoded as they go, so
-- 10,000 requests never sit in memory as bodies), and closes it before it
-- returns. Invalid requests are reported (`{err = validation error}`) and
-- never sent; so is an entry whose merchant_uid an earlier entry has (one
-- link per order, unless `allow_duplicates`). Inside nginx (OpenResty) it
-- runs the sync `create` in `concurrency` ngx.thread light threads on
-- cosockets instead, and the
-- `*_async` calls return an error there (libcurl must not run in the
-- worker's event loop; `create` is already non-blocking on cosockets).
-- @submodule portone.link.client
local core = require "portone.link.core"
local errors = require "portone.link.errors"
local protocol = require "portone.link.protocol"
local retry = require "portone.link.retry"

local M = {}

--- Transfers in flight per client unless `max_concurrent` says otherwise.
M.DEFAULT_CONCURRENT = 16
--- Default `concurrency` of create_many.
M.DEFAULT_MANY = 32
--- Connections the client's engine opens at once (`core.multi_new`'s
-- `max_opening`): each new TLS connection costs ~0.5 ms of CPU inside the
-- `poll` that drives its handshake (more on a slow host: OpenSSL 3 builds a
-- context per connection), so this bounds what one `poll(0)` can spend on
-- them; one at a time kept the worst poll's CPU under 2 ms in bench-poll
-- where two did not. Other calls reuse the connections already open, and
-- `warm` opens many at once. `create_many` (a blocking call) has no cap.
M.MAX_OPENING = 1
--- Milliseconds one `poll` step may spend starting queued calls
-- (`core.multi_new`'s `budget_ms`): when many calls finish in one `poll(0)`,
-- the next ones are sent a few at a time while the step is within this
-- budget, and the rest in the following polls (`timeout()` then says 0).
-- Sending on an open TLS connection costs ~30 us of CPU, so 16 sends at
-- once plus 16 answers read held a poll for 1-2 ms in bench-poll.
-- `create_many` (a blocking call) has no budget.
M.POLL_BUDGET_MS = 0.5

local clock = core.monotonic
-- What step returns when nothing finished (most poll(0) calls): no table.
local NONE = {}

-- ---------------------------------------------------------------------------
-- A min-heap of {due = seconds, ...} (retry timers).

local function heap_push(h, item)
  local i = #h + 1
  h[i] = item
  while i > 1 do
    local p = math.floor(i / 2)
    if h[p].due <= h[i].due then break end
    h[p], h[i] = h[i], h[p]
    i = p
  end
end

local function heap_pop(h)
  local n = #h
  local top = h[1]
  h[1] = h[n]
  h[n] = nil
  n = n - 1
  local i = 1
  while true do
    local l, r, s = 2 * i, 2 * i + 1, i
    if l <= n and h[l].due < h[s].due then s = l end
    if r <= n and h[r].due < h[s].due then s = r end
    if s == i then break end
    h[s], h[i] = h[i], h[s]
    i = s
  end
  return top
end

-- The first live timer: calls cancelled while they waited for a retry stay
-- in the heap until they reach its top, and are dropped there (poll must
-- not wait for them).
local function heap_first(h)
  while h[1] and h[1].cancelled do heap_pop(h) end
  return h[1]
end

-- ---------------------------------------------------------------------------
-- Engine: calls in flight on one multi handle, with their retry timers.
-- An op is {op = "create"|"deactivate", r = request, token =, attempt =,
-- finish = function(op, res, err)}.

local Engine = {}
Engine.__index = Engine

-- A warm transfer succeeds on any HTTP answer: the connection is open and
-- its certificate verified.
local function warm_result() return true end
-- (create: the client's create_result, set by install)
local DECODE = { deactivate = protocol.deactivate_result, warm = warm_result }

-- x: the client's internals (scrub, sends_of, report, event);
-- hook: the client's on_attempt.
local function new_engine(multi, policy, x, hook)
  return setmetatable({
    m = multi, policy = policy, x = x, hook = hook,
    by_id = {},        -- transfer id -> op
    timers = {},       -- heap of ops waiting for a retry
    n = 0,             -- ops not yet finished
  }, Engine)
end

-- Whether PortOne may have acted on op, whose last attempt ended in err (a
-- create: the link may exist; another call: any send may have been done).
local function may_have_acted(op, err)
  if op.op == "create" then return errors.may_exist(err) end
  return op.sends > 0
end

-- Sends one attempt. `op.blind` is the one re-send per call allowed after a
-- reused connection died (see client.lua's _run): once used, max_sends is 1.
function Engine:send(op)
  op.attempt = (op.attempt or 0) + 1
  op.sends = op.sends or 0
  if op.blind == nil then op.blind = 1 end
  -- the clock is read only for the on_attempt event (as in client.lua's _run)
  if self.hook then op.t0 = clock() end
  local r = op.r
  op.tid = self.m:add(r.method, r.url, r.headers, r.body, 1 + op.blind)
  if op.op == "warm" then self.m:fresh(op.tid) end
  self.by_id[op.tid] = op
end

function Engine:start(op)
  self.n = self.n + 1
  self:send(op)
end

-- True when no retry may be sent or scheduled: create_many's `halted`
-- (it stopped, or the client was closed, maybe by an on_attempt hook).
function Engine:stopped()
  local h = self.halted
  return h ~= nil and h()
end

-- Sends every op whose retry is due.
function Engine:fire_timers(now)
  -- an on_attempt hook may have closed the client (and this engine); a
  -- stopped create_many ends its waiting calls instead (halt)
  if self.closed or self:stopped() then return end
  local t = self.timers
  while t[1] and t[1].due <= now do
    local op = heap_pop(t)
    op.due = nil
    if not op.cancelled then self:send(op) end
  end
end

-- One completion: the result, or a retry timer.
function Engine:complete(op, c)
  local res, err
  local x = self.x
  local k = x.sends_of(c.status, c.err, c.sends)
  op.sends = op.sends + k
  if k > 1 then op.blind = 0 end
  -- as in client.lua's _run: sends with no answer make a create's error final
  op.unanswered = (op.unanswered or 0) + x.unanswered_of(c.status, k)
  if c.err then
    err = protocol.transport_error(c.err)
  else
    -- now = nil: the decoder reads the clock only for a Retry-After date;
    -- the sends so far fill a create's `attempts` in its one constructor
    res, err = DECODE[op.op](c.status, c.body, c.headers, nil, op.sends)
  end
  if err then x.scrub(err, op.token) end
  -- no event (nor clock read) without a hook, as in client.lua's _run; a
  -- warm's HEAD is a connection probe, not an attempt of a call
  local hook = self.hook
  if hook and op.op ~= "warm" then
    local r = op.r
    x.report(hook, x.event(op.op, r.method, r.url, op.attempt, k, op.t0, c.status, err))
  end
  if res then
    if type(res) == "table" then res.attempts = op.sends end
    return op, res, nil
  end
  if op.unanswered > 0 then err.unanswered = op.unanswered end
  -- a warm is a probe: its error is the answer, never retried
  local wait = op.op ~= "warm" and retry.delay(op.op, err, op.attempt, self.policy)
  if wait and not self:stopped() then
    op.err = err
    op.due = clock() + wait
    heap_push(self.timers, op)
    return nil
  end
  err.attempts = op.sends
  return op, nil, err
end

--- Drives the transfers for at most timeout_ms; returns the finished calls
-- (their callbacks not yet called) as one flat list of op, res, err
-- triples, and their count: no table per call, none when nothing finished.
-- @local
function Engine:step(timeout_ms)
  local finished, nf = NONE, 0
  local now = clock()
  self:fire_timers(now)
  local wait = timeout_ms
  local first = heap_first(self.timers)
  if first then
    local till = math.max(0, (first.due - now) * 1000)
    if till < wait then wait = till end
  end
  if next(self.by_id) == nil then
    -- only timers pending: sleep until the first is due (within timeout)
    if first and wait > 0 then core.sleep(wait / 1000) end
    self:fire_timers(clock())
    wait = 0
  end
  if next(self.by_id) ~= nil then
    local list = self.m:perform(wait)
    for _, c in ipairs(list) do
      if self.closed then break end
      local op = self.by_id[c.id]
      self.by_id[c.id] = nil
      if op then
        self.completing = op            -- its on_attempt hook may cancel or close
        local fop, res, err = self:complete(op, c)
        self.completing = nil
        if op.cancelled then
          -- cancelled by the on_attempt hook while its answer was read: no
          -- longer counted (cancel did it), and its callback never runs
          fop = nil
        end
        if fop then
          -- finished: a cancel from an earlier callback of this batch is too
          -- late; close() still names it when its callback never runs
          fop.done = true
          fop.acted = res ~= nil or may_have_acted(fop, err)
          self.n = self.n - 1
          if nf == 0 then finished = {} end
          finished[3 * nf + 1], finished[3 * nf + 2], finished[3 * nf + 3] = fop, res, err
          nf = nf + 1
        end
      end
    end
    -- a retry that is due at once goes out now
    self:fire_timers(clock())
  end
  return finished, nf
end

--- Milliseconds until step has work; -1 when nothing is pending.
-- @local
function Engine:timeout()
  if self.n == 0 then return -1 end
  local t = self.m:timeout()
  local first = heap_first(self.timers)
  if first then
    local till = math.max(0, math.ceil((first.due - clock()) * 1000))
    if t < 0 or till < t then t = till end
  end
  return t
end

-- Cancels op: true and whether PortOne may have acted on it (its transfer
-- had started, or had even finished in the step that is running; or,
-- waiting for a retry, an earlier attempt may have been done: never so for
-- a create, which is retried only after a clear refusal); false when it
-- had finished. A warm's probe is never counted.
function Engine:cancel(op)
  if op.done or op.cancelled then return false end
  op.cancelled = true
  local acted = op.err ~= nil and may_have_acted(op, op.err)
  -- its answer is being read (an on_attempt hook cancels it): it was sent
  if self.completing == op then acted = acted or op.sends > 0 end
  if op.tid and self.by_id[op.tid] == op then
    self.by_id[op.tid] = nil
    local pending, started = self.m:cancel(op.tid)
    acted = acted or started == true or not pending
  end
  self.n = self.n - 1
  return true, acted and op.op ~= "warm"
end

-- Cancels every pending op (the one whose answer is being read too);
-- returns the set of those PortOne may have acted on (op -> true).
function Engine:close()
  local acted = {}
  for _, list in ipairs({ self.by_id, self.timers, { self.completing } }) do
    for _, op in pairs(list) do
      local _, a = self:cancel(op)
      if a then acted[op] = true end
    end
  end
  self.closed = true
  self.m:close()
  self.by_id, self.timers, self.n = {}, {}, 0
  return acted
end

-- ---------------------------------------------------------------------------
-- Client methods

local function argerror(n, fname, msg)
  error(("bad argument #%d to '%s' (%s)"):format(n, fname, msg), 3)
end

-- Raises (as argerror) for a key of options table `opts` not in `known`.
local function check_keys(n, fname, opts, known)
  local why = errors.unknown_option(opts, known)
  if why then error(("bad argument #%d to '%s' (%s)"):format(n, fname, why), 3) end
end
local NOW_OPTS = { now = true }
local MANY_OPTS = { concurrency = true, on_progress = true, allow_duplicates = true }

-- Options of the client's multi handle (see client.lua's `_http`).
local function multi_opts(client, max_concurrent, max_opening, budget_ms)
  local h = client._http or {}
  return {
    max_concurrent = max_concurrent or h.max_concurrent or M.DEFAULT_CONCURRENT,
    max_opening = max_opening, budget_ms = budget_ms,
    timeout = h.timeout, connect_timeout = h.connect_timeout,
    cainfo = h.cainfo, proxy = h.proxy, max_response_bytes = h.max_response_bytes,
    share = h.share, error_headers_only = true,   -- only errors' Retry-After is read
  }
end

-- True inside nginx (lua-nginx-module): there no network code may run in C
-- (DESIGN §2), so create_many uses ngx.thread over the sync path and the
-- multi-based async calls are refused.
local function in_nginx()
  return type(ngx) == "table" and type(ngx.get_phase) == "function"
    and type(ngx.thread) == "table"
end
--- True inside nginx (lua-nginx-module), where the `*_async` calls are
-- refused and `create_many` runs on light threads.
-- @function in_nginx
-- @treturn boolean
M.in_nginx = in_nginx

--- Adds the async methods below to the client class (client.lua calls it
-- once, with the client's private helpers).
-- @local
function M.install(Client, internals)
  local resolve_token = internals.resolve_token
  local closed_error = internals.closed_error
  local create_request = internals.create_request
  DECODE.create = internals.create_result

  local function state(self)
    local a = rawget(self, "_async")
    if not a then
      local m = core.multi_new(multi_opts(self, nil, M.MAX_OPENING, M.POLL_BUDGET_MS))
      a = { engine = new_engine(m, self._policy, internals, self._on_attempt), ops = {}, next = 0 }
      rawset(self, "_async", a)
    end
    return a
  end

  -- Builds the request of one call; nil, err when it cannot be sent.
  local function prepare(self, op, arg, now)
    local ok, token = resolve_token(self)
    if not ok then token.attempts = 0; return nil, token end
    -- the token function may have closed the client
    if self._closed then return nil, closed_error() end
    local r, err
    if op == "create" then
      r, err = create_request(self, token, arg, now or os.time())
    else
      r, err = protocol.deactivate_request(self:_cfg(token), arg)
    end
    if not r then err.attempts = 0; return nil, err end
    return { op = op, r = r, token = token }
  end

  local function queue(self, op, arg, cb, now)
    if self._closed then return nil, closed_error() end
    if in_nginx() then
      return nil, errors.new("transport", op .. "_async is not available inside nginx: libcurl "
        .. "would run in the worker's event loop; call " .. op .. " (non-blocking on "
        .. "cosockets) from a light thread, or create_many", { sent = false, attempts = 0 })
    end
    local o, err = prepare(self, op, arg, now)
    if not o then return nil, err end
    local a = state(self)
    a.next = a.next + 1
    o.handle = a.next
    o.cb = cb
    a.ops[o.handle] = o
    a.engine:start(o)
    return o.handle
  end

  --- Queues a create; `callback(res, err)` runs from a later `poll`.
  -- @return a handle (for `cancel`), or `nil, err` at once (nothing queued)
  function Client:create_async(req, callback, opts)
    if type(req) ~= "table" then argerror(1, "create_async", "table expected, got " .. type(req)) end
    if type(callback) ~= "function" then
      argerror(2, "create_async", "function expected, got " .. type(callback))
    end
    -- NaN would pass every expiry check (create refuses it too)
    local on = type(opts) == "table" and opts.now
    if opts ~= nil and (type(opts) ~= "table" or (on ~= nil and (type(on) ~= "number" or on ~= on))) then
      argerror(3, "create_async", "table {now = number} expected")
    end
    if opts then check_keys(3, "create_async", opts, NOW_OPTS) end
    return queue(self, "create", req, callback, opts and opts.now)
  end

  --- Queues a deactivate; `callback(true | nil, err)` runs from a later `poll`.
  function Client:deactivate_async(url_or_id, callback)
    if type(url_or_id) ~= "string" then
      argerror(1, "deactivate_async", "string expected, got " .. type(url_or_id))
    end
    if type(callback) ~= "function" then
      argerror(2, "deactivate_async", "function expected, got " .. type(callback))
    end
    return queue(self, "deactivate", url_or_id, callback)
  end

  --- Opens and verifies `n` connections of the async engine ahead of time
  -- (say, behind a loading screen), so that later `poll(0)` calls find them
  -- open and spend no time on TCP or TLS handshakes. Blocks until every one
  -- is open or failed (each within the client's `timeout`). Each sends one
  -- `HEAD` to the API path on a fresh connection; any HTTP answer counts.
  -- Pending async calls are driven meanwhile: their callbacks may run here,
  -- and what they raise goes to the `on_error` handler or, without one,
  -- comes back as the third value (a list of messages, as from `poll`).
  -- @tparam[opt=1] int n connections, an integer >= 1 (at most `max_concurrent`
  --   are kept: more is clamped)
  -- @return `true`, or `nil, err` (the first failure: a transport error such
  --   as a refused connection or a certificate that does not verify)
  function Client:warm(n)
    if n == nil then n = 1 end
    if type(n) ~= "number" or n < 1 or n % 1 ~= 0 then
      argerror(1, "warm", "n must be an integer >= 1")
    end
    if self._closed then return nil, closed_error() end
    if in_nginx() then
      return nil, errors.new("transport", "warm is not available inside nginx (no libcurl "
        .. "in the worker's event loop)", { sent = false, attempts = 0 })
    end
    local a = state(self)
    -- it polls: refused from a callback (as poll is) before a probe is sent
    if a.polling then error("warm: called from inside a callback", 2) end
    local cap = (self._http and self._http.max_concurrent) or M.DEFAULT_CONCURRENT
    if n > cap then n = cap end
    local r = { method = "HEAD", url = self._base_url .. protocol.PATH,
                headers = { "User-Agent: " .. self._ua } }
    local left, first_err = n, nil
    local function done(_, err)
      left = left - 1
      if err and not first_err then first_err = err end
    end
    for _ = 1, n do
      a.next = a.next + 1
      -- not in a.ops: no handle of the caller's names a probe (a cancel of
      -- one would leave this loop waiting for ever)
      a.engine:start({ op = "warm", r = r, handle = a.next, cb = done })
    end
    local cb_errs
    while left > 0 and not self._closed do
      local _, errs = self:poll(50)
      for _, e in ipairs(errs or {}) do
        cb_errs = cb_errs or {}
        cb_errs[#cb_errs + 1] = e
      end
    end
    if first_err then return nil, first_err, cb_errs end
    if self._closed then return nil, closed_error(), cb_errs end
    return true, nil, cb_errs
  end

  --- Sets the handler of errors raised by callbacks: `fn(message, {op, handle})`.
  function Client:on_error(fn)
    if fn ~= nil and type(fn) ~= "function" then
      argerror(1, "on_error", "function or nil expected, got " .. type(fn))
    end
    rawset(self, "_on_error", fn)
    return self
  end

  -- The message of an error a callback raised: its __tostring may raise
  -- too, and poll must finish its callbacks (and its `polling` flag).
  local function message(e)
    local ok, s = pcall(tostring, e)
    if ok and type(s) == "string" then return s end
    return "(an error value that tostring fails on: " .. type(e) .. ")"
  end

  -- A callback of poll may not yield: the yield would suspend poll itself
  -- in its caller's coroutine, still "inside a callback" and with the poll's
  -- other callbacks waiting, for good if nothing resumes it. Called from C
  -- (core.call_noyield), a yield raises instead: the callback's error.
  local call_noyield = core.call_noyield

  --- Drives the pending calls for at most `timeout_ms` (default 0) and runs
  -- the callbacks of those that finished.
  -- @return the number of calls still pending, and a list of callback error
  -- messages when some callback raised and no on_error handler took it
  function Client:poll(timeout_ms)
    if timeout_ms ~= nil and (type(timeout_ms) ~= "number" or timeout_ms ~= timeout_ms
        or timeout_ms < 0) then
      argerror(1, "poll", "timeout_ms must be a number >= 0")
    end
    local a = rawget(self, "_async")
    if self._closed or not a then return 0 end
    if a.polling then error("poll: called from inside a callback", 2) end
    a.polling = true
    local ok, finished, nf = pcall(a.engine.step, a.engine, timeout_ms or 0)
    if not ok then a.polling = false; error(finished, 0) end
    local errs
    for i = 1, nf do
      if self._closed then break end   -- no callback after close
      local o, res, err = finished[3 * i - 2], finished[3 * i - 1], finished[3 * i]
      a.ops[o.handle] = nil
      local cok, cerr = pcall(call_noyield, o.cb, res, err)
      if not cok then
        local h = rawget(self, "_on_error")
        local info = { op = o.op, handle = o.handle }
        local hok, herr = true, nil
        if h then hok, herr = pcall(h, cerr, info) end
        if not h or not hok then
          errs = errs or {}
          errs[#errs + 1] = message(h and herr or cerr)
        end
      end
    end
    a.polling = false
    if self._closed then return 0, errs end
    return a.engine.n, errs
  end

  --- Milliseconds until `poll` has work to do (0: now; -1: nothing pending).
  function Client:timeout()
    local a = rawget(self, "_async")
    if self._closed or not a then return -1 end
    return a.engine:timeout()
  end

  --- Sockets the pending transfers wait on: readable, writable (arrays of fds).
  function Client:fds()
    local a = rawget(self, "_async")
    if self._closed or not a then return {}, {} end
    return a.engine.m:fds()
  end

  --- Number of async calls still pending.
  function Client:pending()
    local a = rawget(self, "_async")
    if self._closed or not a then return 0 end
    return a.engine.n
  end

  --- Cancels a pending call: its callback will not run.
  -- @return true when the call was pending, and then whether it may have
  --   reached PortOne (its request was on its way or sent: a create's link
  --   may exist); false when it is unknown or already finished (its
  --   callback then runs, or ran)
  function Client:cancel(handle)
    local a = rawget(self, "_async")
    if self._closed or not a then return false end
    local o = a.ops[handle]
    if not o then return false end
    local ok, acted = a.engine:cancel(o)
    -- false: it finished in the poll that is running and its callback is
    -- still to run; it stays listed, so a close before then names it
    if ok then a.ops[handle] = nil end
    return ok, acted
  end

  local sync_close = Client.close
  --- Closes the client (see `portone.link.client`): also cancels every
  -- pending async call (their callbacks never run) and frees the multi handle.
  -- @return true, and the handles of the cancelled calls that may have
  --   reached PortOne (their request was on its way or sent: a create's
  --   link may exist), in no order; an empty list when none
  function Client:close()
    local a = rawget(self, "_async")
    local maybe = {}
    if a then
      rawset(self, "_async", nil)
      local acted = a.engine:close()
      -- a.ops: the calls whose callback has not run. Besides those the
      -- engine cancelled: calls that finished in the poll that is running
      -- (a callback or on_attempt closed the client)
      for h, o in pairs(a.ops) do
        if acted[o] or (o.done and o.acted) then
          maybe[#maybe + 1] = h
        end
      end
      a.ops = {}
    end
    return sync_close(self), maybe
  end
  Client.__close = Client.close

  -- A create_many entry that was never started (on_progress raised or
  -- closed the client): nothing of it was sent.
  local function not_started(why)
    return { err = errors.new("transport", "not started: " .. why, { sent = false, attempts = 0 }),
             not_started = true }
  end

  -- Fills the entries never started; returns results, stop (nil when all ran).
  local function finish_many(results, n, stop)
    if not stop then return results end
    for i = 1, n do
      if results[i] == nil then results[i] = not_started(stop) end
    end
    return results, errors.new("transport", "create_many stopped: " .. stop, { sent = false })
  end

  -- on_progress under pcall: a raise stops create_many (what is done is kept).
  local function call_progress(progress, done, n, failed)
    if not progress then return nil end
    local ok, e = pcall(progress, done, n, failed)
    if not ok then return "on_progress raised: " .. message(e) end
    return nil
  end

  -- The error of create_many's entry `i` that is not a table (never sent).
  local function not_a_table(i, req)
    local err = errors.validation({ { field = "[" .. i .. "]", code = "type",
      message = "request must be a table, got " .. type(req) } })
    err.attempts = 0
    return err
  end

  -- Entries of create_many's `reqs[1..n]` whose merchant_uid an earlier
  -- entry already has: index -> the first such entry's index (nil when
  -- there is none): sent, both would be created, two links for one order.
  -- Before validation, as batch's check: an invalid first entry still makes
  -- the later one a duplicate (fix both). Read raw, as the encoder reads
  -- what it sends; entries that are no table or have no string merchant_uid
  -- are left to validation.
  local function find_duplicates(reqs, n)
    local first, dup = {}, nil
    for i = 1, n do
      local req = reqs[i]
      local uid = type(req) == "table" and rawget(req, "merchant_uid")
      if type(uid) == "string" then
        local j = first[uid]
        if j then
          dup = dup or {}
          dup[i] = j
        else
          first[uid] = i
        end
      end
    end
    return dup
  end

  -- The error of an entry whose merchant_uid entry `first` has (never sent).
  local function duplicate(first)
    local err = errors.validation({ { field = "merchant_uid", code = "duplicate",
      message = ("already used by entry [%d] of this call; not sent, a second link for one order"
        .. " (allow_duplicates = true sends it)"):format(first) } })
    err.sent, err.attempts = false, 0
    return err
  end

  -- The number of entries of create_many's `reqs` (`#reqs`), or nil and the
  -- message of an argument error when a positive integer key lies past it:
  -- `#` stops at a border, so the requests after a hole were neither sent
  -- nor reported. Other keys (table.pack's n) are no entries.
  local function count_reqs(reqs)
    local n = #reqs
    for k in pairs(reqs) do
      if type(k) == "number" and k > n and k % 1 == 0 then
        local hole = 1
        while rawget(reqs, hole) ~= nil do hole = hole + 1 end
        return nil, ("an array expected: [%d] is nil, [%.14g] is not"):format(hole, k)
      end
    end
    return n
  end

  -- create_many over ngx.thread light threads and the sync create; `dup`:
  -- find_duplicates' map (or nil), those entries are not sent.
  local function many_ngx(self, reqs, n, conc, progress, dup)
    local results, nexti, done, failed = {}, 1, 0, 0
    local stop
    local function worker()
      while nexti <= n and not stop do
        if self._closed then stop = "the client was closed"; break end
        local i = nexti
        nexti = nexti + 1
        local req, res, err = reqs[i], nil, nil -- luacheck: ignore err
        if dup and dup[i] then
          err = duplicate(dup[i])
        elseif type(req) == "table" then
          res, err = self:create(req)
        else
          err = not_a_table(i, req)
        end
        results[i] = res and { res = res } or { err = err }
        done = done + 1
        if not res then failed = failed + 1 end
        -- on_progress may yield (a cosocket call), and the other threads'
        -- calls run meanwhile: keep the first stop whoever set it
        if not stop then stop = call_progress(progress, done, n, failed) or stop end
      end
    end
    local threads = {}
    for t = 1, math.min(conc, n) do
      threads[t] = ngx.thread.spawn(worker)
    end
    for t = 1, #threads do
      local ok, e = ngx.thread.wait(threads[t])
      if not ok then error(e, 0) end
    end
    if not stop and self._closed and nexti <= n then stop = "the client was closed" end
    return finish_many(results, n, stop)
  end

  -- create_many over a private multi handle. When on_progress raises or
  -- the client is closed (by on_progress, on_attempt or a token function),
  -- nothing new starts, no retry is sent, and the calls in flight finish
  -- (their links may exist: their URLs are kept). `dup` as for many_ngx.
  local function many_multi(self, reqs, n, conc, progress, dup)
    local results, done, failed = {}, 0, 0
    local eng = new_engine(core.multi_new(multi_opts(self, conc)), self._policy, internals,
      self._on_attempt)
    local stop
    eng.halted = function() return stop ~= nil or self._closed == true end
    local ok, e = pcall(function()
      local nexti = 1
      local function record(i, res, err)
        results[i] = res and { res = res } or { err = err }
        done = done + 1
        if not res then failed = failed + 1 end
        if not stop then stop = call_progress(progress, done, n, failed) end
        if not stop and self._closed then stop = "the client was closed" end
      end
      local function halt()
        -- calls waiting for a retry end with their last error
        while eng.timers[1] do
          local o = heap_pop(eng.timers)
          o.err.attempts = o.sends
          eng.n = eng.n - 1
          record(o.index, nil, o.err)
        end
      end
      -- keeps about `conc` calls in flight (plus those waiting for a retry)
      local function feed()
        while nexti <= n and eng.n < conc and not eng:stopped() do
          local i = nexti
          nexti = nexti + 1
          local req = reqs[i]
          local o, err
          if dup and dup[i] then
            err = duplicate(dup[i])
          elseif type(req) ~= "table" then
            err = not_a_table(i, req)
          else
            o, err = prepare(self, "create", req)
          end
          if o then
            o.index = i
            eng:start(o)
          else
            record(i, nil, err)
          end
        end
      end
      feed()
      while eng.n > 0 do
        if eng:stopped() then halt() end
        if eng.n == 0 then break end
        local finished, nf = eng:step(1000)
        for k = 1, nf do
          local o, res, err = finished[3 * k - 2], finished[3 * k - 1], finished[3 * k]
          record(o.index, res, err)
        end
        feed()
      end
    end)
    eng:close()
    if not ok then error(e, 0) end
    if not stop and self._closed then stop = "the client was closed" end
    return finish_many(results, n, stop)
  end

  --- Creates many links at once.
  -- An entry whose `merchant_uid` an earlier entry of the call already has
  -- is not sent: two links for one order. Its result is
  -- `{err = e}`, a validation error (field `merchant_uid`, code
  -- `duplicate`, the message names the earlier entry's index; `sent =
  -- false`, `attempts = 0`), counted by `on_progress` as a failed entry;
  -- the first entry is sent normally, whatever the later ones hold (and
  -- they are refused even when the first is invalid). The
  -- call goes on, as for any invalid entry (the CLI's `batch` refuses the
  -- whole file instead: its `--resume` matches results by merchant_uid).
  -- `allow_duplicates = true` sends every entry.
  -- When `on_progress` raises or the client is closed (by `on_progress`
  -- or `on_attempt`), create_many stops: nothing new starts, no retry is
  -- sent, the calls in flight finish, and what was done is
  -- returned (created links with their URLs). The entries never started
  -- are `{err = e, not_started = true}` (`e.kind = "transport"`, nothing
  -- sent), and a second value says why it stopped.
  -- @tparam table reqs an array of request tables (a positive integer key
  --   past `#reqs`, after a hole, raises: those requests would be dropped)
  -- @tparam[opt] table opts `concurrency` (32), `on_progress(done, total, failed)`,
  --   `allow_duplicates` (false: an entry whose merchant_uid an earlier one
  --   has is not sent)
  -- @return an array, in input order, of `{res = result}` or `{err = err}`;
  --   and, when it stopped early, an error (kind `transport`) saying why
  function Client:create_many(reqs, opts)
    if type(reqs) ~= "table" then argerror(1, "create_many", "table expected, got " .. type(reqs)) end
    if opts ~= nil and type(opts) ~= "table" then
      argerror(2, "create_many", "table expected, got " .. type(opts))
    end
    opts = opts or {}
    check_keys(2, "create_many", opts, MANY_OPTS)
    local conc = opts.concurrency or M.DEFAULT_MANY
    if type(conc) ~= "number" or conc < 1 or conc > 4096 or conc % 1 ~= 0 then
      argerror(2, "create_many", "concurrency must be an integer in [1, 4096]")
    end
    local progress = opts.on_progress
    if progress ~= nil and type(progress) ~= "function" then
      argerror(2, "create_many", "on_progress must be a function")
    end
    local allow_dup = opts.allow_duplicates
    if allow_dup ~= nil and type(allow_dup) ~= "boolean" then
      argerror(2, "create_many", "allow_duplicates must be a boolean")
    end
    local n, bad = count_reqs(reqs)
    if not n then argerror(1, "create_many", bad) end
    if self._closed then
      local results = {}
      for i = 1, n do results[i] = { err = closed_error() } end
      return results
    end
    if n == 0 then return {} end
    local dup = not allow_dup and find_duplicates(reqs, n) or nil
    if in_nginx() then
      -- a phase without cosockets (log, header_filter, init_worker, set):
      -- nothing can be sent, as create says, rather than a raise from
      -- ngx.thread.spawn
      local ok, why = require("portone.link.transport.ngx").available()
      if not ok then return finish_many({}, n, why) end
      return many_ngx(self, reqs, n, conc, progress, dup)
    end
    return many_multi(self, reqs, n, conc, progress, dup)
  end
end

M.Engine = Engine
return M
