-- The CLI works however it was installed, says each thing once, and plays
-- the buyer and the webhook loop from the shell (issue [cli-docs] §2).
-- Lua 5.4 only: the CLI is installed for 5.4.
local helper = require "helpers.sandbox"
local C = require "helpers.cli"
local cjson = require "cjson"

local quote = C.quote

local function lua() return os.getenv("PLINK_LUA") or "lua5.4" end

-- runs a shell command; returns exit code, stdout, stderr
local function sh(t, cmd)
  local code = C.exit_code(os.execute(cmd .. " > " .. quote(t:path("o")) .. " 2> " .. quote(t:path("e"))))
  return code, C.slurp(t:path("o")), C.slurp(t:path("e"))
end

-- a foreground `portone-link sandbox ARGS`; returns the job and its URL
local function cli_sandbox(t, args, env)
  local job = C.spawn(t, "sandbox " .. args, { env = env })
  local url = C.wait_for("the sandbox's listening line", function()
    return job.stdout():match("sandbox listening on (http://[%d.]+:%d+)")
  end, 15)
  return job, url
end

describe("portone-link, installed anywhere #lua54", function()
  local t
  setup(function() t = C.tmpdir() end)
  teardown(function() t:cleanup() end)

  it("runs from a checkout with no LUA_PATH or LUA_CPATH, from any directory", function()
    local root = io.popen("pwd"):read("*l")
    local code, out = sh(t, "cd / && env -u LUA_PATH -u LUA_CPATH " .. lua() .. " " .. quote(root
      .. "/bin/portone-link") .. " --version")
    assert.equal(0, code)
    assert.truthy(out:find("^portone%-link %d+%.%d+%.%d+ %(Lua 5%.4, libcurl [%d.]+%)\n$"))
    -- through a symlink too
    os.execute("ln -sf " .. quote(root .. "/bin/portone-link") .. " " .. quote(t:path("pl")))
    code = sh(t, "cd / && env -u LUA_PATH -u LUA_CPATH " .. lua() .. " " .. quote(t:path("pl"))
      .. " validate --help")
    assert.equal(0, code)
  end)

  it("says in one line what to do when a module is missing", function()
    -- a checkout whose C core is not built
    os.execute("mkdir -p " .. quote(t:path("co/bin")) .. " && cp -r lua " .. quote(t:path("co/"))
      .. " && cp bin/portone-link " .. quote(t:path("co/bin/")))
    local code, out, err = sh(t, "env -u LUA_PATH -u LUA_CPATH LUA_CPATH=/nonexistent/?.so " .. lua() .. " "
      .. quote(t:path("co/bin/portone-link")) .. " --version")
    assert.equal(1, code)
    assert.equal("", out)
    assert.equal("portone-link: cannot load the Lua module 'portone.link.core': the C core is not built:"
      .. " run 'make' in " .. t:path("co") .. "\n", err)
    -- an installed copy with nothing on the paths
    os.execute("cp bin/portone-link " .. quote(t:path("alone")))
    local _
    code, _, err = sh(t, "env LUA_PATH=/nonexistent/?.lua LUA_CPATH=/nonexistent/?.so " .. lua() .. " "
      .. quote(t:path("alone")) .. " create x.json")
    assert.equal(1, code)
    assert.truthy(err:find("^portone%-link: cannot load the Lua module 'portone%.link%.core': install it"
      .. " %(luarocks%) or set LUA_PATH/LUA_CPATH, e%.g%. eval \"%$%(luarocks %-%-lua%-version 5%.4 path"))
    assert.is_nil(err:find("traceback", 1, true))
  end)

  it("the sandbox ignores the caller's 5.4 LUA_PATH/LUA_CPATH (nginx runs LuaJIT)", function()
    local env = {
      LUA_CPATH = "/usr/lib/x86_64-linux-gnu/lua/5.4/?.so;/usr/local/lib/lua/5.4/?.so;"
        .. os.getenv("LUA_CPATH"),
      LUA_PATH = "/usr/share/lua/5.4/?.lua;" .. os.getenv("LUA_PATH"),
    }
    local job, url = cli_sandbox(t, "--port 0", env)
    local host, port = url:match("^http://([^:]+):(%d+)$")
    local status, body = require("portone.sandbox").http(host, tonumber(port), "GET", "/__sandbox/stats")
    assert.equal(200, status)
    assert.truthy(cjson.decode(body).pid)
    job.kill("TERM")
    assert.truthy(job.wait(10))
    assert.is_nil(job.stderr():find("undefined symbol", 1, true))
  end)
end)

