--- Fault injection, in one place: the admin API queues faults per request
-- class, and the router (`portone.sandbox.server`) takes one for each API
-- request and lets it shape the answer. Shared state: uses no surface module.
--
-- A fault is a JSON object (docs/guide/sandbox.md, "Faults"):
--   delay_ms, then one of: reset | status (+ retry_after, body, content_type)
--   | garbage | oversize | redirect (answered before the handler's answer),
--   or truncate | slow_body_ms | trickle_ms | reset_after (applied to the
--   handler's answer).
local cjson = require "cjson.safe"
-- luacheck: globals ngx  (handlers assign ngx.status and ngx.header fields)
local state = require "portone.sandbox.state"

local M = {}

--- The request classes faults can match.
M.MATCHES = { create = true, deactivate = true, page = true, token = true, payment = true,
              cancel = true, prepare = true,
              any = true }

-- nil when `f` is a fault the router can apply, else why not: a fault
-- taken later would otherwise fail the API request it was meant to shape
-- with a Lua error (a 500 far from the admin call that queued it).
local function invalid(f)
  if type(f) ~= "table" or f[1] ~= nil then return "a fault must be a JSON object" end
  local status = f.status
  if status ~= nil and not (state.is_integer(status) and status >= 100 and status <= 599) then
    return "status must be an HTTP status (100..599)"
  end
  for _, k in ipairs({ "delay_ms", "slow_body_ms", "trickle_ms" }) do
    if f[k] ~= nil and not (type(f[k]) == "number" and f[k] >= 0 and f[k] < math.huge) then
      return k .. " must be a number of ms >= 0"
    end
  end
  return nil
end

-- Runs fn() holding the lock of queue `key`: its result, or nil and
-- "busy" or the dict's error. Another call queueing for the same class
-- (workers > 1) must not push between this call's faults, which a refused
-- call takes back from the head by count.
local function locked(key, fn)
  local faults = state.faults()
  for _ = 1, 200 do
    local ok, err = faults:safe_add("lock:" .. key, true, 5)
    if ok then
      local done = fn()
      faults:delete("lock:" .. key)
      return done
    end
    if err ~= "exists" then return nil, err end
    ngx.sleep(0.005)
  end
  return nil, "busy"
end

-- Pushes every fault of `list` onto queue `key`, or none: false when one
-- does not fit. lpush never evicts (a queued fault that vanished would
-- make a test pass or fail for the wrong reason): on a full dict it answers
-- "no memory", and the faults this call pushed, at the head, go again.
local function push_all(key, list)
  local faults = state.faults()
  for i, f in ipairs(list) do
    if not faults:lpush(key, cjson.encode(f)) then
      for _ = 1, i - 1 do faults:lpop(key) end
      return false
    end
  end
  return true
end

--- Queues `list` for class `match`: the queue length, or nil, why and the
-- HTTP status for the admin API (400: a fault is malformed; 507: the dict
-- is full). Either way none of the list is queued.
function M.queue(match, list)
  for i, f in ipairs(list) do
    local why = invalid(f)
    if why then return nil, "faults[" .. i .. "]: " .. why, 400 end
  end
  local key = "q:" .. match
  local done, err = locked(key, function() return push_all(key, list) end)
  if done then return state.faults():llen(key) end
  if err == "busy" then
    return nil, "another call is queueing faults for '" .. match .. "'; try again", 503
  end
  return nil, ("the faults dict is full: none of this call's faults was queued (%d); the %d"
    .. " queued before stay: let API requests take them, or reset the sandbox (POST /__sandbox/reset)")
    :format(#list, M.total()), 507
end

--- Queue lengths per class.
function M.counts()
  local out = {}
  for m in pairs(M.MATCHES) do out[m] = state.faults():llen("q:" .. m) or 0 end
  return out
end

--- How many faults are queued, all classes.
function M.total()
  local n = 0
  for _, c in pairs(M.counts()) do n = n + c end
  return n
end

--- The next fault for `class` (its own queue first, then "any"), or nil.
function M.take(class)
  for _, match in ipairs({ class, "any" }) do
    local v = state.faults():rpop("q:" .. match)
    if v then return cjson.decode(v) end
  end
  return nil
end

-- Faults that replace the whole answer; returns false when `f` is not one.
local function early(f)
  if f.reset then
    return ngx.exit(444) -- nginx closes the connection without a response
  end
  if f.status then
    ngx.status = tonumber(f.status)
    if f.retry_after ~= nil then ngx.header["Retry-After"] = tostring(f.retry_after) end
    if f.body then
      ngx.header["Content-Type"] = f.content_type or "application/json;charset=UTF-8"
      ngx.print(f.body)
    else
      ngx.header["Content-Type"] = "application/json;charset=UTF-8"
      ngx.print(cjson.encode({ code = -1, message = "sandbox fault: HTTP " .. f.status }))
    end
    return ngx.exit(ngx.OK)
  end
  if f.garbage then
    ngx.status = 200
    ngx.header["Content-Type"] = "text/html"
    ngx.print("<html><body>502 Bad Gateway? no: garbage from the sandbox</body></html>")
    return ngx.exit(ngx.OK)
  end
  if f.oversize then
    local n = math.max(tonumber(f.oversize) or 0, 40)
    local head = '{"shortenedUrl":"' .. state.conf.base .. '/ffffffff","pad":"'
    local tail = '"}'
    local pad = n - #head - #tail
    if pad < 0 then head, pad = '{"pad":"', n - 8 - #tail end
    ngx.status = 200
    ngx.header["Content-Type"] = "application/json;charset=UTF-8"
    ngx.header["Content-Length"] = #head + pad + #tail
    ngx.print(head)
    local chunk = string.rep("x", 65536)
    while pad > 0 do
      local k = math.min(pad, #chunk)
      ngx.print(k == #chunk and chunk or chunk:sub(1, k))
      pad = pad - k
    end
    ngx.print(tail)
    return ngx.exit(ngx.OK)
  end
  if f.redirect then
    ngx.status = 302
    ngx.header["Location"] = tostring(f.redirect)
    ngx.header["Content-Type"] = "application/json;charset=UTF-8"
    ngx.print('{"code":-1,"message":"moved"}')
    return ngx.exit(ngx.OK)
  end
  return false
end

--- Applies fault `f` (or none) before the handler runs: its delay, and the
-- faults that take over the whole answer (these do not return).
function M.before(f)
  if not f then return end
  if f.delay_ms then ngx.sleep(tonumber(f.delay_ms) / 1000) end
  early(f)
end

--- Delivers the handler's answer, honouring the delivery faults.
function M.deliver(f, status, ctype, body)
  if f and f.reset_after then
    -- The request was handled (a create made its link) but the answer never
    -- leaves: the connection closes first, as when a keep-alive connection
    -- dies under a request. The client cannot know the link exists.
    return ngx.exit(444)
  end
  ngx.status = status
  ngx.header["Content-Type"] = ctype
  if f and f.truncate then
    -- Promise more than we send, then close: the client sees a short read.
    local cut = math.max(0, math.floor(#body / 2))
    ngx.header["Content-Length"] = #body + 64
    ngx.print(body:sub(1, cut))
    ngx.flush(true)
    return ngx.exit(444)
  end
  if f and f.slow_body_ms then
    ngx.header["Content-Length"] = #body
    local cut = math.floor(#body / 2)
    ngx.send_headers()
    ngx.print(body:sub(1, cut))
    ngx.flush(true)
    ngx.sleep(tonumber(f.slow_body_ms) / 1000)
    ngx.print(body:sub(cut + 1))
    return ngx.exit(ngx.OK)
  end
  if f and f.trickle_ms then
    -- the headers, then the body a byte at a time, trickle_ms apart: a
    -- client whose timeout restarts with every byte would wait it all out
    ngx.header["Content-Length"] = #body
    ngx.send_headers()
    ngx.flush(true)
    local gap = (tonumber(f.trickle_ms) or 0) / 1000
    for i = 1, #body do
      ngx.sleep(gap)
      local ok = ngx.print(body:sub(i, i))
      if not ok or not ngx.flush(true) then return ngx.exit(444) end   -- the client left
    end
    return ngx.exit(ngx.OK)
  end
  ngx.header["Content-Length"] = #body
  ngx.print(body)
  return ngx.exit(ngx.OK)
end

return M
