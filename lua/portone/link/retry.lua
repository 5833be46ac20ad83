--- Retry policy: which failures may be retried, and how long to wait.
-- Pure: no clock, no sleeping; the random source is injectable for tests.
--
-- Rules (DESIGN §4):
--
-- * A create (POST, not idempotent) is retried only when the request surely
--   did not reach the server (`err.sent == false`: DNS, connect or TLS
--   handshake failure, or a timeout before anything was sent), or when the
--   server answered 429 or 503.
-- * A deactivate (PUT, idempotent) is also retried on any other transport
--   failure, on timeouts, and on every 5xx.
-- * Failures that a retry cannot fix are never retried: certificate errors,
--   bad URLs, a response over the size cap, validation, api and decode errors.
-- * Back-off is full jitter: `random() * min(cap, base * 2^(attempt-1))`.
-- * `Retry-After` (seconds or HTTP-date) replaces the jitter. When it asks for
--   more than `retry_after_max` seconds the call gives up at once instead of
--   retrying early; `err.retry_after` tells the caller when to come back.
--
-- libcurl itself re-sends a request when a *reused* keep-alive connection
-- dies before any response byte arrives (Curl_retry_request), and the ngx
-- transport does the same. The client allows that silent re-send once per
-- call (max_sends, see client.lua's _run); a failure after a send is never
-- retried here for a create.
-- @module portone.link.retry
local M = {}

--- Defaults of the policy (seconds).
-- @field retries 2 further attempts after the first
-- @field base 0.25 first back-off window
-- @field cap 8 largest back-off window
-- @field retry_after_max 30 largest Retry-After honoured
M.DEFAULTS = { retries = 2, base = 0.25, cap = 8, retry_after_max = 30 }

-- curl codes a retry cannot fix: unsupported protocol, bad URL, certificate
-- problems (58, 59, 60, 77, 83, 90), and a write error from the size cap.
local PERMANENT_CURL = { [1] = true, [3] = true, [58] = true, [59] = true, [60] = true,
                         [77] = true, [83] = true, [90] = true }

--- True when `err` from operation `op` may be retried: `"create"` is the one
-- call that is not idempotent; any other name (`"deactivate"`, a REST
-- lookup) gets the idempotent rules.
function M.retryable(op, err)
  local kind = err.kind
  -- a send of this call got no answer: PortOne may have made the link, so
  -- a 429 or 503 to a later send of it says nothing about that one
  if op == "create" and (err.unanswered or 0) > 0 then return false end
  if kind == "transport" or kind == "timeout" then
    if err.too_large or err.permanent or PERMANENT_CURL[err.curl_code] then return false end
    if err.sent == false then return true end
    return op ~= "create"
  elseif kind == "http" then
    local s = err.status
    if s == 429 or s == 503 then return true end
    return op ~= "create" and type(s) == "number" and s >= 500 and s <= 599
  end
  return false
end

--- Seconds to wait before the next attempt, or nil when not to retry.
-- Sets `err.retryable` to whether the failure itself is retryable.
-- @tparam string op "create" or "deactivate"
-- @tparam table err the error of the attempt that just failed
-- @tparam number attempt how many attempts were made so far (1 after the first)
-- @tparam[opt] table policy `{retries, base, cap, retry_after_max, random}`
-- @return seconds, or nil
function M.delay(op, err, attempt, policy)
  policy = policy or M.DEFAULTS
  local ok = M.retryable(op, err)
  err.retryable = ok
  if not ok then return nil end
  local retries = policy.retries or M.DEFAULTS.retries
  if attempt > retries then return nil end
  local ra = err.retry_after
  if type(ra) == "number" then
    local max = policy.retry_after_max or M.DEFAULTS.retry_after_max
    if ra > max then return nil end
    return ra
  end
  local base = policy.base or M.DEFAULTS.base
  local cap = policy.cap or M.DEFAULTS.cap
  local window = math.min(cap, base * 2 ^ (attempt - 1))
  local rnd = policy.random or math.random
  return rnd() * window
end

return M