describe("portone-link says each thing once #lua54", function()
  local sb, base, t
  setup(function()
    t = C.tmpdir()
    sb = helper.start()
    base = "--base-url " .. sb.url
  end)
  teardown(function()
    if sb then sb:stop() end
    t:cleanup()
  end)
  before_each(function() sb:reset() end)

  it("a 404 names the status once", function()
    local code, _, err = C.run(t, "deactivate " .. base .. " zzzz")
    assert.equal(1, code)
    assert.equal("portone-link deactivate: HTTP 404: no such link: zzzz (code -1)\n", err)
  end)

  it("a request that fails validation lists each problem once", function()
    C.write(t:path("bad.json"), C.request_json(1, { amount = -1 }))
    local code, _, err = C.run(t, "create " .. base .. " " .. quote(t:path("bad.json")))
    assert.equal(2, code)
    assert.equal("portone-link create: the request has 1 problem:\n"
      .. "  amount: must be greater than 0 [range]\n", err)
    assert.equal(0, sb:stats().requests)
  end)

  it("--json output keeps / unescaped", function()
    C.write(t:path("ok.json"), C.request_json(2))
    local code, out = C.run(t, "create --json " .. base .. " " .. quote(t:path("ok.json")))
    assert.equal(0, code)
    assert.is_nil(out:find("\\/", 1, true))
    assert.truthy(out:find('"url":"http://127.0.0.1:', 1, true))
    assert.equal(200, cjson.decode(out).status)
  end)

  it("plain http to another host names the CLI's --insecure-http flag, which works", function()
    C.write(t:path("ok.json"), C.request_json(3))
    -- 0.0.0.0 is no loopback name to the URL check, yet a connection to it
    -- stays on this machine (Linux takes it as the local host): nothing
    -- leaves 127.0.0.1 for a routed address
    local code, _, err = C.run(t, "create --base-url http://0.0.0.0:9 " .. quote(t:path("ok.json")))
    assert.equal(2, code)
    assert.truthy(err:find("pass --insecure-http", 1, true))
    assert.is_nil(err:find("insecure_http", 1, true))
    -- accepted with the flag (nothing listens on port 9: refused, a transport error)
    local out
    code, out = C.run(t, "create --json --insecure-http --timeout 0.2 --base-url http://0.0.0.0:9 "
      .. quote(t:path("ok.json")))
    assert.equal(1, code)
    local kind = cjson.decode(out).error.kind
    assert.truthy(kind == "timeout" or kind == "transport", kind)
  end)

  it("the deprecated PORTONE_TOKEN still sends the token, with a warning", function()
    C.write(t:path("ok.json"), C.request_json(4))
    local code, _, err = C.run(t, "create " .. base .. " " .. quote(t:path("ok.json")),
      { env = { PORTONE_TOKEN = "old-tok" } })
    assert.equal(0, code)
    assert.truthy(err:find("PORTONE_TOKEN is deprecated, set PORTONE_LINK_TOKEN", 1, true))
    local reqs = sb:requests()
    assert.equal("Bearer old-tok", reqs[#reqs].headers.authorization)
  end)

  it("a file saved with a UTF-8 byte order mark and CRLF line ends reads as without", function()
    local bom = "\239\187\191"
    C.write(t:path("bom.json"), bom .. C.request_json(11, nil, "bom") .. "\r\n")
    C.write(t:path("bom.jsonl"), bom .. C.request_json(12, nil, "bom") .. "\r\n"
      .. C.request_json(13, nil, "bom") .. "\r\n\r\n")
    local _
    local code, out, err = C.run(t, "validate " .. quote(t:path("bom.json")))
    assert.equal(0, code, out .. err)
    code, out, err = C.run(t, "validate " .. quote(t:path("bom.jsonl")))
    assert.equal(0, code, out .. err)
    assert.truthy(out:find("\n2 requests: 2 valid, 0 invalid\n$"), out)
    code, _, err = C.run(t, "create " .. base .. " - ", { stdin = t:path("bom.json") })
    assert.equal(0, code, err)
    code, out, err = C.run(t, "batch " .. base .. " " .. quote(t:path("bom.jsonl")),
      { env = { PORTONE_LINK_PROGRESS = "0" } })
    assert.equal(0, code, out .. err)
    assert.equal(3, sb:stats().creates)
  end)

  it("validate on a JSONL file ends with a summary; bad JSON is an invalid request (exit 1)", function()
    C.write(t:path("v.jsonl"), table.concat({ C.request_json(5), "{nope",
      C.request_json(6, { amount = 0 }) }, "\n"))
    local code, out = C.run(t, "validate " .. quote(t:path("v.jsonl")))
    assert.equal(1, code)
    assert.truthy(out:find("line 1: ok\n", 1, true))
    assert.truthy(out:find("line 2: 1 problem\n", 1, true))
    assert.truthy(out:find("\n3 requests: 1 valid, 2 invalid\n$"))
  end)
end)

describe("portone-link sandbox pay and --forward-to #lua54", function()
  local t, app, job, url
  setup(function()
    t = C.tmpdir()
    app = helper.start() -- the local app: its inbox receives the webhooks
    job, url = cli_sandbox(t, "--port 0 --forward-to " .. app.url .. "/__sandbox/inbox")
  end)
  teardown(function()
    if job then job.kill("TERM"); job.wait(10) end
    if app then app:stop() end
    t:cleanup()
  end)

  -- `portone-link sandbox CMD [FLAGS] --base-url URL ARG` against this sandbox
  local function sandbox(cmd, arg)
    return C.run(t, "sandbox " .. cmd .. " --base-url " .. url .. " " .. arg)
  end

  local function new_link(i, over)
    over = over or {}
    over.notice_url = over.notice_url or "https://shop.example/portone/webhook" -- elsewhere
    over.pay_methods = over.pay_methods or { { pg = "INIpayTest", pay_method = "card", label = "Card" },
      { pg = "INIpayTest", pay_method = "vbank", label = "Bank" } }
    C.write(t:path("req.json"), C.request_json(i, over, "pay"))
    local code, out, err = C.run(t, "create --base-url " .. url .. " " .. quote(t:path("req.json")))
    assert.equal(0, code, err)
    return (out:gsub("%s+$", ""))
  end

  it("pays with the chosen method and the webhook reaches --forward-to, printed with its answer", function()
    local link = new_link(1)
    local before = #app:admin("GET", "inbox")
    -- vbank: a ready payment; the CLI prints the account to pay into
    local code, out, err = sandbox("pay --method vbank", quote(link))
    assert.equal(0, code, err)
    assert.truthy(out:find("^ready: link [%w_-]+ with vbank: imp_uid imp_%d+, merchant_uid pay%-1,"
      .. " amount 1000 KRW, waiting for the deposit\n"), out)
    assert.truthy(out:find("\nvbank: KB국민은행 T%d+, holder [^\n]+, due %d+%-%d+%-%d+ %d+:%d+ UTC\n"), out)
    local imp = out:match("imp_uid (imp_%d+)")
    assert.truthy(out:find("\ndeposit: portone-link sandbox deposit --base-url " .. url .. " " .. imp .. "\n",
      1, true), out)
    assert.truthy(out:find("\nwebhook 1 %(ready%): HTTP 200 in %d+ ms\n"), out)
    -- the sandbox printed the delivery and its answer
    C.wait_for("the delivery line", function()
      return job.stdout():find("webhook pay%-1 ready %-> http://[%d.:]+/__sandbox/inbox: HTTP 200 %(%d+ ms%)")
    end)
    -- the link is taken: paying twice is refused
    local _
    code, _, err = sandbox("pay", quote(link))
    assert.equal(1, code)
    assert.truthy(err:find("already paid", 1, true))
    -- so is another link of the same order (merchant_uid pay-1), as PortOne
    -- refuses a second payment for an order: no payment, no webhook
    code, _, err = sandbox("pay", quote(new_link(1)))
    assert.equal(1, code)
    assert.truthy(err:find("order (merchant_uid) 'pay-1' has a virtual account waiting for its"
      .. " deposit (imp_uid " .. imp .. ")", 1, true), err)
    -- the deposit makes it paid, with its webhook
    code, out, err = sandbox("deposit", imp)
    assert.equal(0, code, err)
    assert.truthy(out:find("^deposited: imp_uid " .. imp .. ", merchant_uid pay%-1, amount 1000 KRW"
      .. " is paid\n"), out)
    assert.truthy(out:find("\nwebhook 1 %(paid%): HTTP 200 in %d+ ms\n"), out)
    local inbox = app:admin("GET", "inbox")
    assert.equal(before + 2, #inbox)
    assert.truthy(inbox[#inbox - 1].body:find('"status":"ready"', 1, true))
    assert.truthy(inbox[#inbox].body:find('"status":"paid"', 1, true))
    assert.truthy(inbox[#inbox].body:find(imp, 1, true))
    C.wait_for("the paid delivery line", function()
      return job.stdout():find("webhook pay%-1 paid %-> http://[%d.:]+/__sandbox/inbox: HTTP 200")
    end)
    -- a second deposit is refused (not ready); an unknown imp_uid is a usage error
    code, _, err = sandbox("deposit", imp)
    assert.equal(1, code)
    assert.truthy(err:find("not ready", 1, true), err)
    code, _, err = sandbox("deposit", "imp_000000000001")
    assert.equal(2, code)
    assert.truthy(err:find("no payment 'imp_000000000001'", 1, true), err)
  end)

  it("--method fail makes a failed payment, with no webhook (as PortOne); the link stays payable; card",
    function()
    local link = new_link(2)
    local before = #app:admin("GET", "inbox")
    local code, out, err = sandbox("pay --method fail", quote(link))
    assert.equal(0, code, err)
    assert.truthy(out:find("^declined: link [%w_-]+, imp_uid imp_%d+, merchant_uid pay%-2, failed: [^\n]+;"
      .. " the link can still be paid\n"), out)
    assert.truthy(out:find("\nwebhook: none %(PortOne sends none for a failed payment%)\n"), out)
    local failed = out:match("imp_uid (imp_%d+)")
    assert.equal(before, #app:admin("GET", "inbox"))
    -- the failed payment is on record, as REST V1 shows it
    local status, body = require("portone.sandbox").http("127.0.0.1", tonumber(url:match(":(%d+)$")),
      "GET", "/__sandbox/payments/" .. failed)
    assert.equal(200, status)
    local p = cjson.decode(body)
    assert.equal("failed", p.status)
    assert.is_string(p.fail_reason)
    local _
    code, _, out = sandbox("pay --method kakaopay", quote(link))
    assert.equal(2, code)
    assert.truthy(out:find("it offers card, vbank", 1, true))
    assert.equal(before, #app:admin("GET", "inbox"))
    code, out = sandbox("pay --method card --json", quote(link))
    assert.equal(0, code)
    p = cjson.decode(out)
    assert.equal("card", p.pay_method)
    assert.equal("paid", p.status)
    assert.are_not.equal(failed, p.imp_uid)
    C.wait_for("the webhook", function() return #app:admin("GET", "inbox") == before + 1 end)
    for _, e in ipairs(app:admin("GET", "inbox")) do assert.falsy(e.body:find(failed, 1, true)) end
  end)

  -- the CLI sandbox's admin API: decoded answer and status
  local function admin(method, path, body)
    local status, resp = require("portone.sandbox").http("127.0.0.1", tonumber(url:match(":(%d+)$")),
      method, "/__sandbox/" .. path, body and cjson.encode(body) or nil,
      body and { ["Content-Type"] = "application/json" } or nil)
    return cjson.decode(resp), status
  end

  it("pays a link with direct by its direct method: no --method on a direct vbank link gives a ready"
    .. " payment and its webhook; another method is refused", function()
    local direct = { pg = "INIpayTest", pay_method = "vbank" }
    local link = new_link(3, { direct = direct })
    local before = #app:admin("GET", "inbox")
    local code, _, err = sandbox("pay --method card", quote(link))
    local out
    assert.equal(2, code)
    assert.truthy(err:find("direct", 1, true), err)
    assert.truthy(err:find("only vbank", 1, true), err)
    code, out, err = sandbox("pay", quote(link))
    assert.equal(0, code, err)
    assert.truthy(out:find("^ready: link [%w_-]+ with vbank: imp_uid imp_%d+, merchant_uid pay%-3,"), out)
    assert.truthy(out:find("\nwebhook 1 %(ready%): HTTP 200 in %d+ ms\n"), out)
    local inbox = app:admin("GET", "inbox")
    assert.equal(before + 1, #inbox)
    assert.truthy(inbox[#inbox].body:find('"status":"ready"', 1, true))
    -- --method fail declines the direct method (the payment step's decline button)
    link = new_link(4, { direct = direct })
    code, out, err = sandbox("pay --json --method fail", quote(link))
    assert.equal(0, code, err)
    local p = cjson.decode(out)
    assert.equal("failed", p.status)
    assert.equal("vbank", p.pay_method)
    -- the direct method by name or index is fine
    for i, m in ipairs({ "vbank", "2", "direct" }) do
      code, out, err = sandbox("pay --json --method " .. m, quote(new_link(10 + i, { direct = direct })))
      assert.equal(0, code, err)
      assert.equal("vbank", cjson.decode(out).pay_method)
    end
  end)

  it("deposit after the due date exits 1 naming it; the payment stays ready, with no webhook", function()
    local vbank = { { pg = "INIpayTest", pay_method = "vbank", label = "Bank" } }
    local link = new_link(6, { pay_methods = vbank })
    local code, out, err = sandbox("pay --json", quote(link))
    assert.equal(0, code, err)
    local p = cjson.decode(out)
    assert.equal("ready", p.status)
    C.wait_for("the ready webhook", function()
      local q = admin("GET", "payments/" .. p.imp_uid)
      return q.webhooks and #q.webhooks == 1
    end)
    local before = #app:admin("GET", "inbox")
    local clock = admin("GET", "clock")
    admin("POST", "clock", { offset = clock.offset + p.vbank_date + 3600 - clock.now })
    local ok, e = pcall(function()
      code, out, err = sandbox("deposit", p.imp_uid)
      assert.equal(1, code, out)
      assert.equal("", out)
      assert.truthy(err:find("due date", 1, true), err)
      assert.truthy(err:find(os.date("!%Y-%m-%d %H:%M:%S UTC", p.vbank_date), 1, true), err)
      local q = admin("GET", "payments/" .. p.imp_uid)
      assert.equal("ready", q.status)
      assert.equal(1, #q.webhooks)
      require("socket").sleep(0.3)
      assert.equal(before, #app:admin("GET", "inbox"))
    end)
    admin("POST", "clock", { offset = 0 })
    assert(ok, e)
  end)

  it("a link id that starts with '-' goes after '--' (the help says so)", function()
    local code, out = sandbox("pay --help", "")
    assert.equal(0, code)
    assert.truthy(out:find("'--' ends the options", 1, true), out)
    assert.truthy(out:find("sandbox pay -- -abc", 1, true), out)
    local _, err
    code, _, err = sandbox("pay", "-abc")
    assert.equal(2, code)
    assert.truthy(err:find("unknown option -abc", 1, true), err)
    -- after '--' it is the link id, and the sandbox is asked for it
    code, _, err = sandbox("pay", "-- -abc")
    assert.equal(2, code)
    assert.truthy(err:find("no link '-abc' in the sandbox", 1, true), err)
    code, _, err = sandbox("deposit", "-- -imp")
    assert.equal(2, code)
    assert.truthy(err:find("no payment '-imp' in the sandbox", 1, true), err)
  end)

  it("refuses a --forward-to off loopback, and an unknown link", function()
    local code, _, err = C.run(t, "sandbox --forward-to https://example.com/hook")
    assert.equal(2, code)
    assert.truthy(err:find("loopback", 1, true))
    code, _, err = sandbox("pay", "nosuchlink")
    assert.equal(2, code)
    assert.truthy(err:find("no link 'nosuchlink'", 1, true))
  end)
end)
