--- `portone-link batch FILE.jsonl`: creates a link for every line, and
-- never loses one it created.
--
-- Each request goes out with client:create_async (libcurl multi, keep-alive,
-- `--concurrency` in flight) and its result is written and flushed the
-- moment it arrives (`portone.cli.journal` has the record format). With
-- `--out FILE` a `sending` record is flushed before each request can leave,
-- so after any crash `--resume` knows what was created, what failed and
-- what may exist. SIGINT/SIGTERM/SIGHUP are counted by `portone.cli.signal` and
-- read between polls: the first stops new requests and waits for those in
-- flight, a second abandons them and names them.
local common = require "portone.cli.common"
local journal = require "portone.cli.journal"
local progress = require "portone.cli.progress"

local M = {}

M.USAGE = [[
usage: portone-link batch [options] FILE.jsonl|-

Creates one payment link per line of FILE (one JSON request object a line;
blank lines are skipped). Each result is written, and flushed, as soon as it
arrives (so in completion order), one JSON object a line:
  {"line":1,"merchant_uid":"o-1","state":"created","ok":true,
   "url":"https://impay.link/...","id":"...","status":200}      (one line)
  {"line":2,"merchant_uid":"o-2","state":"failed","ok":false,"error":{"kind":"validation",...}}
Lines that are not valid JSON or fail validation are reported, never sent.
Two lines with the same merchant_uid are refused before anything is sent.

  --concurrency N     requests in flight (default 32, at most 4096)
  --out FILE          append the results to FILE (never truncated) instead of
                      stdout; FILE also records each request before it is
                      sent ({"state":"sending"}), so a rerun knows what may exist
  --resume            rerun FILE.jsonl against --out: lines already created
                      (matched by merchant_uid) are skipped, the rest are sent
  --retry-failed      send only the lines whose last result in --out failed
  --retry-unknown     with --resume or --retry-failed, also send again the lines
                      that may exist ("unknown": sent without a clear answer,
                      a timeout, a lost connection, a 5xx other than 503, an
                      answer to a re-send after a send that got none, a
                      kill, a second Ctrl-C); check them first, or a link may
                      exist twice
  --allow-duplicates  allow one merchant_uid on several lines (then --resume
                      matches by merchant_uid and line number)
]] .. common.CLIENT_HELP .. [[

Ctrl-C, SIGTERM or SIGHUP: no new request starts, the ones in flight finish
and are written, then exit 130 (SIGTERM: 143, SIGHUP: 129; under nohup a
hangup is ignored). A second Ctrl-C abandons the requests in flight,
records them as "unknown" and names them: those links may exist.

Progress (done/total, rate, ETA, failures) goes to stderr: a bar when it is
a terminal, plain lines otherwise ($PORTONE_LINK_PROGRESS=1|0 forces it).
A summary (created, failed, skipped, may exist; time; rate) ends it.

Exit: 0 every line created, 1 some line failed or may exist, 2 usage or input
error (nothing sent), 130/143/129 stopped by a signal.
]]

local FLAGS = {
  ["--concurrency"] = "int", ["--out"] = "string", ["--resume"] = "bool",
  ["--retry-failed"] = "bool", ["--retry-unknown"] = "bool", ["--allow-duplicates"] = "bool",
}
for k, v in pairs(common.CLIENT_FLAGS) do FLAGS[k] = v end

-- The request lines of text: {line =, req =, uid =} or {line =, err =}.
local function parse_lines(text)
  local items, n = {}, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if line:find("%S") then
      local req, err = common.decode_object(line)
      local uid = req and req.merchant_uid
      items[#items + 1] = { line = n, req = req, uid = type(uid) == "string" and uid or nil,
        err = err and ("line " .. n .. ": " .. err) }
    end
  end
  return items
end

