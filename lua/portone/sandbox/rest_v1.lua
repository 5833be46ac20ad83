--- The sandbox's REST V1 (DESIGN §1): `POST /users/getToken` and
-- `GET /payments/{imp_uid}`, in the `{code, message, response}` envelope.
-- Runs inside the sandbox's nginx (see `portone.sandbox.server`).
--
-- Tokens: the imp_key/imp_secret given to `sandbox.start` are the only pair
-- accepted (any non-empty pair when none was given). A token lives 30 minutes
-- on the sandbox clock (which `/__sandbox/clock` can move); the same token
-- comes back until less than a minute of it is left, as PortOne does. Older
-- tokens stay valid until their own expiry. `POST /__sandbox/tokens
-- {"revoke": true}` makes every token fail with 401 (to exercise a client's
-- refresh-and-retry).
local cjson = require "cjson.safe"

local M = {}

M.TTL = 1800
M.REISSUE_WITHIN = 60

local function dict() return ngx.shared.portone_stats end

local function conf() return require("portone.sandbox.server").conf or {} end

--- The sandbox clock (server.lua's: unix time plus the admin clock offset).
function M.now()
  return require("portone.sandbox.server").now()
end

-- PortOne's envelope. cjson keeps integers below 2^53 exact only up to 14
-- digits; every number here is an amount or a unix time, far below that.
local function envelope(status, code, message, response)
  return status, "application/json;charset=UTF-8", cjson.encode({
    code = code, message = message == nil and cjson.null or message,
    response = response == nil and cjson.null or response,
  })
end
M.envelope = envelope

local function random_hex(n)
  local f = io.open("/dev/urandom", "rb")
  local bytes = f and f:read(n)
  if f then f:close() end
  if not bytes or #bytes ~= n then
    local t = {}
    for i = 1, n do t[i] = string.char(math.random(0, 255)) end
    bytes = table.concat(t)
  end
  return (bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end
M.random_hex = random_hex

local function read_credentials(body)
  local ctype = (ngx.var.content_type or ""):lower()
  local req
  if ctype:find("^application/x%-www%-form%-urlencoded") then
    req = ngx.decode_args(body or "", 10)
  else
    req = body and cjson.decode(body)
  end
  if type(req) ~= "table" then return nil end
  return req.imp_key, req.imp_secret
end

--- POST /users/getToken
function M.get_token(body)
  local key, secret = read_credentials(body)
  local c = conf()
  local ok
  if c.imp_key then
    ok = key == c.imp_key and secret == c.imp_secret
  else
    ok = type(key) == "string" and key ~= "" and type(secret) == "string" and secret ~= ""
  end
  if not ok then
    return envelope(401, -1, "imp_key, imp_secret 정보가 올바르지 않습니다.")
  end
  local d, now = dict(), M.now()
  local cur = d:get("tok_current")
  local exp = cur and d:get("tok:" .. cur)
  if not (cur and exp and exp - now > M.REISSUE_WITHIN) then
    cur, exp = random_hex(20), now + M.TTL
    -- the dict's own expiry only cleans up; validity is checked on the sandbox clock
    d:set("tok:" .. cur, exp, M.TTL + 3600)
    d:set("tok_current", cur)
  end
  return envelope(200, 0, nil, { access_token = cur, now = now, expired_at = exp })
end

local function bearer()
  local h = ngx.req.get_headers(50)["authorization"]
  if type(h) == "table" then return nil end
  return h and h:match("^[Bb]earer%s+(%S+)%s*$")
end

--- True when the request carries a live token.
function M.authorized()
  local tok = bearer()
  if not tok or not tok:match("^[%x]+$") then return false end
  local exp = dict():get("tok:" .. tok)
  return exp ~= nil and M.now() < exp
end

--- The payment as REST V1 shows it (PortOne's field names).
function M.view(p)
  return {
    imp_uid = p.imp_uid, merchant_uid = p.merchant_uid, amount = p.amount,
    cancel_amount = 0, currency = p.currency, status = p.status,
    pay_method = p.pay_method, pg_provider = p.pg, channel_key = p.channel_key,
    name = p.name, buyer_name = p.buyer_name, buyer_tel = p.buyer_tel,
    buyer_email = p.buyer_email, paid_at = p.paid_at, started_at = p.started_at,
    failed_at = 0, cancelled_at = 0, custom_data = p.custom_data,
    receipt_url = p.receipt_url, user_agent = "sandbox",
  }
end

--- GET /payments/{imp_uid}
function M.payment(imp_uid)
  if not M.authorized() then return envelope(401, -1, "Unauthorized") end
  local raw = dict():get("pay:" .. imp_uid)
  if not raw then return envelope(404, -1, "존재하지 않는 결제정보입니다.") end
  return envelope(200, 0, nil, M.view(cjson.decode(raw)))
end

--- Routes REST V1 requests: returns class, handler (handler(body) -->
-- status, content_type, body), or nil for other paths.
function M.route(method, uri)
  if uri == "/users/getToken" then
    if method == "POST" then return "token", M.get_token end
    return "token", function() return envelope(405, -1, "method not allowed") end
  end
  local id = uri:match("^/payments/([^/]+)$")
  if id then
    if method ~= "GET" then
      return "payment", function() return envelope(405, -1, "method not allowed") end
    end
    if not id:match("^[%w_%-]+$") or #id > 64 then
      return "payment", function() return envelope(404, -1, "존재하지 않는 결제정보입니다.") end
    end
    return "payment", function() return M.payment(id) end
  end
  return nil
end

--- Admin: POST /__sandbox/tokens {"revoke": true}
function M.revoke_all()
  local d = dict()
  local n = 0
  for _, k in ipairs(d:get_keys(0)) do
    if k:sub(1, 4) == "tok:" then d:delete(k); n = n + 1 end
  end
  d:delete("tok_current")
  return n
end

return M
