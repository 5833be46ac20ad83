--- Example handler: creates a PortOne payment link for an order posted as
-- JSON, inside nginx, without blocking the worker. Inside nginx the client
-- picks the cosocket transport by itself (transport = "ngx").
--
--   POST /orders/link   {"order_id", "amount", "name", "buyer_tel", ["buyer_email"]}
--     201 {"url": "https://impay.link/...", "id": "..."}
--     422 {"error": ..., "errors": [{field, code, message}]}   (the request)
--     502 {"error": ..., "kind": ..., "may_exist": bool}       (PortOne or the network;
--         may_exist: the request left with no clear answer, so the link may
--         exist: look before creating it again, or a second link is made)
--   POST /orders/unlink {"id"}  -> 200 {"ok": true}
--   GET  /orders/metrics        -> text: one "name value" line per counter
-- luacheck: globals ngx
local cjson = require "cjson.safe"
local link = require "portone.link"

local M = {}

-- One client per worker, made on first use. Creating it is cheap and makes no
-- request, so it could also be made at load time (even in init_by_lua); the
-- requests themselves must run where cosockets work: rewrite, access,
-- content and ngx.timer callbacks. Elsewhere (init, set, header/body filter,
-- log) create() returns an error that says to use ngx.timer.at.
-- Metrics: `on_attempt` runs once per attempt (each send to PortOne, and
-- each try that failed before sending) with {op, method, url, attempt,
-- status, duration, err_kind, sent, sends}. Here it counts them in a
-- lua_shared_dict, which every worker shares, for /orders/metrics (or a
-- Prometheus exporter) to read. A hook that raises never breaks the call.
local function count_attempt(ev)
  local dict = ngx.shared.portone_link_metrics
  if not dict then return end
  local outcome = ev.err_kind or tostring(ev.status)   -- "200", "503", "timeout", ...
  dict:incr(ev.op .. ".attempts." .. outcome, 1, 0)
  dict:incr(ev.op .. ".sends", ev.sends, 0)            -- requests that reached the wire
  dict:incr(ev.op .. ".ms", math.floor(ev.duration * 1000 + 0.5), 0)
end

local client
local function get_client()
  if not client then
    client = link.new {
      base_url = os.getenv("PORTONE_LINK_BASE_URL"), -- nil: https://api.iamport.co
      token = os.getenv("PORTONE_LINK_TOKEN"),        -- optional bearer token
      timeout = 10, connect_timeout = 3, retries = 2,
      on_attempt = count_attempt,
    }
  end
  return client
end

local function reply(status, body)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(body))
  return ngx.exit(status)
end

local function read_json()
  if ngx.req.get_method() ~= "POST" then return nil, "POST a JSON body" end
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then return nil, "empty body (or larger than client_body_buffer_size)" end
  local t = cjson.decode(body)
  if type(t) ~= "table" then return nil, "body is not a JSON object" end
  return t
end

function M.create()
  local order, why = read_json()
  if not order then return reply(400, { error = why }) end
  -- Map the shop's order onto the link request (the API's own field names).
  local res, err = get_client():create {
    title = "Order " .. tostring(order.order_id),
    user_code = "imp12345678",          -- your merchant code
    merchant_uid = order.order_id,      -- PortOne refuses a second payment for it
    name = order.name,
    amount = order.amount,
    currency = "KRW",
    buyer_tel = order.buyer_tel,
    buyer_email = order.buyer_email,
    pay_methods = { { pg = "html5_inicis", pay_method = "card", label = "Card" } },
    expired_at = ngx.time() + 24 * 3600,
  }
  if res then return reply(201, { url = res.url, id = res.id }) end
  if err.kind == "validation" then
    return reply(422, { error = err.message, errors = err.errors })
  end
  ngx.log(ngx.ERR, "payment link: ", tostring(err))
  return reply(502, { error = err.message, kind = err.kind, status = err.status,
                      may_exist = link.errors.may_exist(err) })
end

function M.deactivate()
  local a, why = read_json()
  if not a then return reply(400, { error = why }) end
  if type(a.id) ~= "string" then return reply(400, { error = "id (string) expected" }) end
  local ok, err = get_client():deactivate(a.id)
  if ok then return reply(200, { ok = true }) end
  return reply(err.kind == "validation" and 422 or 502, { error = err.message, kind = err.kind })
end

--- GET /orders/metrics: the counters of count_attempt, sorted.
function M.metrics()
  local dict = ngx.shared.portone_link_metrics
  local keys = dict and dict:get_keys(0) or {}
  table.sort(keys)
  ngx.header["Content-Type"] = "text/plain"
  for _, k in ipairs(keys) do ngx.say(k, " ", dict:get(k)) end
end

--- From a phase without cosockets (here: log_by_lua), defer to a timer.
function M.deactivate_later(id)
  local ok, err = ngx.timer.at(0, function(premature)
    if premature then return end
    local done, derr = get_client():deactivate(id)
    if not done then ngx.log(ngx.ERR, "deactivate ", id, ": ", tostring(derr)) end
  end)
  if not ok then ngx.log(ngx.ERR, "ngx.timer.at: ", err) end
end

return M
