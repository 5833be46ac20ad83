--- REST V1 access tokens (shared state: used by REST V1 and the admin API).
--
-- The imp_key/imp_secret the sandbox was started with are the only pair
-- accepted; `portone.sandbox.start` makes one up when none is given (printed
-- at start, and in `GET /__sandbox/keys`). A token lives 30 minutes on the
-- sandbox clock (which `/__sandbox/clock` can move). As PortOne documents
-- it, the same token comes back until it expires, and one asked for in its
-- last minute gets 5 more minutes; only an expired one is replaced. Older
-- tokens stay valid until their own expiry. `revoke_all` makes every token fail
-- (to exercise a client's refresh-and-retry).
local state = require "portone.sandbox.state"

local M = {}

M.TTL = 1800
M.EXTEND_WITHIN = 60
M.EXTEND_BY = 300

--- True when key/secret are the sandbox's pair.
function M.accepts(key, secret)
  local c = state.conf
  return type(key) == "string" and type(secret) == "string" and c.imp_key ~= nil
    and key == c.imp_key and secret == c.imp_secret
end

-- Tokens live in a dict of their own, portone_tokens: "tok:<token>" -> its
-- expiry, "tok_current", "tok_count". A revoke empties it: a revoked token
-- is gone, not marked as revoked, so no eviction can bring one back. (A
-- revocation marker, an epoch in the stats dict that tokens were keyed by,
-- was evicted when counters and webhook logs filled that dict: the tokens
-- of the epoch answered 401, and the next revoke counted from 0 again and
-- made tokens of an earlier epoch valid once more.) Nothing else is stored
-- here, so a full stats dict cannot take a token; were this dict ever full,
-- a set would drop the least recently used tokens: 401, and the client
-- gets a new one.
local function dict() return state.tokens() end

--- The current token (5 minutes longer in its last minute), a new one once
-- it expired: token, expiry, now.
function M.issue()
  local d, now = dict(), state.now()
  local cur = d:get("tok_current")
  local exp = cur and d:get("tok:" .. cur)
  if exp and exp > now then
    if exp - now > M.EXTEND_WITHIN then return cur, exp, now end
    -- replace, not set: a revoke since the get has removed the token, and a
    -- set would bring it back (the dict's own expiry only cleans up;
    -- validity is checked on the sandbox clock)
    if d:replace("tok:" .. cur, exp + M.EXTEND_BY, M.TTL + 3600) then
      return cur, exp + M.EXTEND_BY, now
    end
  end
  cur, exp = state.random_hex(20), now + M.TTL
  d:set("tok:" .. cur, exp, M.TTL + 3600)
  d:set("tok_current", cur)
  d:incr("tok_count", 1, 0)
  return cur, exp, now
end

--- True when `tok` is a live token.
function M.valid(tok)
  if type(tok) ~= "string" or not tok:match("^%x+$") then return false end
  local exp = dict():get("tok:" .. tok)
  return exp ~= nil and state.now() < exp
end

--- Forgets every token; returns how many were issued since the last revoke.
function M.revoke_all()
  local d = dict()
  local n = d:get("tok_count") or 0
  d:flush_all()
  d:flush_expired()
  return n
end

return M
