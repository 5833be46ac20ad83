--- Error objects shared by every part of portone.link.
-- An error is a table with `kind`, `message` and what fits the kind
-- (`errors`, `status`, `code`, `body`, `curl_code`, `retryable`, `attempts`).
-- `tostring(err)` gives one readable line (plus one line per validation error).
-- Secrets never reach an error: nothing here copies request headers.
--
-- Fields an error may carry: `kind` and `message` (always); `retryable`
-- (always: whether the failure itself may be retried); `attempts` (client
-- calls: how many times the request went out over the whole call, the
-- transports' silent re-sends included; 0 when nothing was sent); `errors` (validation: the
-- list of `{field, code, message}`, plus `suggestion` for `unknown_field`);
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
--   `amount`, an expiry past year 9999; custom_data cycles, depth over 32,
--   NaN, infinity)
-- @field format invalid UTF-8, control characters, or a string that breaks
--   its format (`user_code`, `currency`, `buyer_tel`, `buyer_email`,
--   `notice_url`, `pg`, `channelKey`, an RFC 3339 expiry; `rest:payment`'s
--   `imp_uid`; a webhook `imp_uid`)
-- @field enum a value outside its list (`language`, `display_language`,
--   `pay_method`; a webhook `status`)
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

-- The forms a server may echo a secret in: as sent; JSON-escaped (`/` as
-- `\/`, or every punctuation byte as `\u00XX`); percent-encoded (either hex
-- case, space as `+` too). Each is searched for verbatim.
local function variants(secret)
  local list, seen = {}, {}
  local function add(v) if not seen[v] then seen[v] = true; list[#list + 1] = v end end
  add(secret)
  add((secret:gsub('[\\"/]', function(c) return "\\" .. c end)))
  add((secret:gsub('[\\"]', function(c) return "\\" .. c end)))
  for _, fmt in ipairs({ "\\u%04x", "\\u%04X" }) do
    add((secret:gsub("[^%w]", function(c) return fmt:format(c:byte()) end)))
  end
  for _, fmt in ipairs({ "%%%02X", "%%%02x" }) do
    add((secret:gsub("[^%w%-%._~]", function(c) return fmt:format(c:byte()) end)))
    add((secret:gsub("[^%w%-%._~ ]", function(c) return fmt:format(c:byte()) end):gsub(" ", "+")))
  end
  return list
end

local function replace_all(s, needle, with)
  local out, i = {}, 1
  while true do
    local a, b = s:find(needle, i, true)
    if not a then break end
    out[#out + 1] = s:sub(i, a - 1)
    out[#out + 1] = with
    i = b + 1
  end
  if i == 1 then return s end
  out[#out + 1] = s:sub(i)
  return table.concat(out)
end

--- Removes every secret from a string, in each form a server may echo it
-- (see above), and the start of one that a cut left at the end. Secrets
-- under 4 bytes are left alone: they would match ordinary text.
-- @tparam string s the text (anything else is returned as is)
-- @tparam table secrets the secrets (a table of strings; holes allowed)
-- @tparam[opt] string mark what replaces a secret (default `[secret]`)
-- @tparam[opt] int cut the length `s` was cut to, if it was
-- @return the text with `mark` in place of each secret
function M.scrub_text(s, secrets, mark, cut)
  if type(s) ~= "string" then return s end
  mark = mark or "[secret]"
  local was_cut = cut and #s >= cut
  for _, secret in pairs(secrets) do
    if type(secret) == "string" and #secret >= 4 then
      for _, v in ipairs(variants(secret)) do
        s = replace_all(s, v, mark)
        if was_cut then
          for k = math.min(#v - 1, #s), 4, -1 do
            if s:sub(-k) == v:sub(1, k) then s = s:sub(1, -k - 1) .. mark; break end
          end
        end
      end
    end
  end
  return s
end

--- Removes the secrets from every string field of an error (message, body,
-- a string `code`, anything else) and from its `errors` entries, in place.
-- `tostring(err)` is built from these fields, so it is clean too.
-- @tparam table err the error
-- @tparam table secrets the secrets (a table of strings; holes allowed)
-- @tparam[opt] string mark what replaces a secret (default `[secret]`)
-- @return err
function M.scrub(err, secrets, mark)
  if type(err) ~= "table" then return err end
  for k, v in pairs(err) do
    if type(v) == "string" then
      err[k] = M.scrub_text(v, secrets, mark, k == "body" and 512 or nil)
    elseif k == "errors" and type(v) == "table" then
      for _, fe in ipairs(v) do
        if type(fe) == "table" then
          for fk, fv in pairs(fe) do fe[fk] = M.scrub_text(fv, secrets, mark) end
        end
      end
    end
  end
  return err
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
