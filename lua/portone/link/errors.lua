--- Error objects shared by every part of portone.link.
-- An error is a table with `kind`, `message` and what fits the kind
-- (`errors`, `status`, `code`, `body`, `curl_code`, `retryable`, `attempts`).
-- `tostring(err)` gives one readable line (plus one line per validation error).
-- Secrets never reach an error: nothing here copies request headers.
--
-- Fields an error may carry: `kind` and `message` (always); `retryable`
-- (always: whether the failure itself may be retried); `attempts` (client
-- calls: how many times the request went out over the whole call, the
-- transports' silent re-sends included; 0 when nothing was sent);
-- `unanswered` (client and `link.rest` calls, absent when 0: the sends that
-- got no answer; a create or refund error with it may have been done, and
-- is not `retryable`);
-- `errors`
-- (validation: the list of `{field, code, message}`, plus `suggestion` for
-- `unknown_field` and `enum`);
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
--   and `pay_method`; a `create_many` entry whose `merchant_uid` an earlier
--   entry of the call has (field `merchant_uid`, the message names that
--   entry's index; not sent unless `allow_duplicates`)
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

-- The forms a server may echo a secret in, byte by byte and mixed freely
-- (encoders differ in what they escape: PHP writes `/` as `\/`, .NET `+`
-- as `\u002B`, Python's quote keeps `/`): the byte itself; JSON's `\/`,
-- `\"`, `\\`; JSON's `\uXXXX`; percent-encoding `%XX` (either hex case);
-- `+` for a space.

-- The hex number at s[a..b] (exactly b - a + 1 hex digits), or nil.
local function hex_at(s, a, b)
  local h = s:sub(a, b)
  if #h ~= b - a + 1 or h:find("%X") then return nil end
  return tonumber(h, 16)
end

-- Adds to `out` where each echo of byte c that starts at s[j] ends (exclusive).
local function steps(s, j, c, out)
  local b = s:byte(j)
  if b == c then out[#out + 1] = j + 1 end
  if b == 92 then
    local b2 = s:byte(j + 1)
    if b2 == c and (c == 47 or c == 34 or c == 92) then out[#out + 1] = j + 2 end
    if b2 == 117 and hex_at(s, j + 2, j + 5) == c then out[#out + 1] = j + 6 end
  elseif b == 37 then
    if hex_at(s, j + 1, j + 2) == c then out[#out + 1] = j + 3 end
  elseif b == 43 and c == 32 then
    out[#out + 1] = j + 1
  end
end

-- True when s ends at j with the start of an escape of byte c (a cut
-- through it).
local function partial(s, j, c)
  if j > #s or #s - j > 4 then return false end
  local rest = s:sub(j)
  for _, e in ipairs({ "\\" .. string.char(c), ("\\u%04x"):format(c), ("\\u%04X"):format(c),
      ("%%%02x"):format(c), ("%%%02X"):format(c) }) do
    if #rest < #e and e:sub(1, #rest) == rest then return true end
  end
  return false
end

-- Where an echo of `secret` that starts at s[i] ends (exclusive), or nil.
-- With `cut`, an echo that runs into the end of s after 4 bytes or more
-- counts too (#s + 1): the start of a secret the cut left. Several echoes
-- of one byte can start at one place (`%` as is or as `%25`): a set of
-- candidate places is followed, one or two in practice.
local function match_at(s, i, secret, cut)
  local states, n = { i }, #s
  for k = 1, #secret do
    local c, nxt, seen = secret:byte(k), {}, {}
    for _, p in ipairs(states) do
      if cut and n + 1 - i >= 4 and (p > n or partial(s, p, c)) then return n + 1 end
      local out = {}
      steps(s, p, c, out)
      for _, e in ipairs(out) do
        if not seen[e] then seen[e] = true; nxt[#nxt + 1] = e end
      end
    end
    if not nxt[1] then return nil end
    states = nxt
  end
  local e = states[1]
  for _, j in ipairs(states) do if j > e then e = j end end
  return e
end

-- A cheap first look: can an echo of byte c start at s[a]?
local function may_start(s, a, c)
  local b, b2 = s:byte(a, a + 1)
  if b == c or (b == 43 and c == 32) then return true end
  if b == 92 then return b2 == c or b2 == 117 end
  return b == 37 and hex_at(s, a + 1, a + 2) == c
end

-- s with every echo of one secret replaced by mark.
local function scrub_one(s, secret, mark, cut)
  -- the bytes an echo can start with
  local class = "[" .. secret:sub(1, 1):gsub("%W", "%%%0") .. "\\%%+]"
  local c1 = secret:byte(1)
  local out, i, last = {}, 1, 1
  while true do
    local a = s:find(class, i)
    if not a then break end
    local e = may_start(s, a, c1) and match_at(s, a, secret, cut)
    if e then
      out[#out + 1] = s:sub(last, a - 1)
      out[#out + 1] = mark
      last, i = e, e
    else
      i = a + 1
    end
  end
  if last == 1 then return s end
  out[#out + 1] = s:sub(last)
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
      s = scrub_one(s, secret, mark, was_cut)
    end
  end
  return s
end

-- Scrubs the strings of a table (keys and values, nested), in place; a
-- table nested deeper than 8 levels is dropped whole.
local function scrub_table(t, secrets, mark, depth)
  local renamed = {}
  for k, v in pairs(t) do
    if type(v) == "string" then
      t[k] = M.scrub_text(v, secrets, mark)
    elseif type(v) == "table" then
      if depth >= 8 then t[k] = "[nested too deep]" else scrub_table(v, secrets, mark, depth + 1) end
    end
    if type(k) == "string" then
      local k2 = M.scrub_text(k, secrets, mark)
      if k2 ~= k then renamed[k] = k2 end
    end
  end
  for k, k2 in pairs(renamed) do
    t[k2], t[k] = t[k], nil
  end
  return t
end

--- Removes the secrets from every string of an error (message, body, a
-- string `code`, a `code` the server sent as a JSON object or array, the
-- `errors` entries, any other field), in place. `tostring(err)` is built
-- from these fields, so it is clean too.
-- @tparam table err the error
-- @tparam table secrets the secrets (a table of strings; holes allowed)
-- @tparam[opt] string mark what replaces a secret (default `[secret]`)
-- @return err
function M.scrub(err, secrets, mark)
  if type(err) ~= "table" then return err end
  for k, v in pairs(err) do
    if type(v) == "string" then
      err[k] = M.scrub_text(v, secrets, mark, k == "body" and 512 or nil)
    elseif type(v) == "table" or k == "code" then
      err[k] = M.scrub_value(v, secrets, mark)
    end
  end
  return err
end

--- Removes the secrets from a value: a string (see `scrub_text`); the
-- strings in a table, nested (a JSON value decoded from an answer), in
-- place; a number whose digits hold a secret (an all-digit secret the
-- server echoed as a JSON number) becomes the scrubbed text of it.
-- @param v the value
-- @tparam table secrets the secrets
-- @tparam[opt] string mark what replaces a secret
-- @return v, scrubbed
function M.scrub_value(v, secrets, mark)
  if type(v) == "table" then return scrub_table(v, secrets, mark, 1) end
  if type(v) == "number" then
    local text = (v == math.floor(v) and v > -2 ^ 63 and v < 2 ^ 63) and ("%.0f"):format(v) or tostring(v)
    local clean = M.scrub_text(text, secrets, mark)
    return clean == text and v or clean
  end
  return M.scrub_text(v, secrets, mark)
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

--- True when a failed create may still have made a link: the request left
-- and no clear refusal came back (a timeout or a connection lost after
-- sending, an answer too large or unreadable, a 5xx other than 503, or any
-- answer after a send that got none: `unanswered`). The same cases the
-- retry rules refuse to re-send a create for. Check such an order before
-- creating its link again: the link API cannot be asked by merchant_uid.
-- @tparam table err an error of `client:create`
-- @treturn boolean
function M.may_exist(err)
  if err.attempts == 0 then return false end   -- never sent (a token function's error too)
  if (err.unanswered or 0) > 0 then return true end
  local k = err.kind
  if k == "timeout" or k == "transport" then return err.sent ~= false end
  if k == "decode" then return true end
  if k == "http" then return (tonumber(err.status) or 0) >= 500 and err.status ~= 503 end
  return false
end

-- Edit distance between two short strings (key and option names).
local function distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    for j = 1, #b do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

--- The key of `known` (a table keyed by the names) nearest to an unknown
-- `name` (`base_uri` -> base_url, `baseUrl` -> base_url, `ammount` ->
-- amount), or nil when none is close: case and `_`/`-` are ignored, and at
-- most a third of the name may differ. For "did you mean" messages.
function M.nearest(name, known)
  if type(name) ~= "string" then return nil end
  local norm = name:lower():gsub("[_-]", "")
  local best, bd
  for k in pairs(known) do
    if type(k) == "string" then
      local d = distance(norm, (k:gsub("_", "")))
      if not bd or d < bd or (d == bd and k < best) then best, bd = k, d end
    end
  end
  if bd and bd <= math.max(1, math.floor(#norm / 3)) then return best end
end

--- For an options table `t`: nil when `known` (a table keyed by the
-- names) has every key, else "option 'k' is unknown[: did you mean 'n'?]"
-- for the first key it lacks. Callers raise with it: a misspelt option
-- would be dropped.
function M.unknown_option(t, known)
  for k in pairs(t) do
    if not known[k] then
      local near = M.nearest(k, known)
      return ("option '%s' is unknown%s"):format(tostring(k),
        near and (": did you mean '" .. near .. "'?") or "")
    end
  end
end

return M