-- "merchant_uid 'a' on lines 1 and 4; ..." for the duplicates, or nil.
local function duplicates(items)
  local seen, dup, order = {}, {}, {}
  for _, it in ipairs(items) do
    if it.uid then
      if seen[it.uid] then
        if not dup[it.uid] then dup[it.uid] = { seen[it.uid] }; order[#order + 1] = it.uid end
        table.insert(dup[it.uid], it.line)
      else
        seen[it.uid] = it.line
      end
    end
  end
  if #order == 0 then return nil end
  local parts = {}
  for i = 1, math.min(#order, 5) do
    parts[i] = ("merchant_uid '%s' on lines %s"):format(order[i], table.concat(dup[order[i]], ", "))
  end
  if #order > 5 then parts[#parts + 1] = ("and %d more"):format(#order - 5) end
  return #order, table.concat(parts, "; ")
end

local function describe(list)
  local parts = {}
  for i = 1, math.min(#list, 20) do
    local it = list[i]
    parts[i] = "line " .. it.line .. (it.uid and (" (merchant_uid " .. it.uid .. ")") or "")
  end
  if #list > 20 then parts[#parts + 1] = ("and %d more"):format(#list - 20) end
  return table.concat(parts, ", ")
end

-- Which items to send, given the states a previous run left in --out.
local function plan(items, states, o)
  local work, skipped, maybe, untried = {}, 0, {}, 0
  for _, it in ipairs(items) do
    local st = states[journal.key(it.line, it.uid, o.allow_duplicates)]
    -- a line that was not JSON has its record by line number; fixed since,
    -- its merchant_uid has no record, so it was never sent: that failure
    -- is its last result
    if not st and it.uid then
      local bad = states[journal.key(it.line)]
      if bad and bad.state == "failed" then st = bad end
    end
    local s = st and st.state
    if s == "unsent" then s = nil end -- cancelled before it left (a sync failed)
    if s == "created" then
      skipped = skipped + 1
    elseif s == "sending" or s == "unknown" then
      if o.retry_unknown then work[#work + 1] = it else maybe[#maybe + 1] = it end
    elseif s == "failed" or not o.retry_failed then
      work[#work + 1] = it
    else
      untried = untried + 1
    end
  end
  return work, skipped, maybe, untried
end

local may_exist = common.may_exist

local function check_flags(o, pos)
  if #pos ~= 1 then return "expects one FILE.jsonl or -" end
  if o.concurrency and o.concurrency > 4096 then return "--concurrency must be at most 4096" end
  if (o.resume or o.retry_failed) and not o.out then
    return "--resume and --retry-failed read the results of --out FILE: give it"
  end
  if o.resume and o.retry_failed then return "--resume and --retry-failed: pick one" end
  if o.retry_unknown and not (o.resume or o.retry_failed) then
    return "--retry-unknown goes with --resume or --retry-failed"
  end
end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n or 0
end

function M.main(args)
  local o, pos = common.parse(args, FLAGS)
  if not o then return common.usage_error("batch", pos, M.USAGE) end
  if o.help then io.stdout:write(M.USAGE); return common.OK end
  local bad = check_flags(o, pos)
  if bad then return common.usage_error("batch", bad, M.USAGE) end
  -- from here a Ctrl-C is counted, not fatal: before the loop it means
  -- "send nothing" (the loop checks the count before it starts a request)
  local sig = require "portone.cli.signal"
  sig.catch()
  -- a closed stdout pipe fails the write (the result then goes to stderr)
  -- instead of killing the batch with links in flight
  sig.ignore_pipe()
  local text, rerr = common.read_all(pos[1])
  if not text then return common.usage_error("batch", rerr) end
  local items = parse_lines(text)
  text = nil -- luacheck: ignore text
  if #items == 0 then return common.usage_error("batch", pos[1] .. ": no request lines") end
  if not o.allow_duplicates then
    local n, which = duplicates(items)
    if n then
      return common.usage_error("batch", ("%d merchant_uid%s on more than one line, nothing sent: %s"
        .. " (--allow-duplicates sends them anyway)"):format(n, n == 1 and "" or "s", which))
    end
  end

  local states, unreadable, ends = {}, 0, true
  if o.out then
    if not (o.resume or o.retry_failed) and file_size(o.out) > 0 then
      return common.usage_error("batch", o.out .. " already holds results (it is never truncated):"
        .. " --resume continues that batch, --retry-failed reruns its failures, or pick another --out")
    end
    -- read only when resuming: a fresh --out may be no file at all
    -- (/dev/stdout into a pipe: reading it would wait forever)
    if o.resume or o.retry_failed then
      states, unreadable, ends = journal.read(o.out, o.allow_duplicates)
      if not states then return common.usage_error("batch", unreadable) end
    end
  end
  local work, skipped, maybe, untried = plan(items, states, o)

  local client, cerr = common.client(o, { max_concurrent = math.min(o.concurrency or 32, 4096) })
  if not client then return common.usage_error("batch", cerr) end
  local w, werr = journal.open(o.out, ends)
  if not w then client:close(); return common.usage_error("batch", werr) end
  if unreadable > 0 then
    io.stderr:write(("portone-link batch: %s: %d unreadable line%s ignored\n"):format(
      o.out, unreadable, unreadable == 1 and "" or "s"))
  end

  local C = o.concurrency or 32
  local bar = progress.new(common.stderr_is_tty(), #work)
  local n = { created = 0, failed = 0, invalid = 0, done = 0, unknown = {}, unsent = 0 }
  local inflight, n_inflight, fresh = {}, 0, {}
  local write_err

  local function record(it, rec)
    rec.line, rec.merchant_uid = it.line, it.uid
    local ok, err = w.write(rec)
    if not ok then
      -- the results file failed (disk full?): the record goes to stderr, so
      -- a created link is never lost, and no new request starts
      write_err = write_err or tostring(err)
      bar.clear()
      io.stderr:write("portone-link batch: cannot write ", o.out or "stdout", " (", tostring(err),
        "): ", common.json_encode(rec), "\n")
      return false
    end
    return true
  end
  local function finished(it, res, err)
    n.done = n.done + 1
    if res then
      n.created = n.created + 1
      record(it, { state = "created", ok = true, url = res.url, id = res.id, status = res.status })
    elseif may_exist(err) then
      n.unknown[#n.unknown + 1] = it
      record(it, { state = "unknown", ok = false, error = common.error_table(err) })
    else
      n.failed = n.failed + 1
      if err.kind == "validation" or err.kind == "input" then n.invalid = n.invalid + 1 end
      record(it, { state = "failed", ok = false, error = common.error_table(err) })
    end
    bar.update(n.done, n.failed + #n.unknown)
  end
  local function start(it)
    if it.err then return finished(it, nil, { kind = "input", message = it.err }) end
    local h, err = client:create_async(it.req, function(res, e)
      inflight[it], n_inflight = nil, n_inflight - 1
      finished(it, res, e)
    end)
    if not h then return finished(it, nil, err) end
    -- before poll can send it: after a kill, this line says "may exist";
    -- a request whose record cannot be written is not sent at all
    if w.file and not record(it, { state = "sending" }) then
      client:cancel(h)
      n.unsent = n.unsent + 1
      return
    end
    inflight[it], n_inflight = h, n_inflight + 1
    fresh[#fresh + 1] = it
  end
  -- The records written since the last round on the disk before poll sends
  -- the requests they announce (after a power loss, a lost "sending" line
  -- would have --resume send its request again). If they cannot be, the
  -- requests started since are cancelled unsent (poll has not run since).
  local function sync()
    local ok, err = w.sync()
    if not ok then
      write_err = write_err or ("sync: " .. tostring(err))
      if #fresh > 0 then
        bar.clear()
        io.stderr:write("portone-link batch: cannot sync ", o.out, " (", tostring(err), "); not sent: ",
          describe(fresh), "\n")
      end
      for _, it in ipairs(fresh) do
        client:cancel(inflight[it])
        inflight[it], n_inflight, n.unsent = nil, n_inflight - 1, n.unsent + 1
        -- best effort: --resume sends it again; if this line is lost too,
        -- its "sending" line says "may exist", the safe side
        w.write({ line = it.line, merchant_uid = it.uid, state = "unsent" })
      end
    end
    fresh = {}
  end

  local qi, stopping, unsure = 1, nil, n.unknown
  while true do
    local count, signo = sig.count()
    if count >= 1 and not stopping then
      stopping = signo
      bar.clear()
      io.stderr:write(("portone-link batch: stopping: no new requests; waiting for %d in flight"
        .. " (Ctrl-C again abandons them)\n"):format(n_inflight))
    end
    if count >= 2 and n_inflight > 0 then
      local list = {}
      for it in pairs(inflight) do list[#list + 1] = it end
      table.sort(list, function(a, b) return a.line < b.line end)
      for _, it in ipairs(list) do
        unsure[#unsure + 1] = it
        record(it, { state = "unknown", ok = false, error = { kind = "abandoned",
          message = "abandoned in flight by a second signal: the link may exist" } })
      end
      client:close()
      n_inflight = 0
      break
    end
    -- a signal during the refill stops it: the next round sees it
    while not stopping and not write_err and n_inflight < C and qi <= #work and sig.count() == 0 do
      start(work[qi]); qi = qi + 1
    end
    sync()
    if n_inflight == 0 and (stopping or write_err or qi > #work) then break end
    local _, errs = client:poll(100)
    for _, e in ipairs(errs or {}) do
      io.stderr:write("portone-link batch: internal error in a result callback: ", tostring(e), "\n")
    end
  end
  client:close()
  local closed, serr = w.close()
  if not closed then
    -- the last records (created, unknown) may not be on the disk
    write_err = write_err or tostring(serr)
    bar.clear()
    io.stderr:write("portone-link batch: cannot sync ", o.out, " (", tostring(serr),
      "): its last records may be lost in a crash\n")
  end
  sig.release()

  bar.clear()
  local el = bar.elapsed()
  io.stderr:write(("batch: %d lines: %d created, %d failed (%d invalid), %d skipped (created before),"
    .. " %d may exist, %d not sent; %s, %.0f/s\n"):format(#items, n.created, n.failed, n.invalid,
    skipped, #maybe + #unsure, #work - (qi - 1) + untried + n.unsent, progress.secs(el),
    el > 0 and n.done / el or 0))
  if #unsure > 0 then
    table.sort(unsure, function(a, b) return a.line < b.line end)
    io.stderr:write("portone-link batch: sent with no clear answer (a timeout, a lost connection,"
      .. " a 5xx, or abandoned in flight), these links may exist: ", describe(unsure),
      "; check them, then --resume --retry-unknown sends them again\n")
  end
  if #maybe > 0 then
    io.stderr:write("portone-link batch: sent by an earlier run with no answer recorded, these links"
      .. " may exist (not sent again): ", describe(maybe),
      "; check them, then --retry-unknown sends them again\n")
  end
  if stopping then return 128 + stopping end -- the shell's code for the signal
  if write_err or n.failed > 0 or #maybe > 0 or #unsure > 0 then return common.FAILED end
  return common.OK
end

return M
