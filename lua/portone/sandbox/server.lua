--- The sandbox's router: the entry points the generated nginx config calls
-- (`init`, `init_worker`, `handle`), sending each request to its surface —
-- the admin API (`/__sandbox/`), the link API, REST V1, the bridge page —
-- with the request log, latency and faults applied to every API request.
-- Nothing here runs in a plain Lua.
--
-- The modules form one direction, no cycles:
--   server (router)
--     -> admin, link_api, rest_v1, bridge            (one module per surface)
--        -> payments -> webhooks; tokens; faults; reqlog  (shared state)
--           -> state (settings, clock, dicts, helpers)
local state = require "portone.sandbox.state"
local reqlog = require "portone.sandbox.reqlog"
local faults = require "portone.sandbox.faults"
local admin = require "portone.sandbox.admin"
local link_api = require "portone.sandbox.link_api"
local rest_v1 = require "portone.sandbox.rest_v1"
local bridge = require "portone.sandbox.bridge"
-- luacheck: globals ngx

local M = {}

local conf = state.conf
M.conf = conf
M.init = state.init
M.now = state.now
M.read_body = state.read_body

local function route(method, uri)
  local class, handler = link_api.route(method, uri)
  if class then return class, handler end
  class, handler = rest_v1.route(method, uri)
  if class then return class, handler end
  class, handler = bridge.route(method, uri)
  if class then return class, handler end
  return "other", function() return state.JSON(404, { code = -1, message = "not found: " .. uri }) end
end

local function api(method, uri)
  local body = state.read_body()
  reqlog.record(body)
  local class, handler = route(method, uri)
  local latency = state.setting("latency_ms") or 0
  if latency > 0 then ngx.sleep(latency / 1000) end
  local f = faults.take(class)
  faults.before(f)
  return faults.deliver(f, handler(body))
end

--- content_by_lua entry for every request.
function M.handle()
  local method, uri = ngx.req.get_method(), ngx.var.uri
  if uri:sub(1, 11) == "/__sandbox/" then return admin.handle(method, uri) end
  return api(method, uri)
end

-- ---------------------------------------------------------------------------
-- the launcher watchdog: when the process that started the sandbox is gone
-- (killed with SIGTERM, crashed), stop nginx and remove the temp prefix.

-- A zombie still answers kill(pid, 0), and a killed launcher may stay one
-- for a while: read its state from /proc when there is one.
local function launcher_alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat", "r")
  if f then
    local stat = f:read("*l") or ""
    f:close()
    local st = stat:match("%) (%a)")
    return st ~= "Z" and st ~= "X"
  end
  local ffi = require "ffi"
  if ffi.C.kill(pid, 0) == 0 then return true end
  return ffi.errno() ~= 3 -- ESRCH: gone; EPERM: alive
end

--- The shell command that removes a sandbox's temp prefix, or nil when
-- `prefix` is not one `prepare` makes (`.../portone-sandbox.XXXXXXXX`). The
-- prefix comes from $TMPDIR, which may hold any character: quoted for sh.
function M.cleanup_command(prefix)
  if type(prefix) ~= "string" or not prefix:match("^/.+/portone%-sandbox%.[%w]+/?$") then return nil end
  return "rm -rf '" .. prefix:gsub("'", "'\\''") .. "'"
end

local function watchdog(premature)
  if premature then return end
  local C = require("ffi").C
  if launcher_alive(conf.watch_pid) then return end
  local cmd = conf.cleanup_prefix and M.cleanup_command(conf.prefix)
  if cmd then os.execute(cmd) end
  C.kill(C.getppid(), 3) -- SIGQUIT to the master: graceful stop
end

--- init_worker_by_lua entry.
function M.init_worker()
  state.seed()
  if conf.watch_pid then
    local ffi = require "ffi"
    pcall(ffi.cdef, "int kill(int pid, int sig); int getppid(void);")
    ngx.timer.every(0.5, watchdog)
  end
  if conf.announce then
    ngx.timer.at(0, function()
      io.stdout:write(conf.announce, "\n")
      io.stdout:flush()
    end)
  end
end

return M
