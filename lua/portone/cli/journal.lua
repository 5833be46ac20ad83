--- The results file of `portone-link batch` (JSONL), read back by
-- `--resume` and `--retry-failed`.
--
-- One JSON object a line, appended and flushed as things happen, so a kill
-- loses at most the line being written; `sync` (before the requests it
-- records can leave) puts the lines on the disk, so a power loss or an OS
-- crash does not lose them either:
--
--    {"line":3,"merchant_uid":"o-3","state":"sending"}
--    {"line":3,"merchant_uid":"o-3","state":"created","ok":true,"url":"...","id":"...","status":200}
--    {"line":4,"merchant_uid":"o-4","state":"failed","ok":false,"error":{...}}
--    {"line":5,"merchant_uid":"o-5","state":"unknown","ok":false,"error":{...}}
--
-- `sending` is written (to a file, not to stdout) before a request can go
-- out; `unknown` when a batch abandons a request in flight; `unsent` when
-- it cancelled one before it left (its `sending` line could not be synced):
-- that line is sent again as if never tried. A `sending`
-- with no later line for the same input line, or an `unknown`, is a link
-- that may exist: the link API has no lookup by merchant_uid, so only the
-- user can tell, and `--resume` does not send it again unless told to.
-- The last record of a key wins.
local common = require "portone.cli.common"
local cjson = require "cjson.safe"
local fsync = require "portone.cli.fsync"

local M = {}

-- key order of a record
local ORDER = { "line", "merchant_uid", "state", "ok", "url", "id", "status", "error" }

--- The key that matches an input line with its records: the merchant_uid,
-- or with `--allow-duplicates` (where one merchant_uid may be on several
-- lines) the merchant_uid and the line number. A line without a
-- merchant_uid (bad JSON) is keyed by its number: it was never sent.
-- The key's line number is formatted as an integer (lua-cjson reads
-- `"line":1` back as 1.0 on Lua 5.4, and "1.0" would match no input line), and a
-- merchant_uid's key starts with "$", a bare line's with "#", so no
-- merchant_uid can take the record of a bad line.
function M.key(line, uid, by_line)
  local n = ("%d"):format(line)
  if type(uid) ~= "string" then return "#" .. n end
  if by_line then return "$" .. uid .. "#" .. n end
  return "$" .. uid
end

-- a line number as a results file can hold it: a positive integer
local function is_line(v)
  return type(v) == "number" and v >= 1 and v < 2^53 and v % 1 == 0
end

--- Reads a results file. Returns states (key -> last record), a count of
-- unreadable lines, and whether the file ends in a newline (a kill can leave
-- a half-written last line); or nil, message when it cannot be read.
-- A missing file is an empty journal.
function M.read(path, by_line)
  local f = io.open(path, "rb")
  if not f then return {}, 0, true end
  local text = f:read("*a")
  f:close()
  if not text then return nil, "cannot read " .. path end
  local states, bad = {}, 0
  for line in text:gmatch("[^\n]+") do
    local r = cjson.decode(line)
    if type(r) == "table" and is_line(r.line) and type(r.state) == "string" then
      states[M.key(r.line, r.merchant_uid, by_line)] = r
    else
      bad = bad + 1
    end
  end
  return states, bad, text == "" or text:sub(-1) == "\n"
end

--- Opens the results output: `path` appended to (never truncated), or
-- stdout. Returns a writer with `write(record)` --> true | nil, err (each
-- record flushed at once), `sync()` --> true | nil, err (the records
-- written since the last sync on the disk; nothing to do for stdout),
-- `close()` --> sync's result (synced first), and `file` (false for stdout).
function M.open(path, ends_in_newline)
  local out = io.stdout
  if path then
    local f, err = io.open(path, "ab")
    if not f then return nil, "cannot write " .. tostring(err) end
    -- a file made now is in its directory only once the directory is synced
    -- (cheap when it was there already)
    local dir = path:match("^(.*)/[^/]*$") or "."
    local ok, derr = fsync.dir(dir == "" and "/" or dir)
    if not ok then f:close(); return nil, "cannot sync the directory of " .. path .. ": " .. derr end
    out = f
    -- finish a line a kill left half written, so the next record parses
    if not ends_in_newline then out:write("\n") end
  end
  local w = { file = path ~= nil }
  -- a failed write (a full disk) can leave part of its line, and stdio
  -- drops the rest: the next record starts on a line of its own, or it
  -- would join the torn one and neither would read back
  local torn, dirty = false, false
  function w.write(rec)
    local ok, err = out:write(torn and "\n" or "", common.json_object(rec, ORDER), "\n")
    if ok then ok, err = out:flush() end
    torn, dirty = not ok, w.file
    return ok and true or nil, err
  end
  function w.sync()
    if not dirty then return true end
    local ok, err = fsync.file(out)
    dirty = not ok
    return ok, err
  end
  function w.close()
    local ok, err = w.sync()
    if out ~= io.stdout then out:close() else out:flush() end
    return ok, err
  end
  return w
end

return M
