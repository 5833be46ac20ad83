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

-- Tokens live under "tok:<epoch>:<token>"; a revoke moves to a new epoch,
-- so it is one incr, not a walk over the dict (which also holds payments).
local function key(d, tok)
  return "tok:" .. (d:get("tok_epoch") or 0) .. ":" .. tok
end

--- The current token (5 minutes longer in its last minute), a new one once
-- it expired: token, expiry, now.
function M.issue()
  local d, now = state.stats(), state.now()
  local cur = d:get("tok_current")
  local exp = cur and d:get(key(d, cur))
  if cur and exp and exp > now and exp - now <= M.EXTEND_WITHIN then
    exp = exp + M.EXTEND_BY
    d:set(key(d, cur), exp, M.TTL + 3600)
  elseif not (cur and exp and exp > now) then
    cur, exp = state.random_hex(20), now + M.TTL
    -- the dict's own expiry only cleans up; validity is checked on the sandbox clock
    d:set(key(d, cur), exp, M.TTL + 3600)
    d:set("tok_current", cur)
    d:incr("tok_count:" .. (d:get("tok_epoch") or 0), 1, 0)
  end
  return cur, exp, now
end

--- True when `tok` is a live token.
function M.valid(tok)
  if type(tok) ~= "string" or not tok:match("^%x+$") then return false end
  local d = state.stats()
  local exp = d:get(key(d, tok))
  return exp ~= nil and state.now() < exp
end

--- Forgets every token; returns how many were issued since the last revoke.
function M.revoke_all()
  local d = state.stats()
  local n = d:get("tok_count:" .. (d:get("tok_epoch") or 0)) or 0
  d:incr("tok_epoch", 1, 0)
  d:delete("tok_current")
  return n
end

return M
