--- A slow DNS server on a loopback address and a way to run a Lua script
-- whose name resolution goes through it: a private /etc/resolv.conf bound
-- over the real one in a mount namespace (`unshare -m`, root only), so the
-- script resolves through glibc and libcurl's threaded resolver exactly as
-- a user's process does.
--
--   local resolver = require "helpers.resolver"
--   local ok, why = resolver.available()
--   local dns = resolver.start(-1)           -- never answers; or a delay in ms
--   local out = dns:run("spec/tools/poll_probe.lua", { url, 1, 4 })
--   dns:stop()
local M = {}

local function sh(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- The interpreter that runs these specs (children load the same build).
function M.lua()
  return os.getenv("PLINK_LUA") or (jit and "luajit") -- luacheck: ignore 113
    or (_VERSION == "Lua 5.1" and "lua5.1") or "lua5.4"
end

--- True when a private resolv.conf can be mounted (root and unshare -m).
function M.available()
  if not sh("[ \"$(id -u)\" = 0 ] && command -v unshare >/dev/null 2>&1") then
    return false, "needs root and unshare(1) for a private resolv.conf"
  end
  if not sh("unshare -m true >/dev/null 2>&1") then
    return false, "unshare -m is not permitted here"
  end
  return true
end

--- Starts the server (spec/tools/slowdns.lua under lua5.4 + luasocket) on a
-- free 127.0.0.x:53. `delay_ms` < 0: it never answers.
function M.start(delay_ms)
  local dir = io.popen("mktemp -d \"${TMPDIR:-/tmp}/portone-dns.XXXXXXXX\""):read("*l")
  for _ = 1, 20 do
    local addr = ("127.0.0.%d"):format(math.random(100, 250))
    local ready, pidf = dir .. "/ready", dir .. "/pid"
    os.remove(ready)
    sh(("env -u LD_PRELOAD lua5.4 spec/tools/slowdns.lua %s 53 %d %s >/dev/null 2>&1 & echo $! > %s")
      :format(addr, delay_ms, quote(ready), quote(pidf)))
    local pid = io.open(pidf):read("*l")
    for _ = 1, 100 do
      if io.open(ready) then break end
      sh("sleep 0.02")
    end
    if io.open(ready) then
      local conf = dir .. "/resolv.conf"
      local f = assert(io.open(conf, "w"))
      -- one try, 2 s: longer than the connect timeouts the specs use
      f:write("nameserver ", addr, "\noptions timeout:2 attempts:1\n")
      f:close()
      return setmetatable({ addr = addr, pid = pid, dir = dir, conf = conf }, { __index = M })
    end
    sh("kill " .. pid .. " 2>/dev/null")
  end
  error("slowdns: could not bind a loopback address on port 53")
end

--- Runs `script` with `args` in a mount namespace that sees the server's
-- resolv.conf; returns its output (stdout and stderr) and whether it exited 0.
function M:run(script, args)
  local parts = {}
  for i, a in ipairs(args or {}) do parts[i] = quote(a) end
  local inner = ("mount --bind %s /etc/resolv.conf && exec %s %s %s"):format(
    quote(self.conf), M.lua(), quote(script), table.concat(parts, " "))
  local p = io.popen("unshare -m sh -c " .. quote(inner) .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("*a")
  p:close()
  return out, out:find("rc=0%s*$") ~= nil
end

--- Parses the key=value line poll_probe.lua prints.
function M.parse(out)
  local t = {}
  local line = out:match("(polls=[^\n]*)")
  for k, v in (line or ""):gmatch("([%w_]+)=(%S+)") do t[k] = tonumber(v) or v end
  return t
end

function M:stop()
  sh("kill " .. self.pid .. " 2>/dev/null")
  sh("rm -rf " .. quote(self.dir))
end

return M
