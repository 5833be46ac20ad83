--- `portone-link batch FILE.jsonl`: creates a link for every line.
--
-- The requests go through client:create_many (libcurl multi, keep-alive,
-- `--concurrency` transfers in flight). Output: one JSON object per request
-- line, in input order, on stdout or in --out FILE. Progress goes to stderr:
-- a redrawn bar on a terminal, a plain line every few seconds otherwise, and
-- a one-line summary at the end.
local common = require "portone.cli.common"
local core = require "portone.link.core"

local M = {}

M.USAGE = [[
usage: portone-link batch [options] FILE.jsonl|-

Creates one payment link per line of FILE (one JSON request object a line;
blank lines are skipped) and writes one JSON result per request line, in
input order:
  {"line":1,"ok":true,"url":"https://impay.link/...","id":"...","status":200}
  {"line":2,"ok":false,"error":{"kind":"validation","message":"...","errors":[...]}}
Lines that are not valid JSON or fail validation are reported, never sent.

  --concurrency N  requests in flight (default 32)
  --out FILE       write the results to FILE instead of stdout
]] .. common.CLIENT_HELP .. [[

Progress (done/total, rate, ETA, failures) goes to stderr: a bar when it is
a terminal, plain lines otherwise ($PORTONE_LINK_PROGRESS=1|0 forces it).

Exit: 0 every line created, 1 some line failed, 2 usage or input error.
]]

local FLAGS = { ["--concurrency"] = "int", ["--out"] = "string" }
for k, v in pairs(common.CLIENT_FLAGS) do FLAGS[k] = v end

local function fmt_secs(s)
  if s ~= s or s == math.huge then return "?" end
  local fl = math.floor
  if s >= 3600 then return ("%dh%02dm"):format(fl(s / 3600), fl((s % 3600) / 60)) end
  if s >= 60 then return ("%dm%02ds"):format(fl(s / 60), fl(s % 60)) end
  return ("%.1fs"):format(s)
end

-- A progress reporter: tty bar (redrawn at most 10 times a second) or plain
-- lines (at most one every 2 s).
local function progress(tty, total)
  local t0 = core.monotonic()
  local last = -1
  local width = 30
  local function line(done, failed)
    local el = core.monotonic() - t0
    local rate = el > 0 and done / el or 0
    local eta = rate > 0 and (total - done) / rate or math.huge
    return done, el, rate, eta, failed
  end
  local p = {}
  function p.update(done, _, failed)
    local now = core.monotonic()
    if done < total and now - last < (tty and 0.1 or 2) then return end
    last = now
    local _, _, rate, eta = line(done, failed)
    if tty then
      local fill = total > 0 and math.floor(width * done / total) or width
      io.stderr:write(("\r[%s%s] %d/%d %3d%% %.0f/s ETA %s failed %d\27[K"):format(
        ("#"):rep(fill), ("-"):rep(width - fill), done, total,
        total > 0 and math.floor(100 * done / total) or 100, rate, fmt_secs(eta), failed))
    else
      io.stderr:write(("batch: %d/%d done, %d failed, %.0f/s, ETA %s\n"):format(
        done, total, failed, rate, fmt_secs(eta)))
    end
    io.stderr:flush()
  end
  function p.finish(done, failed, invalid)
    local _, el, rate = line(done, failed)
    if tty then io.stderr:write("\r\27[K") end
    io.stderr:write(("batch: %d requests, %d created, %d failed (%d invalid) in %s, %.0f/s\n"):format(
      total, done - failed, failed, invalid, fmt_secs(el), rate))
  end
  return p
end

function M.main(args)
  local o, pos = common.parse(args, FLAGS)
  if not o then return common.usage_error("batch", pos, M.USAGE) end
  if o.help then io.stdout:write(M.USAGE); return common.OK end
  if #pos ~= 1 then return common.usage_error("batch", "expects one FILE.jsonl or -", M.USAGE) end
  if o.concurrency and o.concurrency > 4096 then
    return common.usage_error("batch", "--concurrency must be at most 4096")
  end
  local text, rerr = common.read_all(pos[1])
  if not text then return common.usage_error("batch", rerr) end

  -- lines -> requests; unparsable lines are results already
  local lines, reqs, slot = {}, {}, {}
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if line:find("%S") then
      local req, err = common.decode_object(line)
      local item = { line = n }
      lines[#lines + 1] = item
      if req then
        reqs[#reqs + 1] = req
        slot[#reqs] = item
      else
        item.error = { kind = "input", message = "line " .. n .. ": " .. err }
      end
    end
  end
  text = nil -- luacheck: ignore text
  if #lines == 0 then return common.usage_error("batch", pos[1] .. ": no request lines") end

  local out = io.stdout
  if o.out then
    local f, ferr = io.open(o.out, "wb")
    if not f then return common.usage_error("batch", "cannot write " .. tostring(ferr)) end
    out = f
  end
  local client, cerr = common.client(o)
  if not client then return common.usage_error("batch", cerr) end

  local total = #lines
  local bad_lines = total - #reqs
  local bar = progress(common.stderr_is_tty(), total)
  local results = client:create_many(reqs, {
    concurrency = o.concurrency or 32,
    on_progress = function(done, _, failed)
      bar.update(done + bad_lines, total, failed + bad_lines)
    end,
  })
  client:close()

  local failed, invalid = bad_lines, bad_lines
  for i, r in ipairs(results) do
    local item = slot[i]
    if r.res then
      item.ok, item.url, item.id, item.status = true, r.res.url, r.res.id, r.res.status
    else
      item.error = common.error_table(r.err)
      failed = failed + 1
      if r.err.kind == "validation" then invalid = invalid + 1 end
    end
  end
  for _, item in ipairs(lines) do
    if item.ok then
      common.json_line({ line = item.line, ok = true, url = item.url, id = item.id,
        status = item.status }, out)
    else
      common.json_line({ line = item.line, ok = false, error = item.error }, out)
    end
  end
  if out ~= io.stdout then out:close() else out:flush() end
  bar.finish(total, failed, invalid)
  return failed == 0 and common.OK or common.FAILED
end

return M
