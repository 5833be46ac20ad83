--- Error objects shared by every part of portone.link.
-- An error is a table with `kind`, `message` and what fits the kind
-- (`errors`, `status`, `code`, `body`, `curl_code`, `retryable`, `attempts`).
-- `tostring(err)` gives one readable line (plus one line per validation error).
-- Secrets never reach an error: nothing here copies request headers.
local M = {}

--- The error kinds, as the contract names them.
M.KINDS = {
  validation = true, transport = true, timeout = true,
  http = true, api = true, decode = true,
  -- used by link.rest / webhook helpers:
  mismatch = true, unpaid = true, auth = true, closed = true,
}

local Error = {}
Error.__index = Error

function Error.__tostring(e)
  local parts = { "portone.link " .. e.kind .. " error: " .. tostring(e.message) }
  if e.status then parts[#parts + 1] = " (HTTP " .. e.status .. ")" end
  if e.code ~= nil then parts[#parts + 1] = " (code " .. tostring(e.code) .. ")" end
  if e.curl_code then parts[#parts + 1] = " (curl " .. e.curl_code .. ")" end
  if e.attempts and e.attempts > 1 then parts[#parts + 1] = " after " .. e.attempts .. " attempts" end
  if e.errors then
    for _, fe in ipairs(e.errors) do
      parts[#parts + 1] = "\n  " .. fe.field .. ": " .. fe.message .. " [" .. fe.code .. "]"
    end
  end
  return table.concat(parts)
end

--- Makes an error object. `fields` is copied onto it.
function M.new(kind, message, fields)
  assert(M.KINDS[kind], "unknown error kind")
  local e = { kind = kind, message = message }
  if fields then for k, v in pairs(fields) do e[k] = v end end
  if e.retryable == nil then e.retryable = false end
  return setmetatable(e, Error)
end

--- True when `v` is an error made by `new`.
function M.is(v)
  return getmetatable(v) == Error
end

--- A validation error from the core's list of `{field, code, message}`.
function M.validation(list)
  local n = #list
  local first = list[1]
  local msg = n == 1 and (first.field .. ": " .. first.message)
    or (n .. " problems in the request, first: " .. first.field .. ": " .. first.message)
  return M.new("validation", msg, { errors = list })
end

--- Cuts a response body for an error (the contract keeps 512 bytes).
function M.cut(body, limit)
  limit = limit or 512
  if type(body) ~= "string" then return nil end
  if #body <= limit then return body end
  return body:sub(1, limit)
end

return M
