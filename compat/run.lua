--- Driver of the REST V1 compatibility suite (run by scripts/compat with
-- lua5.4 from the repo root): starts a sandbox without a key pair (it makes
-- one up), runs compat/clients.test.mjs in node against it with no proxy in
-- between, and writes the results as TAP.
--
--   lua5.4 compat/run.lua [tap_file]      (default build/results/compat.tap)
local sandbox = require "portone.sandbox"

local TAP = arg[1] or "build/results/compat.tap"

local tap = require("helpers.tap").new(TAP, "compat")
local ok, out, write_tap = tap.ok, tap.out, tap.write

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local sb, err = sandbox.start()
if not ok(sb ~= nil, "sandbox starts", err) then write_tap(); os.exit(1) end

local function main()
  ok(sb.imp_key and sb.imp_secret, "the sandbox made up a key pair")
  -- no proxy between the clients and the sandbox (axios honours *_proxy)
  local cmd = "env -u http_proxy -u HTTP_PROXY -u https_proxy -u HTTPS_PROXY -u all_proxy -u ALL_PROXY"
    .. " NO_PROXY=127.0.0.1,localhost COMPAT_SANDBOX_URL=" .. shq(sb.url)
    .. " COMPAT_IMP_KEY=" .. shq(sb.imp_key) .. " COMPAT_IMP_SECRET=" .. shq(sb.imp_secret)
    .. " node compat/clients.test.mjs 2>&1"
  local p = io.popen(cmd)
  local got = 0
  for line in p:lines() do
    local verdict, name = line:match("^(n?o?t? ?ok) %d+ %- (.*)$")
    if verdict == "ok" then ok(true, name); got = got + 1
    elseif verdict == "not ok" then ok(false, name); got = got + 1
    elseif line:match("^#") then out(line)
    elseif not line:match("^1%.%.%d+$") then out("# node: " .. line) end
  end
  local _, _, code = p:close()
  ok(got > 0, "the clients' tests ran")
  ok(code == 0 or code == nil, "node exits 0", "exit " .. tostring(code))
end

local pok, perr = pcall(main)
ok(pok, "driver ran to the end", perr)
sb:stop()
write_tap()
os.exit((tap.failed > 0 or not pok) and 1 or 0)
