--- Error objects shared by every part of portone.link.
-- An error is a table with `kind`, `message` and what fits the kind
-- (`errors`, `status`, `code`, `body`, `curl_code`, `retryable`, `attempts`).
-- `tostring(err)` gives one readable line (plus one line per validation error).
-- Secrets never reach an error: nothing here copies request headers.
--
-- Fields an error may carry: `kind` and `message` (always); `retryable`
-- (always: whether the failure itself may be retried); `attempts` (client
-- calls: requests made, 0 when nothing was sent); `errors` (validation: the
-- list of `{field, code, message}`, plus `suggestion` for `unknown_field` and `enum`);
-- `status` (the HTTP status of an answer); `code` (PortOne's non-zero `code`);
-- `body` (the answer, cut to 512 bytes); `curl_code`; `sent` (transport,
-- timeout: `false` when the request surely never left); `too_large` (the
-- answer went over `max_response_bytes`); `retry_after` (http: seconds asked
-- by `Retry-After`); `field`, `expected`, `actual`, `payment` (mismatch);
-- `payment_status`, `payment` (unpaid); `stage = "lookup"` (rest:verify).
-- @module portone.link.errors
local M = {}

--- The error kinds, as the contract names them (`KINDS[kind] == true`).
-- `new` refuses any other kind.
-- @field validation the input breaks a rule; nothing was sent. `err.errors`
--   lists every problem (see `validation_codes`)
-- @field transport the request failed below HTTP: DNS, connect, TLS, a reset,
--   a body over `max_response_bytes`, a token function that failed, a closed
--   client ("client is closed", `retryable = false`); `curl_code`, `sent`
-- @field timeout the connect or total timeout ran out; `curl_code`, `sent`
-- @field http the server answered a non-2xx status; `status`, `body`, and
--   `code` and `retry_after` when the answer had them
-- @field api a 2xx answer whose JSON carries a non-zero `code` (PortOne's
--   way to fail with HTTP 200); `status`, `code`, `body`
-- @field decode a 2xx answer that is not the expected JSON (no
--   `shortenedUrl`, say), or an unreadable webhook body; `status`, `body`
-- @field mismatch `portone.link.rest` `rest:verify`: the payment's `amount`,
--   `merchant_uid` or `imp_uid` differs from the order; `field`, `expected`,
--   `actual`, `payment`
-- @field unpaid `rest:verify`: the payment's status is not the expected one
--   (`"paid"`); `payment_status`, `payment`
-- @field auth `portone.link.rest`: REST V1 answered 401 (the key or secret
--   was refused); also free for a client's token function to return
M.KINDS = {
  validation = true, transport = true, timeout = true,
  http = true, api = true, decode = true,
  -- used by link.rest / webhook helpers:
  mismatch = true, unpaid = true, auth = true,
}

--- The validation codes: `err.errors[i].code` of a `validation` error.
-- Each entry is `{field = path, code =, message =}`; paths look like
-- `amount`, `pay_methods[2].label`, `custom_data.items[3]`,
-- `custom_data["odd key"]`. The request's errors come in field order (the
-- unknown keys of a table after its known ones, sorted). Field rules:
-- `portone.link.request`.
-- @field required a required field is missing (for a pair, `expired_at`/
--   `expire_at` or `pg`/`channelKey`, reported at the first name)
-- @field type wrong Lua type, a non-integral number where an integer is
--   needed, or custom_data that is no JSON value (also: a token function
--   that returns a non-string, field `token`; a `create_many` entry that is
--   not a table, field `[i]`; a webhook field that is not a string)
-- @field too_long a string over its maximum length in characters (webhook:
--   in bytes)
-- @field empty a required string is `""`, or `pay_methods` has no entry
-- @field range a number out of range (`amount` below 1, `tax_free` over
--   `amount`, an expiry past year 9999 - or one that looks like milliseconds,
--   which the message says; custom_data cycles, depth over 32, NaN, infinity)
-- @field format invalid UTF-8, control characters, or a string that breaks
--   its format (`user_code`, `currency`, `buyer_tel`, `buyer_email`,
--   `notice_url`, `pg`, `channelKey`, an RFC 3339 expiry; `rest:payment`'s
--   `imp_uid`; a webhook `imp_uid`)
-- @field enum a value outside its list (`language`, `display_language`,
--   `pay_method`; a webhook `status`); `suggestion` names the nearest value
--   when one is close (`crad` gives "did you mean 'card'?", `KO` gives `ko`)
-- @field too_large the encoded body would pass `max_body_bytes` (default
--   1 MiB); reported once, at the field being written when it did
-- @field unknown_field a key the schema does not know; `suggestion` names the
--   nearest known key when one is close
-- @field duplicate two `pay_methods` entries with the same `pg`/`channelKey`
--   and `pay_method`
-- @field conflict both names of a pair given (`expired_at` and `expire_at`,
--   `pg` and `channelKey`), reported at the second
-- @field expired the expiry is not after `now`
-- @field bad_id `deactivate`: the link id (field `id`) does not match
--   `[A-Za-z0-9_-]{1,64}`
-- @field header_injection the `token` or `user_agent` would put CR, LF or
--   another control character (or an empty token) into a header
-- @field missing `link.webhook.parse`: a required notice field is absent
-- @field encoding `link.webhook.parse`: a field is not UTF-8 text without
--   control characters
-- @table validation_codes

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
-- @tparam string kind one of `KINDS` (anything else raises)
-- @tparam string message what went wrong, one line
-- @tparam[opt] table fields extra fields (`status`, `code`, `retryable`, ...);
--   `retryable` defaults to `false`
-- @return the error
function M.new(kind, message, fields)
  assert(M.KINDS[kind], "unknown error kind")
  local e = { kind = kind, message = message }
  if fields then for k, v in pairs(fields) do e[k] = v end end
  if e.retryable == nil then e.retryable = false end
  return setmetatable(e, Error)
end

--- True when `v` is an error made by `new`.
-- @param v any value
-- @treturn boolean
function M.is(v)
  return getmetatable(v) == Error
end

--- A validation error from the core's list of `{field, code, message}`.
-- @tparam table list at least one entry; becomes `err.errors`
-- @return the error (kind `validation`; the message names the first problem)
function M.validation(list)
  local n = #list
  local first = list[1]
  local msg = n == 1 and (first.field .. ": " .. first.message)
    or (n .. " problems in the request, first: " .. first.field .. ": " .. first.message)
  return M.new("validation", msg, { errors = list })
end

--- Cuts a response body for an error (the contract keeps 512 bytes).
-- @param body the body (anything but a string gives nil)
-- @tparam[opt=512] int limit bytes to keep
-- @treturn ?string the first `limit` bytes of `body`
function M.cut(body, limit)
  limit = limit or 512
  if type(body) ~= "string" then return nil end
  if #body <= limit then return body end
  return body:sub(1, limit)
end

return M
