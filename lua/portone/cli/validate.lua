--- `portone-link validate FILE|-`: checks requests without sending them.
local common = require "portone.cli.common"

local M = {}

M.USAGE = [[
usage: portone-link validate [--json] FILE|-

Checks the JSON request in FILE (or stdin for -) against every field rule
and lists every problem with its field path (pay_methods[2].label). Nothing
is sent. A file of one JSON object per line (JSONL) is checked line by line.

  --json    one JSON object per request: {"line", "ok", "errors"}
  --help    this text

A JSONL file ends with a summary line ("3 requests: 2 valid, 1 invalid").
A line that is not JSON is one more invalid request (code "json").

Exit: 0 every request is valid, 1 some request is invalid (bad JSON
included), 2 usage error or unreadable input.
]]

-- The requests in text: one JSON object, or one per non-blank line.
local function requests(text)
  local one = common.decode_object(text)
  if one then return { { line = 1, req = one } } end
  local list, n = {}, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if line:find("%S") then
      local req, err = common.decode_object(line)
      list[#list + 1] = { line = n, req = req, err = err }
    end
  end
  return list
end

function M.main(args)
  local o, pos = common.parse(args, { ["--json"] = "bool" })
  if not o then return common.usage_error("validate", pos, M.USAGE) end
  if o.help then io.stdout:write(M.USAGE); return common.OK end
  if #pos ~= 1 then return common.usage_error("validate", "expects one FILE or -", M.USAGE) end
  local text, rerr = common.read_all(pos[1])
  if not text then return common.usage_error("validate", rerr) end
  local list = requests(text)
  if #list == 0 then return common.usage_error("validate", pos[1] .. ": no request found") end
  local link = require "portone.link"
  local bad, many = 0, #list > 1
  for _, item in ipairs(list) do
    local errs
    if item.req then
      local ok, err = link.validate(item.req)
      if not ok then errs = err.errors end
    else
      errs = { { field = "", code = "json", message = item.err } }
    end
    if errs then bad = bad + 1 end
    if o.json then
      common.json_line({ line = item.line, ok = errs == nil, errors = errs })
    else
      local where = many and ("line " .. item.line .. ": ") or ""
      if not errs then
        io.stdout:write(where, "ok\n")
      else
        io.stdout:write(where, #errs, #errs == 1 and " problem\n" or " problems\n")
        for _, e in ipairs(errs) do
          local field = e.field ~= "" and e.field or "(request)"
          io.stdout:write("  ", field, ": ", e.message, " [", e.code, "]",
            "\n")
        end
      end
    end
  end
  if many and not o.json then
    io.stdout:write(("%d requests: %d valid, %d invalid\n"):format(#list, #list - bad, bad))
  end
  return bad == 0 and common.OK or common.FAILED
end

return M
