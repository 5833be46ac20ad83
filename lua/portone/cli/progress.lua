--- Progress of `portone-link batch` on stderr: a bar redrawn at most 10
-- times a second on a terminal, a plain line at most every 2 s otherwise.
local core = require "portone.link.core"

local M = {}

--- Seconds as `1.5s`, `2m05s` or `1h02m`; `?` when unknown.
function M.secs(s)
  if s ~= s or s == math.huge then return "?" end
  local fl = math.floor
  if s >= 3600 then return ("%dh%02dm"):format(fl(s / 3600), fl((s % 3600) / 60)) end
  if s >= 60 then return ("%dm%02ds"):format(fl(s / 60), fl(s % 60)) end
  return ("%.1fs"):format(s)
end

--- A reporter for `total` requests: `update(done, failed)` and `clear()`
-- (wipes the bar before other output). `elapsed()` gives seconds so far.
function M.new(tty, total)
  local t0 = core.monotonic()
  local last = -1
  local width = 30
  local p = { shown = false }
  function p.elapsed() return core.monotonic() - t0 end
  function p.update(done, failed)
    local now = core.monotonic()
    if done < total and now - last < (tty and 0.1 or 2) then return end
    last = now
    local el = now - t0
    local rate = el > 0 and done / el or 0
    local eta = rate > 0 and (total - done) / rate or math.huge
    if tty then
      local fill = total > 0 and math.floor(width * done / total) or width
      io.stderr:write(("\r[%s%s] %d/%d %3d%% %.0f/s ETA %s failed %d\27[K"):format(
        ("#"):rep(fill), ("-"):rep(width - fill), done, total,
        total > 0 and math.floor(100 * done / total) or 100, rate, M.secs(eta), failed))
      p.shown = true
    else
      io.stderr:write(("batch: %d/%d done, %d failed, %.0f/s, ETA %s\n"):format(
        done, total, failed, rate, M.secs(eta)))
    end
    io.stderr:flush()
  end
  function p.clear()
    if tty and p.shown then io.stderr:write("\r\27[K"); p.shown = false end
  end
  return p
end

return M
