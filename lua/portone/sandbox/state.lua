--- The sandbox's shared state, under every surface module (link API, bridge
-- page, REST V1, admin API) and using none of them: the settings, the clock,
-- the shared dicts, the request body, ids and JSON helpers. Runs inside the
-- sandbox's nginx (lua-nginx-module).
--
-- The dicts (declared by `portone.sandbox`'s `config`):
--   portone_links    link id -> JSON link record; "#<n>" -> id by creation, "#seq"
--   portone_faults   "q:<match>" lists of JSON faults (`portone.sandbox.faults`),
--                    written with lpush, which never evicts: when the dict is
--                    full, a queue call is refused (507) and takes back what
--                    it pushed
--   portone_payments payments, paid and order marks, prepared amounts
--                    (`portone.sandbox.payments`): written only with safe_set
--                    and safe_add, so nothing in it is ever evicted; when it
--                    is full, a new payment is refused instead
--   portone_settings what the admin API set: clock_offset, latency_ms,
--                    wh_mode, test_mode (`setting`, `set_setting`). A dict of
--                    their own, written only with safe_set: in the stats dict
--                    a full dict's eviction took a setting no request had
--                    read for a while (the latency: admin calls never read
--                    it), and the sandbox went on silently without it. A
--                    handful of small keys cannot fill this one; if a value
--                    ever did not fit, the admin call answers 507 and the
--                    old value stays
--   portone_stats    counters, webhook delivery logs: small records written
--                    with set/incr, which may evict the least recently used
--                    ones when the dict is full. An eviction there loses only
--                    diagnostics (a counter, a delivery log), never a
--                    payment, a setting or a token
--   portone_tokens   REST V1 tokens (`portone.sandbox.tokens`), alone: a
--                    revoke empties the dict, so a revoked token is gone
--                    and nothing evicted can bring it back (a revocation
--                    marker kept in the stats dict was evicted, and revoked
--                    tokens came back); were it ever full, a set would drop
--                    an old token (401: the client gets a new one)
--   portone_log      the request log and the inbox: only records that may be
--                    evicted when a huge body needs the room
-- (`reset` flushes all seven)
local cjson = require "cjson.safe"
-- luacheck: globals ngx  (handlers assign ngx.status and ngx.header fields)

local M = {}

--- Set by `init` from the generated config (scheme, host, port, base, prefix,
-- imp_key, imp_secret, keys_made_up, latency_ms, watch_pid, announce).
M.conf = { scheme = "http", host = "127.0.0.1", port = 0 }

function M.links() return ngx.shared.portone_links end
function M.faults() return ngx.shared.portone_faults end
function M.stats() return ngx.shared.portone_stats end
function M.store() return ngx.shared.portone_payments end
function M.log() return ngx.shared.portone_log end
function M.settings() return ngx.shared.portone_settings end
function M.tokens() return ngx.shared.portone_tokens end

--- safe_set that keeps the old value when the new one does not fit:
-- lua-nginx-module frees the old value before it allocates the new one (when
-- their sizes differ), so a failed safe_set would drop the key; the old
-- value goes back into the room just freed.
-- @return true | nil, err (the dict's "no memory")
function M.safe_set(d, key, value)
  local old = d:get(key)
  local ok, err = d:safe_set(key, value)
  if ok then return true end
  if old ~= nil and not d:safe_set(key, old) then
    ngx.log(ngx.ERR, "sandbox: shared dict full: lost ", key, " while updating it")
  end
  return nil, err
end

--- A setting the admin API made (nil while unset).
function M.setting(key)
  return M.settings():get(key)
end

--- Stores a setting (never by evicting another): true, or nil and why not
-- (the old value stays).
function M.set_setting(key, value)
  local ok, err = M.safe_set(M.settings(), key, value)
  if ok then return true end
  return nil, "sandbox settings dict is full (" .. tostring(err) .. "): " .. key .. " is unchanged"
end

--- Called from init_by_lua with the settings start() chose.
function M.init(c)
  local conf = M.conf
  for k, v in pairs(c) do conf[k] = v end
  local host = conf.host
  if host:find(":", 1, true) then host = "[" .. host .. "]" end
  conf.base = conf.scheme .. "://" .. host .. ":" .. conf.port
  if conf.latency_ms then assert(M.set_setting("latency_ms", tonumber(conf.latency_ms) or 0)) end
end

--- The sandbox clock: unix seconds plus the admin clock offset.
function M.now()
  ngx.update_time()
  return ngx.time() + (M.setting("clock_offset") or 0)
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

--- A finite number given as a JSON number or a numeric string (forms),
-- else nil (also for nan and inf, which LuaJIT's tonumber reads).
function M.number(v)
  if type(v) == "string" then v = tonumber(v) end
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then return nil end
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

-- cjson writes numbers with 14 significant digits at most, so an integer
-- beyond that (an amount may be up to 2^53 - 1, DESIGN §1) would come out
-- rounded: 9007199254740991 as 9.007199254741e+15. `encode` writes such
-- integers exactly: a copy with them as marked strings, unmarked in the text.
-- The mark holds a random tag made at load, so no string a client sent can
-- pass for one (and come out as a bare number).
local MARK
local function mark(v)
  local t = type(v)
  if t == "number" then
    if v == math.floor(v) and math.abs(v) >= 1e14 and math.abs(v) < 2^53 then
      return "\0" .. MARK .. ("%.0f"):format(v) .. "\0"
    end
    return v
  end
  if t ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = mark(x) end
  return out
end

--- cjson.encode, with integers of 15 and 16 digits written exactly.
-- @return the JSON text, or nil, err (as cjson.safe)
function M.encode(v)
  local s, err = cjson.encode(v)
  -- such an integer is written as "d.ddde+14" .. "e+15": the common case
  -- costs one find
  if not s or not s:find("e+1", 1, true) then return s, err end
  MARK = MARK or ("int" .. M.random_hex(8) .. ":")
  s, err = cjson.encode(mark(v))
  if not s then return nil, err end
  return (s:gsub('"\\u0000' .. MARK .. '(%-?%d+)\\u0000"', "%1"))
end

--- cjson on Debian has no array_mt: an empty list is written by hand.
function M.list_json(list)
  return #list == 0 and "[]" or M.encode(list)
end

local UNWRITABLE = '{"code":-1,"message":"sandbox: the answer cannot be written as JSON"}'

--- The handlers' answer: status, content type, body (strings), so that the
-- fault layer can deliver it slowly or cut it short.
function M.JSON(status, tbl)
  local body = M.encode(tbl)
  if not body then return 500, "application/json;charset=UTF-8", UNWRITABLE end
  return status, "application/json;charset=UTF-8", body
end

--- Sends a JSON answer now (the admin API, never faulted).
function M.reply(status, tbl, raw)
  raw = raw or M.encode(tbl)
  if not raw then status, raw = 500, UNWRITABLE end
  ngx.status = status
  ngx.header["Content-Type"] = "application/json;charset=UTF-8"
  ngx.print(raw)
  return ngx.exit(ngx.OK)
end

return M
