--- Runs bin/portone-link for real from the specs (Lua 5.4, or $PLINK_LUA).
--
--   local C = require "helpers.cli"
--   local t = C.tmpdir()                      -- removed by t:cleanup()
--   local code, out, err = C.run(t, "create --json x.json", {env = {...}, stdin = path})
--   local job = C.spawn(t, "batch ...")       -- in the background: job.pid, job:wait()
local cjson = require "cjson"

local M = {}

function M.quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local quote = M.quote

function M.write(path, text)
  local f = assert(io.open(path, "wb")); f:write(text); f:close()
end

function M.slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a"); f:close()
  return s
end

local Tmp = {}
Tmp.__index = Tmp
function Tmp:path(name) return self.dir .. "/" .. name end
function Tmp:cleanup() os.execute("rm -rf " .. quote(self.dir)) end

--- A fresh temp directory.
function M.tmpdir()
  local p = io.popen("mktemp -d \"${TMPDIR:-/tmp}/portone-cli.XXXXXXXX\"")
  local dir = p:read("*l"); p:close()
  return setmetatable({ dir = dir }, Tmp)
end

local function envs(env)
  local s = ""
  for k, v in pairs(env or {}) do s = s .. k .. "=" .. quote(v) .. " " end
  return s
end

local function interp() return os.getenv("PLINK_LUA") or "lua5.4" end

--- os.execute's exit code on every Lua: 5.2+ return (ok, "exit", code),
-- 5.1 and LuaJIT a wait status.
function M.exit_code(ok, how, code)
  if type(ok) == "number" then return ok >= 256 and math.floor(ok / 256) or ok end
  if how ~= "exit" then return ok and 0 or 99 end
  return code
end

--- Runs `portone-link ARGS`; returns exit code, stdout, stderr.
-- `opts.under`: a command the interpreter runs under (`strace -o F`).
function M.run(t, args, opts)
  opts = opts or {}
  local cmd = envs(opts.env) .. (opts.under and (opts.under .. " ") or "") .. interp() .. " "
    .. (opts.bin or "bin/portone-link") .. " " .. args
    .. (opts.stdin and (" < " .. quote(opts.stdin)) or " < /dev/null")
    .. " > " .. quote(t:path("out")) .. " 2> " .. quote(t:path("err"))
  return M.exit_code(os.execute(cmd)), M.slurp(t:path("out")), M.slurp(t:path("err"))
end

--- Starts `portone-link ARGS` in the background. The job has `pid`,
-- `kill(sig)`, `wait(timeout_s)` --> exit code (nil on timeout), and
-- `stdout()`, `stderr()`. `opts.sh`: shell commands run first (limits,
-- traps), ending in `;`.
function M.spawn(t, args, opts)
  opts = opts or {}
  local n = (t.jobs or 0) + 1
  t.jobs = n
  local pidf, rcf = t:path("job" .. n .. ".pid"), t:path("job" .. n .. ".rc")
  local outf, errf = t:path("job" .. n .. ".out"), t:path("job" .. n .. ".err")
  -- the inner shell execs the interpreter, so $$ is its pid; the outer one
  -- records the exit status once it ends
  local inner = (opts.sh or "") .. "echo $$ > " .. quote(pidf) .. "; exec env " .. envs(opts.env)
    .. interp() .. " "
    .. (opts.bin or "bin/portone-link") .. " " .. args .. " < /dev/null > " .. quote(outf)
    .. " 2> " .. quote(errf)
  os.execute("(sh -c " .. quote(inner) .. "; echo $? > " .. quote(rcf) .. ") > /dev/null 2>&1 &")
  local job = {}
  local socket = require "socket"
  local deadline = socket.gettime() + 5
  while socket.gettime() < deadline do
    job.pid = tonumber(M.slurp(pidf):match("%d+"))
    if job.pid then break end
    socket.sleep(0.01)
  end
  assert(job.pid, "spawn: no pid")
  function job.kill(sig) os.execute("kill -" .. sig .. " " .. job.pid .. " 2>/dev/null") end
  function job.wait(timeout)
    local until_ = socket.gettime() + (timeout or 30)
    while socket.gettime() < until_ do
      local rc = tonumber(M.slurp(rcf):match("%d+"))
      if rc then return rc end
      socket.sleep(0.02)
    end
    return nil
  end
  function job.stdout() return M.slurp(outf) end
  function job.stderr() return M.slurp(errf) end
  return job
end

--- Waits until fn() is truthy (polling every 20 ms); returns its value or
-- raises after timeout seconds.
function M.wait_for(what, fn, timeout)
  local socket = require "socket"
  local until_ = socket.gettime() + (timeout or 10)
  while socket.gettime() < until_ do
    local v = fn()
    if v then return v end
    socket.sleep(0.02)
  end
  error("timed out waiting for " .. what, 2)
end

--- The records of a JSONL text (lines that do not parse are skipped).
function M.records(text)
  local list = {}
  for line in text:gmatch("[^\n]+") do
    local ok, r = pcall(cjson.decode, line)
    if ok and type(r) == "table" then list[#list + 1] = r end
  end
  return list
end

--- A valid request as JSON, merchant_uid `PREFIX-i`, `over` merged in.
function M.request_json(i, over, prefix)
  local r = {
    title = "CLI " .. i, user_code = "imp12345678", amount = 1000,
    merchant_uid = (prefix or "cli") .. "-" .. i, name = "Item", currency = "KRW",
    buyer_tel = "010-1234-5678", expired_at = os.time() + 3600,
    pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "Card" } },
  }
  for k, v in pairs(over or {}) do r[k] = v end
  return cjson.encode(r)
end

return M
