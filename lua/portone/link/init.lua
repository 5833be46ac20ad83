--- portone.link: create and deactivate PortOne payment links.
-- The C core (`portone.link.core`) validates and encodes; this layer turns its
-- results into error objects and hosts the client, webhook and REST helpers.
-- @module portone.link
local core = require "portone.link.core"
local errors = require "portone.link.errors"

local M = {
  _VERSION = core.version,
  core = core,
  errors = errors,
}

local function check_args(fname, req, opts)
  if type(req) ~= "table" then
    error(("bad argument #1 to '%s' (table expected, got %s)"):format(fname, type(req)), 3)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("bad argument #2 to '%s' (table expected, got %s)"):format(fname, type(opts)), 3)
  end
  local now = opts and opts.now
  if now ~= nil and type(now) ~= "number" then
    error(("bad argument #2 to '%s' (opts.now must be a number)"):format(fname), 3)
  end
  return now or os.time()
end

--- Checks a request table against every field rule.
-- @tparam table req the request, keyed by the API's own field names
-- @tparam[opt] table opts `{now = unix_seconds}` sets the clock for the expiry rule
-- @return `true`, or `nil, err` with `err.kind == "validation"` and `err.errors`
function M.validate(req, opts)
  local now = check_args("validate", req, opts)
  local ok, list = core.validate(req, now)
  if ok then return true end
  return nil, errors.validation(list)
end

--- Encodes a request into the wire body (double-encoded JSON).
-- @tparam table req the request
-- @tparam[opt] table opts `{now = unix_seconds}`
-- @return the body string, or `nil, err` as for `validate`
function M.encode(req, opts)
  local now = check_args("encode", req, opts)
  local body, list = core.encode(req, now)
  if body then return body end
  return nil, errors.validation(list)
end

--- Makes a client (see `portone.link.client`).
function M.new(opts)
  return require("portone.link.client").new(opts)
end

-- webhook and rest load on first use: most callers need neither.
setmetatable(M, { __index = function(t, k)
  if k == "webhook" or k == "rest" then
    local mod = require("portone.link." .. k)
    rawset(t, k, mod)
    return mod
  end
end })

return M
