--- The sandbox's request log and counters (shared state: used by the router
-- and the admin API, using no surface module). Every API request is logged,
-- so the log stores cheap raw parts (one string.format, no JSON) and `list`
-- does the parsing when asked.
local cjson = require "cjson.safe"
local state = require "portone.sandbox.state"

local M = {}

M.SIZE = 100

--- Counts and logs the request being handled.
function M.record(body)
  local stats = state.stats()
  stats:incr("requests", 1, 0)
  local nreq = ngx.var.connection_requests
  if nreq == "1" then stats:incr("connections", 1, 0) end
  -- in a dict of its own: a huge body evicts old log entries, never state
  local log = state.log()
  local n = log:incr("log_seq", 1, 0)
  log:set("log:" .. n, ("%s\n%s\n%s\n%d\n%s%s"):format(ngx.req.get_method(), ngx.var.request_uri,
    nreq, body and 1 or 0, ngx.req.raw_header(true), body or ""))
  log:delete("log:" .. (n - M.SIZE))
end

-- "Name: value" lines -> lower-case names; a repeated header gives a list,
-- as ngx.req.get_headers() does.
local function parse_headers(raw)
  local h = {}
  for name, value in raw:gmatch("([^:\r\n]+):[ \t]*([^\r\n]*)") do
    name = name:lower()
    local old = h[name]
    if old == nil then h[name] = value
    elseif type(old) == "table" then old[#old + 1] = value
    else h[name] = { old, value } end
  end
  return h
end

local function entry(raw)
  local method, uri, nreq, has_body, rest = raw:match("^([^\n]*)\n([^\n]*)\n([^\n]*)\n(%d)\n(.*)$")
  local head_end = rest:find("\r\n\r\n", 1, true) or #rest
  local head, body = rest:sub(1, head_end + 1), rest:sub(head_end + 4)
  return { method = method, uri = uri, headers = parse_headers(head),
           body = has_body == "1" and body or cjson.null, connection_requests = tonumber(nreq) }
end

--- The last SIZE requests, oldest first.
function M.list()
  local log = state.log()
  local n = log:get("log_seq") or 0
  local out = {}
  for i = math.max(1, n - M.SIZE + 1), n do
    local e = log:get("log:" .. i)
    if e then out[#out + 1] = entry(e) end
  end
  return out
end

--- The counters for GET /__sandbox/stats.
function M.counters()
  local stats = state.stats()
  return {
    requests = stats:get("requests") or 0, connections = stats:get("connections") or 0,
    creates = stats:get("creates") or 0, deactivates = stats:get("deactivates") or 0,
    latency_ms = state.setting("latency_ms") or 0, pid = ngx.worker.pid(),
  }
end

return M
