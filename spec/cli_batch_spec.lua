-- `portone-link batch` never loses a created link: results are flushed as
-- they arrive, a kill (SIGINT, SIGTERM, SIGKILL) and a rerun with --resume
-- give exactly one link per input line, checked against the sandbox's
-- request log and its links. Lua 5.4 only: the CLI is installed for 5.4.
local helper = require "helpers.sandbox"
local C = require "helpers.cli"
local cjson = require "cjson"

local quote = C.quote

-- merchant_uid -> number of create requests the sandbox received for it
local function creates_by_uid(sb)
  local n = {}
  for _, r in ipairs(sb:requests()) do
    if r.method == "POST" and r.uri == helper.API then
      local info = cjson.decode(cjson.decode(r.body).payment_info)
      n[info.merchant_uid] = (n[info.merchant_uid] or 0) + 1
    end
  end
  return n
end

local function links_by_uid(sb)
  local n = {}
  for _, l in pairs(sb:admin("GET", "links")) do
    n[l.merchant_uid] = (n[l.merchant_uid] or 0) + 1
  end
  return n
end

local function link_count(sb)
  local n = 0
  for _ in pairs(sb:admin("GET", "links")) do n = n + 1 end
  return n
end

local function count_state(text, state)
  local n = 0
  for _, r in ipairs(C.records(text)) do if r.state == state then n = n + 1 end end
  return n
end

-- every line of 1..n has exactly one create request and one link
-- (links only when a line was meant to be sent twice: a retried failure)
local function assert_one_link_each(sb, n, prefix, links_only)
  local reqs, links = creates_by_uid(sb), links_by_uid(sb)
  for i = 1, n do
    local uid = prefix .. "-" .. i
    if not links_only then assert.equal(1, reqs[uid], "create requests for " .. uid) end
    assert.equal(1, links[uid], "links for " .. uid)
  end
end

local function input(t, n, prefix, name)
  local lines = {}
  for i = 1, n do lines[i] = C.request_json(i, nil, prefix) end
  local path = t:path(name or "in.jsonl")
  C.write(path, table.concat(lines, "\n") .. "\n")
  return path
end

-- `fast` quick creates, then `held` creates that the sandbox holds for
-- hold_ms: with --concurrency held, the batch then has exactly `held`
-- requests in flight and cannot start another until they answer.
local function hold_after(sb, fast, held, hold_ms)
  local list = {}
  for i = 1, fast do list[i] = { delay_ms = 0 } end
  for i = 1, held do list[fast + i] = { delay_ms = hold_ms } end
  sb:faults("create", list)
end

-- waits until the batch has `sent` requests at the sandbox and as many
-- "sending" records in its --out file
local function wait_in_flight(sb, out, sent)
  C.wait_for(sent .. " requests in flight", function()
    return sb:stats().requests == sent and count_state(C.slurp(out), "sending") == sent
  end, 15)
end

