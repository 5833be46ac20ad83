--- The sandbox's shared state, under every surface module (link API, bridge
-- page, REST V1, admin API) and using none of them: the settings, the clock,
-- the shared dicts, the request body, ids and JSON helpers. Runs inside the
-- sandbox's nginx (lua-nginx-module).
--
-- The dicts (declared by `portone.sandbox.config`):
--   portone_links   link id -> JSON link record; "#<n>" -> id by creation, "#seq"
--   portone_faults  "q:<match>" lists of JSON faults (`portone.sandbox.faults`)
--   portone_stats   everything else: counters, clock offset, request log,
--                   payments, tokens, webhook log (`reset` flushes it)
local cjson = require "cjson.safe"
-- luacheck: globals ngx  (handlers assign ngx.status and ngx.header fields)

local M = {}

--- Set by `init` from the generated config (scheme, host, port, base, prefix,
-- imp_key, imp_secret, keys_made_up, latency_ms, watch_pid, announce).
M.conf = { scheme = "http", host = "127.0.0.1", port = 0 }

function M.links() return ngx.shared.portone_links end
function M.faults() return ngx.shared.portone_faults end
function M.stats() return ngx.shared.portone_stats end

--- Called from init_by_lua with the settings start() chose.
function M.init(c)
  local conf = M.conf
  for k, v in pairs(c) do conf[k] = v end
  local host = conf.host
  if host:find(":", 1, true) then host = "[" .. host .. "]" end
  conf.base = conf.scheme .. "://" .. host .. ":" .. conf.port
  if conf.latency_ms then M.stats():set("latency_ms", tonumber(conf.latency_ms) or 0) end
end

--- The sandbox clock: unix seconds plus the admin clock offset.
function M.now()
  ngx.update_time()
  return ngx.time() + (M.stats():get("clock_offset") or 0)
end

--- The request body, also when nginx buffered it to a file.
function M.read_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    local file = ngx.req.get_body_file()
    if file then
      local f = io.open(file, "rb")
      if f then body = f:read("*a"); f:close() end
    end
  end
  return body
end

--- A JSON object or a form (by Content-Type) as a table; nil when neither.
-- Form fields ending in `[]` are lists (`imp_uid[]=a&imp_uid[]=b`).
function M.read_fields(body)
  local ctype = (ngx.var.content_type or ""):lower()
  if ctype:find("^application/x%-www%-form%-urlencoded") then
    return ngx.decode_args(body or "", 100)
  end
  if body == nil or body == "" then return {} end
  local t = cjson.decode(body)
  if type(t) ~= "table" or t[1] ~= nil then return nil end
  return t
end

function M.is_integer(v)
  return type(v) == "number" and v == v and v == math.floor(v) and v > -2^53 and v < 2^53
end

--- A number given as a JSON number or a numeric string (forms), else nil.
function M.number(v)
  if type(v) == "string" then v = tonumber(v) end
  if type(v) ~= "number" or v ~= v then return nil end
  return v
end

--- n random bytes as hex (/dev/urandom; math.random when it cannot be read).
function M.random_hex(n)
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

--- Link ids: 8 hex digits from the per-worker generator `seed` sets up
-- (opening /dev/urandom per request showed in benchmarks).
function M.random_id()
  return ("%04x%04x"):format(math.random(0, 0xffff), math.random(0, 0xffff))
end

--- Seeds the worker's generator (init_worker).
function M.seed()
  local f = io.open("/dev/urandom", "rb")
  local b = f and f:read(4)
  if f then f:close() end
  local n = ngx.now() * 1000 + ngx.worker.pid()
  if b and #b == 4 then n = n + b:byte(1) * 2^24 + b:byte(2) * 2^16 + b:byte(3) * 2^8 + b:byte(4) end
  math.randomseed(n % 2^31)
end

--- The JSON value under `key` in dict `d`, or nil.
function M.get_json(d, key)
  local raw = d:get(key)
  return raw and cjson.decode(raw) or nil
end

--- cjson on Debian has no array_mt: an empty list is written by hand.
function M.list_json(list)
  return #list == 0 and "[]" or cjson.encode(list)
end

--- The handlers' answer: status, content type, body (strings), so that the
-- fault layer can deliver it slowly or cut it short.
function M.JSON(status, tbl)
  return status, "application/json;charset=UTF-8", cjson.encode(tbl)
end

--- Sends a JSON answer now (the admin API, never faulted).
function M.reply(status, tbl, raw)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json;charset=UTF-8"
  ngx.print(raw or cjson.encode(tbl))
  return ngx.exit(ngx.OK)
end

return M
