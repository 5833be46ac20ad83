--- `portone-link sandbox`: runs the local PortOne sandbox in the foreground.
--
-- Without lua-posix the Lua process cannot wait for signals itself, so it
-- hands the work to a small /bin/sh wrapper run by os.execute:
--   * the wrapper starts nginx (`daemon off`) in the background, traps
--     INT/TERM/HUP to stop it, waits, then removes the temp prefix;
--   * Ctrl-C reaches the whole foreground process group: nginx stops, the
--     wrapper cleans up, and this process (system() ignores SIGINT while it
--     waits) prints a last line and returns;
--   * SIGTERM sent to this Lua process alone kills it; the nginx worker
--     watches our pid every second and, once it is gone, removes the prefix
--     and sends its master SIGQUIT (portone.sandbox.server's watchdog).
-- The "listening" line is printed by the nginx worker once it is ready.
local sandbox = require "portone.sandbox"

local M = {}

local USAGE = [[
usage: portone-link sandbox [--host H] [--port N] [--tls-cert F --tls-key F]
                            [--latency MS] [--imp-key K --imp-secret S]
                            [--forward-to URL]
       portone-link sandbox pay [--method M] [--base-url URL] [--] ID|URL
       portone-link sandbox deposit [--base-url URL] [--] IMP_UID

Runs a local nginx that plays the PortOne link API, REST V1 and a simple
link page until Ctrl-C or SIGTERM. 'sandbox pay' pays a link as a buyer
would, 'sandbox deposit' pays into a vbank payment's account
('portone-link sandbox pay --help'); '--' ends their options, for an id
that starts with '-'.

  --host H        address to listen on (default 127.0.0.1; any other opens
                  the sandbox, its admin API and request log included, to
                  whoever can reach that address)
  --port N        port (default: a free one)
  --tls-cert F    serve https with this certificate (PEM) ...
  --tls-key F     ... and this key; the admin API then gets its own http port
  --latency MS    delay every API answer by MS milliseconds
  --imp-key K     REST V1 credentials that POST /users/getToken accepts
  --imp-secret S  (default: a made-up pair, printed at start)
  --forward-to URL  send every webhook to URL (a loopback http(s) URL: your
                  app) instead of the link's notice_url, and print each
                  delivery and its answer
  --help          this text

Admin API: <url>/__sandbox/ (faults, latency, clock, stats, requests, reset,
keys, pay, deposit, cancel, redeliver, test_mode, ...): the "Sandbox and admin
API" guide of the docs (make docs), or 'portone-link sandbox pay' for paying
from the shell.
]]

local OPTS = {
  ["--host"] = "host", ["--port"] = "port", ["--tls-cert"] = "tls_cert",
  ["--tls-key"] = "tls_key", ["--latency"] = "latency", ["--imp-key"] = "imp_key",
  ["--imp-secret"] = "imp_secret", ["--forward-to"] = "forward_to",
}

-- The sandbox posts only to loopback (it must never reach the internet):
-- the sender's own rule, checked up front.
local loopback_url = require("portone.sandbox.webhooks").loopback_url

local function fail(msg)
  io.stderr:write("portone-link sandbox: ", msg, "\n")
  return 2
end

--- Parses the command line; returns the options table or nil, message.
function M.parse(args)
  local o = {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name, value = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    if name == "--help" or name == "-h" then
      o.help = true
    elseif OPTS[name] then
      if value == nil then
        i = i + 1
        value = args[i]
        if value == nil then return nil, name .. " needs a value" end
      end
      o[OPTS[name]] = value
    else
      return nil, "unknown option '" .. a .. "'"
    end
    i = i + 1
  end
  if o.port then
    local p = tonumber(o.port)
    if not p or p ~= math.floor(p) or p < 0 or p > 65535 then
      return nil, "--port must be a number 0..65535"
    end
    o.port = p
  end
  if o.latency then
    o.latency = tonumber(o.latency)
    if not o.latency or o.latency < 0 then return nil, "--latency must be a number of ms >= 0" end
  end
  if (o.tls_cert == nil) ~= (o.tls_key == nil) then
    return nil, "--tls-cert and --tls-key go together"
  end
  if (o.imp_key == nil) ~= (o.imp_secret == nil) then
    return nil, "--imp-key and --imp-secret go together"
  end
  if o.forward_to and not loopback_url(o.forward_to) then
    return nil, "--forward-to must be an http(s) URL on loopback (127.0.0.1, localhost, [::1])"
  end
  return o
end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- nginx's Lua is LuaJIT (5.1 ABI): the caller's LUA_PATH/LUA_CPATH (set by
-- `luarocks --lua-version 5.4 path`, say) would make it load 5.4 modules
-- (`cjson.so: undefined symbol: lua_newuserdatauv`). The config names the
-- sandbox's own Lua root; everything else comes from LuaJIT's built-in paths.
M.CLEAN_ENV = "env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_1 -u LUA_CPATH_5_1 -u LUA_INIT"
  .. " -u LUA_INIT_5_1 "

--- The /bin/sh wrapper that runs nginx in the foreground for a plan.
-- A trapped signal ends `wait` early with 128 + its number, whether or not
-- nginx is still running (Ctrl-C reaches nginx too, which then exits at
-- once): so after a signal it waits again, for nginx's own status. A wait
-- for a status already collected says 127 and keeps the one it had.
function M.wrapper(plan)
  local P = quote(plan.prefix)
  return table.concat({
    M.CLEAN_ENV .. sandbox.command(plan) .. " </dev/null &",
    "pid=$!",
    "trap 'sig=1; kill -TERM $pid 2>/dev/null' INT TERM HUP",
    "rc=127",
    "while :; do sig=; wait $pid; r=$?; [ $r -ne 127 ] && rc=$r; [ -z \"$sig\" ] && break; done",
    "if [ $rc -ne 0 ] && [ -f " .. P .. "/error.log ]; then tail -n 15 " .. P .. "/error.log >&2; fi",
    "rm -rf " .. P,
    "exit $rc",
  }, "\n")
end

function M.main(args)
  if args and (args[1] == "pay" or args[1] == "deposit") then
    local rest = {}
    for i = 2, #args do rest[#rest + 1] = args[i] end
    return require("portone.cli.sandbox_pay").main(rest, args[1])
  end
  local o, err = M.parse(args or {})
  if not o then
    io.stderr:write(USAGE)
    return fail(err)
  end
  if o.help then
    io.stdout:write(USAGE)
    return 0
  end
  local plan
  plan, err = sandbox.prepare{
    host = o.host, port = o.port, daemon = false,
    tls = o.tls_cert and { cert = o.tls_cert, key = o.tls_key } or nil,
    imp_key = o.imp_key, imp_secret = o.imp_secret, latency_ms = o.latency,
    forward_to = o.forward_to, announce = true,
  }
  if not plan then return fail(err) end
  local f = assert(io.open(plan.prefix .. "/run.sh", "w"))
  f:write(M.wrapper(plan), "\n")
  f:close()
  io.stdout:flush()
  local a, how, code = os.execute("exec sh " .. quote(plan.prefix .. "/run.sh"))
  if type(a) == "number" then -- Lua 5.1 / LuaJIT: a wait status
    code = a >= 256 and math.floor(a / 256) or a
    how = a < 256 and a ~= 0 and "signal" or "exit"
  end
  if how == "signal" then
    io.stderr:write("sandbox stopped by signal ", tostring(code), "\n")
    return 128 + (code or 0)
  end
  if code ~= 0 then
    io.stderr:write("portone-link sandbox: nginx exited with status ", tostring(code), "\n")
    return 1
  end
  io.stderr:write("sandbox stopped\n")
  return 0
end

return M