describe("portone-link batch, kills and resumes #lua54", function()
  local sb, base, t
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

  local env = { PORTONE_LINK_PROGRESS = "0" }

  -- `batch FLAGS --base-url URL --out OUT INP`, progress off: run in the
  -- foreground (code, stdout, stderr) or spawned (a job)
  local function batch_cmd(flags, out, inp)
    return "batch " .. flags .. " " .. base .. " --out " .. quote(out) .. " " .. quote(inp)
  end
  local function run_batch(flags, out, inp) return C.run(t, batch_cmd(flags, out, inp), { env = env }) end
  local function spawn_batch(flags, out, inp) return C.spawn(t, batch_cmd(flags, out, inp), { env = env }) end

  it("writes and flushes each result as it arrives, before the batch ends", function()
    local inp, out = input(t, 6, "flush"), t:path("flush.jsonl")
    hold_after(sb, 5, 1, 3000)
    local job = spawn_batch("--concurrency 1", out, inp)
    -- five results are on disk while the sixth request is still held
    C.wait_for("5 results", function() return count_state(C.slurp(out), "created") == 5 end, 10)
    assert.is_nil(job.wait(0.1))
    local recs = C.records(C.slurp(out))
    for _, r in ipairs(recs) do
      if r.state == "created" then
        assert.is_true(r.ok)
        assert.equal(("flush-%d"):format(r.line), r.merchant_uid)
        assert.truthy(r.url:find(r.id, 1, true))
      end
    end
    assert.truthy(C.slurp(out):find('"url":"http://', 1, true)) -- no \/ escapes
    assert.equal(0, job.wait(10))
    assert.equal(6, count_state(C.slurp(out), "created"))
  end)

  it("SIGINT stops new creates, waits for those in flight, exits 130; --resume finishes", function()
    local N = 30
    local inp, out = input(t, N, "int"), t:path("int.jsonl")
    hold_after(sb, 8, 4, 1500)
    local job = spawn_batch("--concurrency 4", out, inp)
    wait_in_flight(sb, out, 12)
    job.kill("INT")
    assert.equal(130, job.wait(15))
    local err = job.stderr()
    assert.truthy(err:find("stopping: no new requests; waiting for 4 in flight", 1, true))
    assert.is_nil(err:find("interrupted!", 1, true))
    assert.is_nil(err:find("traceback", 1, true))
    assert.truthy(err:find("12 created", 1, true))
    assert.equal(12, count_state(C.slurp(out), "created"))
    assert.equal(12, sb:stats().requests) -- nothing started after the signal

    local code, _, rerr = run_batch("--resume --concurrency 4", out, inp)
    assert.equal(0, code)
    assert.truthy(rerr:find("18 created, 0 failed (0 invalid), 12 skipped (created before)", 1, true))
    assert.equal(N, count_state(C.slurp(out), "created"))
    assert_one_link_each(sb, N, "int")
  end)

  -- SIGTERM, and SIGHUP (the terminal or the SSH session gone)
  for _, case in ipairs({ { sig = "TERM", code = 143 }, { sig = "HUP", code = 129 } }) do
    it(("SIG%s does the same and exits %d"):format(case.sig, case.code), function()
      local name = case.sig:lower()
      local inp, out = input(t, 10, name), t:path(name .. ".jsonl")
      hold_after(sb, 0, 2, 1000)
      local job = spawn_batch("--concurrency 2", out, inp)
      wait_in_flight(sb, out, 2)
      job.kill(case.sig)
      assert.equal(case.code, job.wait(15))
      assert.equal(2, count_state(C.slurp(out), "created"))
      assert.equal(2, sb:stats().requests)
    end)
  end

  it("under nohup (SIGHUP ignored) a hangup changes nothing: the batch runs to the end", function()
    local inp, out = input(t, 6, "nohup"), t:path("nohup.jsonl")
    hold_after(sb, 0, 2, 1000)
    local job = C.spawn(t, batch_cmd("--concurrency 2", out, inp), { env = env, sh = "trap '' HUP; " })
    wait_in_flight(sb, out, 2)
    job.kill("HUP")
    assert.equal(0, job.wait(15))
    assert.equal(6, count_state(C.slurp(out), "created"))
  end)

  it("a second Ctrl-C abandons the requests in flight, records and names them, exits 130", function()
    local inp, out = input(t, 10, "twice"), t:path("twice.jsonl")
    hold_after(sb, 0, 3, 6000)
    local job = spawn_batch("--concurrency 3", out, inp)
    wait_in_flight(sb, out, 3)
    job.kill("INT")
    C.wait_for("the stopping message", function() return job.stderr():find("stopping", 1, true) end)
    job.kill("INT")
    assert.equal(130, job.wait(5)) -- before the held answers (6 s)
    local err = job.stderr()
    assert.truthy(err:find("these links may exist: line 1 (merchant_uid twice-1),"
      .. " line 2 (merchant_uid twice-2), line 3 (merchant_uid twice-3)", 1, true))
    assert.equal(3, count_state(C.slurp(out), "unknown"))
    -- a rerun sends none of them again (they may exist), creates the rest
    C.wait_for("the held links", function() return link_count(sb) == 3 end, 10)
    local code, _, rerr = run_batch("--resume", out, inp)
    assert.equal(1, code)
    assert.truthy(rerr:find("7 created", 1, true))
    assert.truthy(rerr:find("these links may exist (not sent again): line 1 (merchant_uid twice-1)", 1, true))
    assert_one_link_each(sb, 10, "twice")
  end)

  it("SIGKILL mid-run, then --resume: exactly one link per input line", function()
    local N = 40
    local inp, out = input(t, N, "kill"), t:path("kill.jsonl")
    hold_after(sb, 8, 4, 2000)
    local job = spawn_batch("--concurrency 4", out, inp)
    wait_in_flight(sb, out, 12)
    job.kill("KILL")
    assert.equal(137, job.wait(5))
    assert.equal(8, count_state(C.slurp(out), "created"))
    -- the held requests complete at the sandbox though nobody reads the answers
    C.wait_for("the 12 links", function() return link_count(sb) == 12 end)
    local code, _, err = run_batch("--resume --concurrency 4", out, inp)
    assert.equal(1, code) -- four lines may exist: the user must look
    assert.truthy(err:find("28 created, 0 failed (0 invalid), 8 skipped (created before), 4 may exist",
      1, true))
    assert.truthy(err:find("line 9 (merchant_uid kill-9), line 10 (merchant_uid kill-10), line 11"
      .. " (merchant_uid kill-11), line 12 (merchant_uid kill-12)", 1, true))
    assert_one_link_each(sb, N, "kill")
    -- a second --resume sends nothing at all
    local before = sb:stats().requests
    code = run_batch("--resume", out, inp)
    assert.equal(1, code)
    assert.equal(before, sb:stats().requests)
  end)

  it("a half-written last line (a kill during a write) is ignored and finished", function()
    local inp, out = input(t, 3, "half"), t:path("half.jsonl")
    C.write(out, '{"line":1,"merchant_uid":"half-1","state":"created","ok":true,"url":"x","id":"x"}\n'
      .. '{"line":2,"mer')
    local code, _, err = run_batch("--resume", out, inp)
    assert.equal(0, code)
    assert.truthy(err:find("1 unreadable line ignored", 1, true))
    assert.truthy(err:find("2 created", 1, true))
    assert.equal(3, count_state(C.slurp(out), "created"))
    assert.equal(2, sb:stats().requests) -- lines 2 and 3 only
  end)

  it("--out never truncates: an existing results file is refused without --resume", function()
    local inp, out = input(t, 2, "keep"), t:path("keep.jsonl")
    C.write(out, '{"line":1,"merchant_uid":"keep-1","state":"created","ok":true}\n')
    local code, _, err = C.run(t, "batch " .. base .. " --out " .. quote(out) .. " " .. quote(inp))
    assert.equal(2, code)
    assert.truthy(err:find("already holds results", 1, true))
    assert.equal('{"line":1,"merchant_uid":"keep-1","state":"created","ok":true}\n', C.slurp(out))
    assert.equal(0, sb:stats().requests)
  end)

  it("refuses duplicate merchant_uids before sending anything, unless --allow-duplicates", function()
    local inp = t:path("dup.jsonl")
    C.write(inp, table.concat({ C.request_json(1, nil, "dup"), C.request_json(2, nil, "dup"),
      C.request_json(1, nil, "dup") }, "\n"))
    local code, _, err = C.run(t, "batch " .. base .. " " .. quote(inp))
    assert.equal(2, code)
    assert.truthy(err:find("merchant_uid 'dup-1' on lines 1, 3", 1, true))
    assert.equal(0, sb:stats().requests)
    local out
    code, out = C.run(t, "batch --allow-duplicates " .. base .. " " .. quote(inp), { env = env })
    assert.equal(0, code)
    assert.equal(3, #C.records(out))
    assert.equal(3, sb:stats().requests)
  end)

  it("--resume --allow-duplicates skips the lines already created (the line numbers read back"
    .. " as numbers match the input's)", function()
    local inp = t:path("rdup.jsonl")
    C.write(inp, table.concat({ C.request_json(1, nil, "rdup"), C.request_json(1, nil, "rdup"),
      C.request_json(2, nil, "rdup") }, "\n") .. "\n")
    local out = t:path("rdup.out")
    assert.equal(0, run_batch("--allow-duplicates", out, inp))
    assert.equal(3, sb:stats().requests)
    local code, _, err = run_batch("--resume --allow-duplicates", out, inp)
    assert.equal(0, code)
    assert.truthy(err:find("0 created, 0 failed (0 invalid), 3 skipped (created before)", 1, true), err)
    assert.equal(3, sb:stats().requests)
    assert.equal(3, count_state(C.slurp(out), "created"))
  end)

  it("a merchant_uid that looks like a line's key never takes the record of a bad line", function()
    -- line 3 is not JSON: it was never sent, and its record must not stand
    -- for the merchant_uid "#3" (or "#3.0") of line 1, which was created
    for _, uid in ipairs({ "#3", "#3.0" }) do
      sb:reset()
      local inp, out = t:path("bk.jsonl"), t:path("bk-" .. uid:sub(2) .. ".out")
      C.write(inp, table.concat({ C.request_json(1, { merchant_uid = uid }),
        C.request_json(2, nil, "bk"), "{not json" }, "\n") .. "\n")
      assert.equal(1, run_batch("", out, inp))
      assert.equal(2, sb:stats().requests)
      for _ = 1, 2 do
        local code, _, err = run_batch("--resume", out, inp)
        assert.equal(1, code)   -- line 3 is still bad
        assert.truthy(err:find("0 created, 1 failed (1 invalid), 2 skipped (created before)", 1, true),
          err)
      end
      assert.equal(2, sb:stats().requests)
      assert.equal(1, links_by_uid(sb)[uid])
    end
  end)

  it("--retry-failed sends only the lines that failed", function()
    local inp, out = input(t, 6, "rf"), t:path("rf.jsonl")
    sb:faults("create", { { delay_ms = 0 }, { status = 422 }, { delay_ms = 0 }, { status = 400 } })
    local code = run_batch("--concurrency 1", out, inp)
    assert.equal(1, code)
    assert.equal(2, count_state(C.slurp(out), "failed"))
    local _, err
    code, _, err = run_batch("--retry-failed", out, inp)
    assert.equal(0, code)
    assert.truthy(err:find("2 created, 0 failed (0 invalid), 4 skipped (created before)", 1, true))
    assert.equal(8, sb:stats().requests)
    local reqs = creates_by_uid(sb)
    assert.equal(2, reqs["rf-2"])
    assert.equal(2, reqs["rf-4"])
    assert_one_link_each(sb, 6, "rf", true)
  end)

  it("--retry-failed sends a line that was not JSON once it is fixed", function()
    local inp, out = t:path("fix.jsonl"), t:path("fix.out")
    C.write(inp, C.request_json(1, nil, "fix") .. "\n{not json\n")
    assert.equal(1, run_batch("", out, inp))
    C.write(inp, C.request_json(1, nil, "fix") .. "\n" .. C.request_json(2, nil, "fix") .. "\n")
    local code, _, err = run_batch("--retry-failed", out, inp)
    assert.equal(0, code, err)
    assert.truthy(err:find("1 created, 0 failed (0 invalid), 1 skipped (created before), 0 may exist,"
      .. " 0 not sent", 1, true), err)
    assert_one_link_each(sb, 2, "fix")
  end)

  it("a create with no clear answer (timeout, 500) may exist: recorded unknown, not resent without"
    .. " --retry-unknown", function()
    local inp, out = input(t, 4, "unk"), t:path("unk.jsonl")
    sb:faults("create", { { delay_ms = 0 }, { delay_ms = 1500 }, { status = 500 }, { delay_ms = 0 } })
    local code, _, err = run_batch("--concurrency 1 --timeout 0.5", out, inp)
    assert.equal(1, code)
    assert.equal(2, count_state(C.slurp(out), "created"))
    assert.equal(2, count_state(C.slurp(out), "unknown"))
    assert.truthy(err:find("2 created, 0 failed (0 invalid), 0 skipped (created before), 2 may exist",
      1, true))
    assert.truthy(err:find("these links may exist: line 2 (merchant_uid unk-2), line 3 (merchant_uid unk-3)",
      1, true))
    -- neither --resume nor --retry-failed sends them again
    C.wait_for("the timed-out create", function() return links_by_uid(sb)["unk-2"] == 1 end)
    for _, how in ipairs({ "--resume", "--retry-failed" }) do
      code = run_batch(how, out, inp)
      assert.equal(1, code)
      assert.equal(4, sb:stats().requests)
    end
    -- the user checked: unk-2 exists (the sandbox made it), unk-3 does not
    assert.is_nil(links_by_uid(sb)["unk-3"])
    code = run_batch("--resume --retry-unknown", out, inp)
    assert.equal(0, code)
    assert.equal(6, sb:stats().requests)
  end)

  it("a 503 after a send that got no answer may exist: recorded unknown, not resent by"
    .. " --retry-failed", function()
    local inp, out = input(t, 3, "una"), t:path("una.jsonl")
    -- line 2: its send on the kept-alive connection is reset after the
    -- sandbox made the link, libcurl's re-send gets a 503
    sb:faults("create", { { delay_ms = 0 }, { reset_after = true }, { status = 503 } })
    local code, _, err = run_batch("--concurrency 1", out, inp)
    assert.equal(1, code)
    local recs = C.records(C.slurp(out))
    local last = {}
    for _, r in ipairs(recs) do last[r.merchant_uid] = r end
    assert.equal("unknown", last["una-2"].state)
    assert.equal(1, last["una-2"].error.unanswered)
    assert.truthy(err:find("these links may exist: line 2 (merchant_uid una-2)", 1, true), err)
    local before = sb:stats().requests
    code = run_batch("--retry-failed", out, inp)
    assert.equal(1, code)
    assert.equal(before, sb:stats().requests)
    assert.equal(1, links_by_uid(sb)["una-2"])
  end)

  it("a result that cannot be written goes to stderr, and no new create starts", function()
    local inp = input(t, 5, "full")
    local code = C.exit_code(os.execute("env PORTONE_LINK_PROGRESS=0 " .. (os.getenv("PLINK_LUA") or "lua5.4")
      .. " bin/portone-link batch --concurrency 1 " .. base .. " " .. quote(inp) .. " > /dev/full 2> "
      .. quote(t:path("full.err"))))
    assert.equal(1, code)
    local err = C.slurp(t:path("full.err"))
    local rec = err:match("cannot write stdout %([^)]*%): (%b{})")
    assert.truthy(rec, err)
    rec = cjson.decode(rec)
    assert.equal("created", rec.state)
    assert.equal("full-1", rec.merchant_uid)
    assert.truthy(rec.url:find(rec.id, 1, true))
    assert.equal(1, sb:stats().requests)
    assert.truthy(err:find("1 created", 1, true))
    assert.truthy(err:find("4 not sent", 1, true))
  end)

  it("--out /dev/stdout into a pipe: the results go down the pipe (no read of the pipe hangs it)",
    function()
    local inp = input(t, 3, "pipe")
    -- (SIGKILL: the batch counts SIGTERM)
    os.execute("env PORTONE_LINK_PROGRESS=0 timeout -s KILL 10 " .. (os.getenv("PLINK_LUA") or "lua5.4")
      .. " bin/portone-link batch " .. base .. " --out /dev/stdout " .. quote(inp) .. " 2> "
      .. quote(t:path("pipe.err")) .. " | cat > " .. quote(t:path("pipe.out")))
    local out = C.slurp(t:path("pipe.out"))
    assert.equal(3, count_state(out, "sending"), C.slurp(t:path("pipe.err")))
    assert.equal(3, count_state(out, "created"), C.slurp(t:path("pipe.err")))
    assert.equal(3, sb:stats().requests)
  end)

  it("a write that fails half-way leaves no torn line for the next record to join", function()
    -- the results file may grow to 1024 bytes (a full disk): the record
    -- that crosses it is cut; line 2, held, answers after the limit is
    -- lifted (space freed) and its record must read back
    local inp, out = input(t, 30, "tear"), t:path("tear.jsonl")
    local list = { { delay_ms = 0 }, { delay_ms = 3000 } }
    for i = 3, 30 do list[i] = { delay_ms = 0 } end
    sb:faults("create", list)
    local job = C.spawn(t, batch_cmd("--concurrency 2", out, inp),
      { env = env, sh = "trap '' XFSZ; prlimit --pid $$ --fsize=1024:unlimited; " })
    C.wait_for("the failed write", function() return job.stderr():find("cannot write", 1, true) end)
    assert.is_nil(job.wait(0.1))
    assert.equal(1024, #C.slurp(out))
    assert.not_equal("\n", C.slurp(out):sub(-1)) -- a torn line
    os.execute("prlimit --pid " .. job.pid .. " --fsize=unlimited")
    assert.equal(1, job.wait(10))
    local last = {}
    for _, r in ipairs(C.records(C.slurp(out))) do last[r.merchant_uid] = r end
    assert.equal("created", last["tear-2"].state, C.slurp(out))
  end)

  -- The batch under strace: each event in order, {kind = "record" (a
  -- write of a results line: state, fd), "sync" (fdatasync: fd, ok),
  -- "post" (a create request leaving)}. `inject`: strace's fault spec.
  local function traced(flags, out, inp, inject)
    local tf = t:path("strace.txt")
    local code, _, err = C.run(t, batch_cmd(flags, out, inp), { env = env,
      under = "strace -f -qq -s 400 -e trace=write,sendto,sendmsg,fdatasync"
        .. (inject and (" -e inject=" .. inject) or "") .. " -o " .. quote(tf) })
    local events = {}
    for l in C.slurp(tf):gmatch("[^\n]+") do
      local fd, state = l:match('write%((%d+), "{\\"line\\":%d+,.-\\"state\\":\\"(%a+)')
      if fd then events[#events + 1] = { kind = "record", fd = fd, state = state } end
      fd = l:match("fdatasync%((%d+)%)")
      if fd then events[#events + 1] = { kind = "sync", fd = fd, ok = l:find("= 0$") ~= nil } end
      if l:find('^%d+%s+[%a]+%(%d+, "POST /api/supplements/v1/link/payment ') then
        events[#events + 1] = { kind = "post" }
      end
    end
    return code, err, events
  end

  it("puts every record on the disk (fdatasync) before the requests it announces leave, and the"
    .. " results before it exits", function()
    local inp, out = input(t, 12, "sync"), t:path("sync.jsonl")
    local code, err, events = traced("--concurrency 4", out, inp)
    assert.equal(0, code, err)
    local unsynced, posts, syncs = 0, 0, 0
    for _, e in ipairs(events) do
      if e.kind == "record" then unsynced = unsynced + 1
      elseif e.kind == "sync" and e.ok then unsynced, syncs = 0, syncs + 1
      elseif e.kind == "post" then
        posts = posts + 1
        assert.equal(0, unsynced, "a request left before the records written ahead of it were synced")
      end
    end
    assert.equal(12, posts)
    assert.equal(0, unsynced, "records left unsynced at exit")
    assert.truthy(syncs >= 2)
    assert.equal(12, count_state(C.slurp(out), "created"))
  end)

  it("a sync that fails sends none of the requests it was to cover, and says so", function()
    local inp, out = input(t, 8, "nosync"), t:path("nosync.jsonl")
    -- the first round (4 requests) is synced; the second sync fails
    local code, err, events = traced("--concurrency 4", out, inp, "fdatasync:error=EIO:when=2+")
    assert.equal(1, code, err)
    assert.truthy(err:find("cannot sync", 1, true), err)
    assert.truthy(err:find("not sent: line", 1, true), err)
    -- the requests that left are those whose "sending" records a sync
    -- that worked covered (a round's requests may still be leaving when
    -- the next round's sync fails)
    local sending, covered, posts = 0, 0, 0
    for _, e in ipairs(events) do
      if e.kind == "record" and e.state == "sending" then sending = sending + 1
      elseif e.kind == "sync" and e.ok then covered = sending
      elseif e.kind == "post" then posts = posts + 1 end
    end
    assert.equal(4, covered)
    assert.truthy(sending > covered)
    assert.equal(covered, posts)
    assert.equal(covered, link_count(sb))
    assert.truthy(err:find(("%d not sent"):format(8 - covered), 1, true), err)
    -- the cancelled ones are recorded unsent: --resume sends them (and the
    -- rest) as never tried, none as "may exist"
    assert.equal(sending - covered, count_state(C.slurp(out), "unsent"))
    local rcode, _, rerr = run_batch("--resume --concurrency 4", out, inp)
    assert.equal(0, rcode, rerr)
    assert.truthy(rerr:find(("%d created, 0 failed (0 invalid), %d skipped (created before), 0 may exist")
      :format(8 - covered, covered), 1, true), rerr)
    assert_one_link_each(sb, 8, "nosync")
  end)

  it("a final summary on stderr: created, failed, skipped, time, rate", function()
    local inp = input(t, 3, "sum")
    local code, out, err = C.run(t, "batch " .. base .. " " .. quote(inp), { env = env })
    assert.equal(0, code)
    assert.equal(3, #C.records(out))
    assert.truthy(err:find("\nbatch: 3 lines: 3 created, 0 failed %(0 invalid%), 0 skipped"
      .. " %(created before%), 0 may exist, 0 not sent; [%d.]+s, %d+/s\n$"))
  end)
end)
