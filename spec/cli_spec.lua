-- The portone-link command line, run for real (lua5.4 bin/portone-link)
-- against the sandbox. Lua 5.4 only: the CLI is installed for 5.4.
local helper = require "helpers.sandbox"
local cjson = require "cjson"

-- the runner, temp files and request maker are helpers/cli's, shared with
-- the cli_batch and cli_more specs
local C = require "helpers.cli"
local quote, write, slurp, request_json = C.quote, C.write, C.slurp, C.request_json

local t -- C.tmpdir(), made in setup
local function tmp(name) return t:path(name) end

-- Runs the command; returns exit code, stdout, stderr.
local function cli(args, opts) return C.run(t, args, opts) end

describe("portone-link CLI #lua54", function()
  local sb, base
  setup(function()
    t = C.tmpdir()
    sb = helper.start()
    base = "--base-url " .. sb.url
  end)
  teardown(function()
    if sb then sb:stop() end
    if t then t:cleanup() end
  end)
  before_each(function() sb:reset() end)

  it("has --help for every command (exit 0)", function()
    for _, cmd in ipairs({ "create", "deactivate", "validate", "batch" }) do
      local code, out = cli(cmd .. " --help")
      assert.equal(0, code)
      assert.truthy(out:find("usage: portone-link " .. cmd, 1, true), cmd)
    end
    local code, out = cli("--help")
    assert.equal(0, code)
    assert.truthy(out:find("batch", 1, true))
  end)

  it("exits 2 on usage errors and refuses a --token flag", function()
    assert.equal(2, (cli("create")))
    assert.equal(2, (cli("create --bogus x.json")))
    assert.equal(2, (cli("batch --concurrency zero x.jsonl")))
    local code, _, err = cli("create --token s3cr3t x.json")
    assert.equal(2, code)
    assert.truthy(err:find("PORTONE_LINK_TOKEN", 1, true))
    assert.is_nil(err:find("s3cr3t", 1, true))
    assert.equal(2, (cli("create " .. quote(tmp("missing.json")))))
  end)

  it("create FILE prints the URL; --json prints url, id, status", function()
    write(tmp("req.json"), request_json(1))
    local code, out = cli("create " .. base .. " " .. quote(tmp("req.json")))
    assert.equal(0, code)
    assert.truthy(out:find("^http://127%.0%.0%.1:%d+/[%w_-]+\n$"))
    code, out = cli("create --json " .. base .. " -", { stdin = tmp("req.json") })
    assert.equal(0, code)
    local r = cjson.decode(out)
    assert.equal(200, r.status)
    assert.truthy(r.url:find(r.id, 1, true))
  end)

  it("sends the token from PORTONE_LINK_TOKEN", function()
    write(tmp("req.json"), request_json(2))
    local code = cli("create " .. base .. " " .. quote(tmp("req.json")),
      { env = { PORTONE_LINK_TOKEN = "tok-123" } })
    assert.equal(0, code)
    local reqs = sb:requests()
    local auth = reqs[#reqs].headers.authorization or reqs[#reqs].headers.Authorization
    assert.equal("Bearer tok-123", auth)
  end)

  it("never prints the token, even when the server echoes it (create, batch, --json)", function()
    local token = "tok/SECRET-77"
    local echo = '{"code":"tok/SECRET-77","message":"token tok\\/SECRET-77 refused"}'
    write(tmp("req.json"), request_json(6))
    write(tmp("batch.jsonl"), request_json(7) .. "\n")
    for _, args in ipairs({ "create ", "create --json ", "batch ", "batch --json " }) do
      sb:faults("create", { { status = 400, body = echo } })
      local file = args:find("batch") and tmp("batch.jsonl") or tmp("req.json")
      local code, out, err = cli(args .. base .. " " .. quote(file),
        { env = { PORTONE_LINK_TOKEN = token, PORTONE_LINK_PROGRESS = "0" } })
      assert.equal(1, code, args)
      for _, text in ipairs({ out, err }) do
        assert.is_nil(text:find("SECRET", 1, true), args .. ": " .. text)
      end
      -- the echo did reach the output, scrubbed
      assert.truthy((out .. err):find("[token]", 1, true), args .. ": " .. out .. err)
    end
  end)

  it("create reports API failures with exit 1 and bad input with exit 2", function()
    write(tmp("req.json"), request_json(3))
    sb:faults("create", { { status = 500 } })
    local code, out = cli("create --json " .. base .. " " .. quote(tmp("req.json")))
    assert.equal(1, code)
    assert.equal(500, cjson.decode(out).error.status)
    assert.is_true(cjson.decode(out).error.may_exist)     -- a 500 is no clear refusal
    sb:faults("create", { { status = 400 } })
    code, out = cli("create --json " .. base .. " " .. quote(tmp("req.json")))
    assert.equal(1, code)
    assert.is_false(cjson.decode(out).error.may_exist)
    write(tmp("bad.json"), "{not json")
    assert.equal(2, (cli("create " .. base .. " " .. quote(tmp("bad.json")))))
    write(tmp("invalid.json"), request_json(4, { amount = -5 }))
    code = cli("create " .. base .. " " .. quote(tmp("invalid.json")))
    assert.equal(2, code)
  end)

  it("an error JSON cannot hold (a code of 1e999) is still valid JSON in create --json and batch",
    function()
    write(tmp("req.json"), request_json(11))
    write(tmp("one.jsonl"), request_json(12) .. "\n")
    local body = '{"code":1e999,"message":"out of range"}'
    sb:faults("create", { { status = 400, body = body } })
    local code, out, err = cli("create --json " .. base .. " " .. quote(tmp("req.json")))
    assert.equal(1, code, err)
    local e = cjson.decode(out).error
    assert.equal(400, e.status)
    assert.is_false(e.may_exist)
    sb:faults("create", { { status = 400, body = body } })
    code, out, err = cli("batch " .. base .. " " .. quote(tmp("one.jsonl")),
      { env = { PORTONE_LINK_PROGRESS = "0" } })
    assert.equal(1, code)
    assert.is_nil(err:find("internal error", 1, true), err)
    local r = cjson.decode(out)
    assert.equal("failed", r.state)
    assert.equal(400, r.error.status)
  end)

  it("create: a URL that cannot be written goes to stderr with exit 1, never lost", function()
    write(tmp("req.json"), request_json(8))
    for _, flag in ipairs({ "", "--json " }) do
      local code = C.exit_code(os.execute("env " .. (os.getenv("PLINK_LUA") or "lua5.4")
        .. " bin/portone-link create " .. flag .. base .. " " .. quote(tmp("req.json"))
        .. " > /dev/full 2> " .. quote(tmp("full.err"))))
      assert.equal(1, code, flag)
      local err = C.slurp(tmp("full.err"))
      local url = err:match("created (%S+) %(id")
      assert.truthy(url, err)
      assert.truthy(err:find("cannot write stdout", 1, true), err)
      local links = sb:admin("GET", "links")
      assert.truthy(links[url:match("[^/]+$")], "the printed link is the created one")
    end
    -- a pipe whose reader has gone: the reader closes its end, then tells
    -- the writer to start through a FIFO, so the write surely fails. It
    -- must fail (EPIPE), not kill the command. SIGPIPE back to its default
    -- first: LuaSocket, loaded here, ignores it, and children inherit that
    local fifo = tmp("go.fifo")
    os.remove(fifo)
    assert(C.exit_code(os.execute("mkfifo " .. quote(fifo))) == 0)
    local code = C.exit_code(os.execute("sh -c " .. quote("{ read _ < " .. quote(fifo)
      .. "; env --default-signal=PIPE " .. (os.getenv("PLINK_LUA") or "lua5.4")
      .. " bin/portone-link create " .. base .. " " .. quote(tmp("req.json"))
      .. " 2> " .. quote(tmp("pipe.err")) .. "; echo $? > " .. quote(tmp("pipe.code"))
      .. "; } | { exec 0<&-; echo go > " .. quote(fifo) .. "; }")))
    assert.equal(0, code)
    assert.equal("1", (C.slurp(tmp("pipe.code")):gsub("%s", "")), C.slurp(tmp("pipe.err")))
    local err = C.slurp(tmp("pipe.err"))
    assert.truthy(err:find("created .* but cannot write stdout"), err)
  end)

  it("create honours --timeout", function()
    write(tmp("req.json"), request_json(5))
    sb:faults("create", { { delay_ms = 2000 } })
    local code, out = cli("create --json --timeout 0.3 " .. base .. " " .. quote(tmp("req.json")))
    assert.equal(1, code)
    local e = cjson.decode(out).error
    assert.equal("timeout", e.kind)
    assert.is_true(e.sent)
    assert.is_true(e.may_exist)
    -- without --json, a person is told not to simply run it again
    sb:faults("create", { { delay_ms = 2000 } })
    local _, err
    code, _, err = cli("create --timeout 0.3 " .. base .. " " .. quote(tmp("req.json")))
    assert.equal(1, code)
    assert.truthy(err:find("timeout: ", 1, true), err)
    assert.truthy(err:find("the link may exist; check before you create it again", 1, true), err)
  end)

  it("create: Ctrl-C or SIGTERM while the request is in flight still prints the link made", function()
    write(tmp("req.json"), request_json(9))
    for _, case in ipairs({ { sig = "INT", flag = "" }, { sig = "TERM", flag = "--json " } }) do
      sb:reset()
      sb:faults("create", { { delay_ms = 1500 } })
      local job = C.spawn(t, "create " .. case.flag .. base .. " " .. quote(tmp("req.json")))
      C.wait_for("the request at the sandbox", function() return sb:stats().requests == 1 end)
      job.kill(case.sig)
      assert.equal(0, job.wait(10), job.stderr())
      local err = job.stderr()
      assert.truthy(err:find("waiting for the answer to the request in flight", 1, true), err)
      assert.is_nil(err:find("interrupted!", 1, true), err)
      local url = case.flag == "" and job.stdout():match("^(%S+)\n$") or cjson.decode(job.stdout()).url
      assert.truthy(sb:admin("GET", "links")[url:match("[^/]+$")], "the printed link is the created one")
    end
  end)

  it("create: a second Ctrl-C abandons the request in flight, says the link may exist, exits 130",
    function()
    write(tmp("req.json"), request_json(10))
    for _, flag in ipairs({ "", "--json " }) do
      sb:reset()
      sb:faults("create", { { delay_ms = 6000 } })
      local job = C.spawn(t, "create " .. flag .. base .. " " .. quote(tmp("req.json")))
      C.wait_for("the request at the sandbox", function() return sb:stats().requests == 1 end)
      job.kill("INT")
      C.wait_for("the waiting message", function() return job.stderr():find("waiting", 1, true) end)
      job.kill("INT")
      assert.equal(130, job.wait(5)) -- before the held answer (6 s)
      if flag == "" then
        assert.equal("", job.stdout())
        assert.truthy(job.stderr():find("the link may exist; check before you create it again", 1, true),
          job.stderr())
      else
        local e = cjson.decode(job.stdout()).error
        assert.equal("abandoned", e.kind)
        assert.is_true(e.may_exist)
      end
    end
  end)

  it("deactivate URL|ID", function()
    write(tmp("req.json"), request_json(6))
    local _, url = cli("create " .. base .. " " .. quote(tmp("req.json")))
    url = url:gsub("%s+$", "")
    local code, out = cli("deactivate " .. base .. " " .. quote(url))
    assert.equal(0, code)
    assert.truthy(out:find("deactivated", 1, true))
    local id = url:match("([^/]+)$")
    code, out = cli("deactivate --json " .. base .. " " .. id)
    assert.equal(0, code)
    assert.is_true(cjson.decode(out).ok)
    assert.equal(2, (cli("deactivate " .. base .. " ../etc")))
  end)

  it("deactivate: an id that starts with '-' goes after '--', as the help says; without it, it is an"
    .. " unknown option and nothing is sent", function()
    local code, out = cli("deactivate --help")
    assert.equal(0, code)
    assert.truthy(out:find("'--' ends the options", 1, true), out)
    assert.truthy(out:find("deactivate -- -abc", 1, true), out)
    local _, err
    code, _, err = cli("deactivate " .. base .. " -abc")
    assert.equal(2, code)
    assert.truthy(err:find("unknown option -abc", 1, true), err)
    assert.same({}, assert(sb:requests()))
    -- -abc is a valid id ([A-Za-z0-9_-]{1,64}): after '--' the PUT goes out
    -- (the sandbox has no such link: 404, exit 1)
    code, _, err = cli("deactivate " .. base .. " -- -abc")
    assert.equal(1, code)
    assert.truthy(err:find("404", 1, true), err)
    local reqs = assert(sb:requests())
    assert.equal(1, #reqs)
    assert.equal("PUT", reqs[1].method)
    assert.equal(helper.API .. "/-abc", reqs[1].uri)
  end)

  it("validate lists every error with field paths", function()
    write(tmp("bad.json"), cjson.encode({
      title = 5, merchant_id = "x",
      pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "A" },
                      { pg = "INIpayTest", pay_method = "nope", label = "B" } },
    }))
    local code, out = cli("validate " .. quote(tmp("bad.json")))
    assert.equal(1, code)
    assert.truthy(out:find("title:", 1, true))
    assert.truthy(out:find("pay_methods[2].pay_method", 1, true))
    assert.truthy(out:find("merchant_uid", 1, true))   -- suggestion for merchant_id
    code, out = cli("validate --json - ", { stdin = tmp("bad.json") })
    assert.equal(1, code)
    local r = cjson.decode(out)
    assert.is_false(r.ok)
    assert.is_true(#r.errors >= 5)
    write(tmp("ok.json"), request_json(7))
    code, out = cli("validate " .. quote(tmp("ok.json")))
    assert.equal(0, code)
    assert.equal("ok\n", out)
    assert.equal(0, sb:stats().requests)
  end)

  it("batch writes one result per line (in completion order) and exits 1 when some failed", function()
    local lines = {}
    for i = 1, 30 do lines[i] = request_json(100 + i) end
    lines[7] = "this is not json"
    lines[12] = request_json(12, { currency = "won" })
    write(tmp("in.jsonl"), table.concat(lines, "\n") .. "\n")
    local code, out, err = cli("batch --concurrency 8 " .. base .. " " .. quote(tmp("in.jsonl")),
      { env = { PORTONE_LINK_PROGRESS = "0" } })
    assert.equal(1, code)
    local seen = {}
    local links = sb:admin("GET", "links")
    for line in out:gmatch("[^\n]+") do
      local r = cjson.decode(line)
      local n = math.floor(r.line)
      assert.is_nil(seen[n])
      seen[n] = true
      if n == 7 or n == 12 then
        assert.is_false(r.ok)
        assert.equal("failed", r.state)
      else
        assert.is_true(r.ok)
        assert.equal("created", r.state)
        assert.equal("cli-" .. (100 + n), r.merchant_uid)
        assert.equal("cli-" .. (100 + n), links[r.id].merchant_uid)
      end
    end
    for i = 1, 30 do assert.is_true(seen[i], "line " .. i) end
    assert.equal(28, sb:stats().requests)
    -- plain progress lines and a summary on stderr (not a terminal)
    assert.is_nil(err:find("\r", 1, true))
    assert.truthy(err:find("30 lines: 28 created, 2 failed (2 invalid)", 1, true))
  end)

  it("batch --out FILE, exit 0 when all succeed; a progress bar on a terminal", function()
    local lines = {}
    for i = 1, 10 do lines[i] = request_json(200 + i) end
    write(tmp("ok.jsonl"), table.concat(lines, "\n"))
    local code, out, err = cli("batch " .. base .. " --out " .. quote(tmp("res.jsonl")) .. " "
      .. quote(tmp("ok.jsonl")), { env = { PORTONE_LINK_PROGRESS = "1" } })
    assert.equal(0, code)
    assert.equal("", out)
    local n = 0
    for line in slurp(tmp("res.jsonl")):gmatch("[^\n]+") do
      if cjson.decode(line).state == "created" then n = n + 1 end
    end
    assert.equal(10, n)
    assert.truthy(err:find("\r[", 1, true))
    assert.truthy(err:find("10/10", 1, true))
    assert.truthy(err:find("ETA", 1, true))
    assert.truthy(err:find("10 lines: 10 created, 0 failed", 1, true))
  end)

  it("batch reports unreadable input with exit 2", function()
    assert.equal(2, (cli("batch " .. base .. " " .. quote(tmp("nope.jsonl")))))
    write(tmp("empty.jsonl"), "\n\n")
    assert.equal(2, (cli("batch " .. base .. " " .. quote(tmp("empty.jsonl")))))
  end)
end)
