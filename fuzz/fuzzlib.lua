--- Helpers shared by the fuzz checkers (fuzz/*.lua): a byte reader for
-- structured generators, deep comparison after JSON round trips, and the
-- checks every error object must pass.
local M = {}

local cjson = require "cjson"
M.null = cjson.null

--- A reader over the fuzzer's bytes. Past the end every read gives 0, so a
-- short input still makes a whole (mostly default) value.
function M.reader(data)
  local r = { s = data, i = 1, n = #data }
  function r:byte()
    local i = self.i
    if i > self.n then return 0 end
    self.i = i + 1
    return self.s:byte(i)
  end
  function r:left() return self.n - self.i + 1 end
  -- a 16-bit value
  function r:u16() return self:byte() * 256 + self:byte() end
  -- a string of up to `max` raw bytes (length from the input)
  function r:bytes(max)
    local len = self:byte() % ((max or 64) + 1)
    local s = self.s:sub(self.i, self.i + len - 1)
    self.i = self.i + #s
    return s
  end
  function r:pick(list) return list[self:byte() % #list + 1] end
  function r:chance(k) return self:byte() % k == 0 end
  return r
end

--- Numbers are compared as the JSON reader sees them: lua-cjson decodes every
-- number as a float, so an integer 2^63-1 written with every digit comes back
-- as 2^63 (its nearest double).
local function numeq(a, b)
  if type(a) ~= "number" or type(b) ~= "number" then return false end
  if math.type(a) == "integer" then a = a + 0.0 end
  if math.type(b) == "integer" then b = b + 0.0 end
  return a == b
end
M.numeq = numeq

--- Deep equality of a Lua value and what came back from JSON. Returns true,
-- or false and the path of the first difference.
function M.same(a, b, path)
  path = path or "$"
  if type(a) == "number" then
    if numeq(a, b) then return true end
    return false, path .. (": number %s vs %s"):format(tostring(a), tostring(b))
  end
  if type(a) ~= type(b) then
    return false, path .. (": %s vs %s"):format(type(a), type(b))
  end
  if type(a) ~= "table" then
    if a == b then return true end
    return false, path .. (": %q vs %q"):format(tostring(a), tostring(b))
  end
  for k, v in pairs(a) do
    local ok, where = M.same(v, b[k], path .. "." .. tostring(k))
    if not ok then return false, where end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "." .. tostring(k) .. ": extra key" end
  end
  return true
end

M.CODES = {
  required = true, type = true, too_long = true, empty = true, range = true,
  format = true, enum = true, unknown_field = true, duplicate = true,
  conflict = true, expired = true, too_large = true,
}

--- Raises unless `list` is a non-empty array of {field, code, message}
-- (+ an optional suggestion string) with codes from `codes`.
function M.check_error_list(list, codes, where)
  codes = codes or M.CODES
  assert(type(list) == "table", where .. ": error list is not a table")
  assert(#list >= 1, where .. ": empty error list")
  local n = 0
  for k in pairs(list) do
    assert(math.type(k) == "integer" and k >= 1 and k <= #list, where .. ": error list has a non-array key")
    n = n + 1
  end
  assert(n == #list, where .. ": error list has holes")
  for i, e in ipairs(list) do
    assert(type(e) == "table", where .. ": error " .. i .. " is not a table")
    assert(type(e.field) == "string", where .. ": error " .. i .. " has no field string")
    assert(type(e.code) == "string" and codes[e.code], where .. ": error " .. i
      .. " has an unknown code " .. tostring(e.code))
    assert(type(e.message) == "string" and #e.message > 0, where .. ": error " .. i .. " has no message")
    assert(e.suggestion == nil or (type(e.suggestion) == "string"
      and (e.code == "unknown_field" or e.code == "enum")),
      where .. ": error " .. i .. " has a stray suggestion")
    for key in pairs(e) do
      assert(key == "field" or key == "code" or key == "message" or key == "suggestion",
        where .. ": error " .. i .. " has an extra key " .. tostring(key))
    end
  end
end

--- Raises unless `err` is a portone.link error object of a known kind whose
-- tostring works.
function M.check_error_object(err, kinds, where)
  local errors = require "portone.link.errors"
  assert(errors.is(err), where .. ": not an error object: " .. tostring(err))
  assert(errors.KINDS[err.kind] and (not kinds or kinds[err.kind]),
    where .. ": unexpected kind " .. tostring(err.kind))
  assert(type(err.message) == "string", where .. ": message is not a string")
  local s = tostring(err)
  assert(type(s) == "string" and #s > 0, where .. ": tostring failed")
  if err.body ~= nil then
    assert(type(err.body) == "string" and #err.body <= 512, where .. ": body not cut to 512 bytes")
  end
  if err.kind == "validation" then
    assert(type(err.errors) == "table" and #err.errors >= 1, where .. ": validation without errors")
  end
end

return M
