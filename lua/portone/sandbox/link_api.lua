--- The link API surface: `POST /api/supplements/v1/link/payment` (create)
-- and `PUT .../{id}` (deactivate), as DESIGN §1 describes them. Uses the
-- shared state only.
local cjson = require "cjson.safe"
local state = require "portone.sandbox.state"

local M = {}

local JSON = state.JSON
local API = "/api/supplements/v1/link/payment"
local API_ID = "^" .. API:gsub("%p", "%%%0") .. "/([^/]+)$"
local REQUIRED = { "title", "user_code", "amount", "merchant_uid", "name",
                   "currency", "buyer_tel", "pay_methods" }

local function fail(message) return JSON(400, { code = -1, message = message }) end

local function create(body)
  local ctype = ngx.var.content_type or ""
  if not ctype:lower():find("^application/json") then
    return fail("Content-Type must be application/json, got '" .. ctype .. "'")
  end
  local req = body and cjson.decode(body)
  if type(req) ~= "table" or req[1] ~= nil then return fail("body is not a JSON object") end
  if type(req.payment_info) ~= "string" then
    return fail("payment_info must be a string holding JSON, got " .. type(req.payment_info))
  end
  local info = cjson.decode(req.payment_info)
  if type(info) ~= "table" then return fail("payment_info does not hold a JSON object") end
  for _, k in ipairs(REQUIRED) do
    if info[k] == nil or info[k] == cjson.null then
      return fail("payment_info." .. k .. " is required")
    end
  end
  if info.expired_at ~= nil then return fail("expired_at belongs outside payment_info") end
  if not state.is_integer(info.amount) or info.amount <= 0 then
    return fail("payment_info.amount must be a positive integer")
  end
  if type(info.pay_methods) ~= "table" or #info.pay_methods == 0 then
    return fail("payment_info.pay_methods must be a non-empty array")
  end
  for i, pm in ipairs(info.pay_methods) do
    if type(pm) ~= "table" or type(pm.pay_method) ~= "string" then
      return fail("payment_info.pay_methods[" .. i .. "].pay_method is required")
    end
  end
  local exp = req.expired_at
  if exp == nil then return fail("expired_at is required") end
  if not state.is_integer(exp) then return fail("expired_at must be an integer (unix seconds)") end
  if exp <= state.now() then return fail("expired_at must be in the future") end

  local labels = {}
  for _, pm in ipairs(info.pay_methods) do labels[#labels + 1] = pm.label or pm.pay_method end
  local rec, err = state.encode({
    title = tostring(info.title), name = tostring(info.name), amount = info.amount,
    currency = tostring(info.currency), labels = labels, expired_at = exp,
    merchant_uid = tostring(info.merchant_uid), active = true,
    info = info, -- the whole payment_info, for the bridge page and payments
  })
  -- a number beyond a double (1e400 decodes as inf) cannot be written back
  if not rec then return fail("payment_info cannot be stored: " .. tostring(err)) end
  local links = state.links()
  for _ = 1, 10 do
    local id = state.random_id()
    -- add, not safe_add: when the dict is full the least recently used
    -- links make room (a sandbox that ran a benchmark's 100,000 creates
    -- keeps creating; an old link's page then answers 404)
    if links:add(id, rec) then
      -- the creation index GET /__sandbox/links pages through (no get_keys
      -- over the dict); "#" keys never clash with the ids, which are [%w_-]
      links:set("#" .. links:incr("#seq", 1, 0), id)
      state.stats():incr("creates", 1, 0)
      return JSON(200, { shortenedUrl = state.conf.base .. "/" .. id })
    end
  end
  return JSON(500, { code = -1, message = "sandbox: no free id (links dict full?)" })
end

local function deactivate(id)
  local links = state.links()
  -- only a link id: the dict also holds the creation index ("#<n>", "#seq")
  local rec = id:match("^[%w_-]+$") and state.get_json(links, id)
  if type(rec) ~= "table" then return JSON(404, { code = -1, message = "no such link: " .. id }) end
  rec.active = false
  links:set(id, state.encode(rec))
  state.stats():incr("deactivates", 1, 0)
  return JSON(200, {})
end

local function not_allowed() return JSON(405, { code = -1, message = "method not allowed" }) end

--- class, handler(body) for the link API's paths, or nil.
function M.route(method, uri)
  if uri == API then
    if method == "POST" then return "create", create end
    return "create", not_allowed
  end
  local id = uri:match(API_ID)
  if id then
    if method == "PUT" then return "deactivate", function() return deactivate(id) end end
    return "deactivate", not_allowed
  end
  return nil
end

return M
