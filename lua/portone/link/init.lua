--- portone.link: create and deactivate PortOne payment links.
-- The C core (`portone.link.core`) validates and encodes; this layer turns its
-- results into error objects and hosts the client, webhook and REST helpers.
--
--    local link = require "portone.link"
--    assert(link.validate(req))                 -- every field rule, all errors at once
--    local client = link.new{ token = "..." }   -- see `new` for every option
--    local res, err = client:create(req)        -- {url =, id =, status =}
--
-- The request's field rules are listed in `request`, `pay_method` and
-- `direct`; the error kinds in `portone.link.errors.KINDS` and the
-- validation codes in `portone.link.errors.validation_codes`.
-- @module portone.link
local core = require "portone.link.core"
local errors = require "portone.link.errors"

--- Fields of the module table.
-- @field _VERSION the library's version string (the C core's `core.version`, e.g. `"0.1.0"`)
-- @field core the C core, `portone.link.core` (validate, encode, http handles)
-- @field errors `portone.link.errors`: error objects, `KINDS` and the validation codes
-- @field webhook `portone.link.webhook` (`link.webhook.parse`), loaded on first use
-- @field rest `portone.link.rest` (`link.rest.new`, `rest:verify`), loaded on first use
-- @table link
local M = {
  _VERSION = core.version,
  core = core,
  errors = errors,
}

-- level: where the error points, as for `error` (3: the caller of a Lua
-- function that calls check_args; 4 under encode's C function, see below)
local function check_args(fname, req, opts, level)
  if type(req) ~= "table" then
    error(("bad argument #1 to '%s' (table expected, got %s)"):format(fname, type(req)), level)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("bad argument #2 to '%s' (table expected, got %s)"):format(fname, type(opts)), level)
  end
  local now = opts and opts.now
  if now ~= nil and type(now) ~= "number" then
    error(("bad argument #2 to '%s' (opts.now must be a number)"):format(fname), level)
  end
  if now ~= now then   -- NaN: no expiry would be "not after" it
    error(("bad argument #2 to '%s' (opts.now must not be NaN)"):format(fname), level)
  end
  local max = opts and opts.max_body_bytes
  if max ~= nil and (type(max) ~= "number" or max < 64 or max ~= max) then
    error(("bad argument #2 to '%s' (opts.max_body_bytes must be a number >= 64)"):format(fname), level)
  end
  return now or os.time(), max
end

--- Checks a request table against every field rule.
-- @tparam table req the request, keyed by the API's own field names
-- @tparam[opt] table opts `{now = unix_seconds}` sets the clock for the expiry rule;
--   `max_body_bytes` (default 1048576, 1 MiB) caps the encoded body: a request
--   whose body would be longer fails with code `too_large` on the field being
--   written when it passed the cap (a real link's body is a few kilobytes)
-- @return `true`, or `nil, err` with `err.kind == "validation"` and `err.errors`
function M.validate(req, opts)
  local now, max = check_args("validate", req, opts, 3)
  local ok, list = core.validate(req, now, max)
  if ok then return true end
  return nil, errors.validation(list)
end

local core_encode = core.encode

-- Every call of link.encode that is not the common one (see below): bad
-- arguments raise here, pointing at encode's caller (level 4: check_args,
-- this function, encode's C function, its caller).
local function encode_checked(req, opts)
  local now, max = check_args("encode", req, opts, 4)
  local body, list = core_encode(req, now, max)
  if body then return body end
  return nil, errors.validation(list)
end

--- Encodes a request into the wire body (double-encoded JSON).
-- @function encode
-- @tparam table req the request
-- @tparam[opt] table opts `{now = unix_seconds, max_body_bytes = n}` as for `validate`
-- @return the body string, or `nil, err` as for `validate`
--
-- A C function (core.bind_encode): the common call - a table, and opts absent
-- or a plain table with a numeric `now` - runs without a Lua frame (this
-- wrapper was a tenth of what bench-encode measures); any other goes to
-- encode_checked, and a list of errors to errors.validation, as before.
M.encode = core.bind_encode(encode_checked, errors.validation, os.time)

--- Makes a client (`portone.link.client`); raises on a bad option.
-- Every option is checked: an unknown key, a wrong type or a value out of
-- range raises `portone.link.new: option 'NAME' ...` (a programmer error).
-- @tparam[opt] table opts the options; all are optional
-- @tparam[opt="https://api.iamport.co"] string opts.base_url the API's base URL:
--   an absolute `https://` URL with a host, no user info, query or fragment
--   (trailing `/` dropped); plain `http://` only to a loopback host
--   (`localhost`, `127.x.x.x`, `[::1]`, e.g. the sandbox) unless `insecure_http`
-- @tparam[opt=false] boolean opts.insecure_http allow plain `http://` to any
--   host (payment data then travels unencrypted)
-- @tparam[opt] string|function opts.token the API token, sent as
--   `Authorization: Bearer TOKEN`; a non-empty string without control
--   characters, or a function called once per call that returns one (or nil:
--   no header; or `nil, err`: the call fails with `err`). Default: none
-- @tparam[opt=10] number opts.timeout seconds for each whole attempt, in (0, 86400]
-- @tparam[opt=3] number opts.connect_timeout seconds to connect (TCP + TLS), in (0, 86400]
-- @tparam[opt=2] int opts.retries further attempts after the first, when the
--   retry rules allow (`portone.link.retry`), an integer in [0, 10]
-- @tparam[opt=0.25] number opts.retry_base seconds, first back-off window
--   (full jitter), in [0, 3600]
-- @tparam[opt=8] number opts.retry_cap seconds, largest back-off window, in [0, 3600]
-- @tparam[opt=30] number opts.retry_after_max seconds; a larger `Retry-After`
--   is not waited for (the call fails with `err.retry_after`), in [0, 3600]
-- @tparam[opt] string opts.cainfo a PEM file of CA certificates that *replaces*
--   libcurl's default bundle (like `curl --cacert`); no CR, LF or NUL.
--   Default: the system bundle. TLS is always verified
-- @tparam[opt] string opts.proxy a proxy URL; no CR, LF or NUL. Default:
--   libcurl's own `http_proxy`/`https_proxy`/`no_proxy` handling, and no
--   proxy for a loopback `base_url` (the ngx transport refuses a proxy)
-- @tparam[opt=1048576] int opts.max_response_bytes cap on a response body
--   (1 MiB), enforced while reading; a positive integer
-- @tparam[opt] string opts.user_agent appended to the User-Agent
--   `portone-link/VERSION`; no control characters
-- @tparam[opt] string|table opts.transport `"curl"` (blocking libcurl easy
--   handle), `"ngx"` (nginx cosockets), or an object with a `request` method
--   (the transport interface). Default: `"ngx"` inside nginx, else `"curl"`
-- @tparam[opt=16] int opts.max_concurrent async transfers in flight on the
--   client's multi handle (`portone.link.async`), an integer in [1, 4096]
-- @tparam[opt] function opts.on_attempt called once per attempt on every
--   transport with `{op, method, url, attempt, status, duration, err_kind,
--   sent, sends}`; a hook that raises never breaks a call
-- @treturn portone.link.client the client
-- @usage local client = link.new{ token = os.getenv("PORTONE_LINK_TOKEN"), timeout = 5 }
function M.new(opts)
  return require("portone.link.client").new(opts)
end

--- Field rules of a request (`validate`, `encode`, `client:create`).
-- The table is `src/rules.c` (the source of truth), in wire order: the keys
-- of `payment_info` are written in this order, absent optional fields left
-- out. Rules for every string: valid UTF-8 (else `format`), no control
-- characters (C0, DEL, C1; else `format`), lengths in Unicode code points
-- (`too_long`); a required string must not be empty (`empty`); an optional
-- one may be, unless its format or enum refuses `""`. A value of the wrong
-- Lua type is `type`, a missing required field `required`, a key not listed
-- `unknown_field` (with `suggestion`, the nearest known key, when one is
-- close: `merchant_id` gives "did you mean 'merchant_uid'?"). Tables are read
-- raw (metamethods are ignored). Integers may be given as integral floats.
-- @field title required string, 1-256 characters (shown on the bridge page)
-- @field user_code required string, `imp` followed by one or more ASCII
--   digits (`imp68124833`) (`format`)
-- @field amount required integer, 1 to 2^53-1 (9007199254740991) (`range`;
--   a non-integral number is `type`)
-- @field merchant_uid required string, 1-40 characters: your order id
-- @field name required string, 1-40 characters: the product name
-- @field tax_free optional integer, 0 to 2^53-1 and not over `amount`
--   (`range`)
-- @field currency required string, three upper-case ASCII letters (KRW, USD,
--   EUR, JPY in the docs; any such code is accepted) (`format`)
-- @field language optional, `"ko"` or `"en"`: the payment window (`enum`)
-- @field buyer_name optional string, at most 16 characters
-- @field buyer_tel required string, 1-16 characters of digits, `+`, `-`, `(`,
--   `)` and space, with at least one digit (`format`)
-- @field buyer_addr optional string, at most 128 characters
-- @field buyer_email optional string, at most 64 characters, exactly one `@`
--   with text on both sides, no spaces (`format`)
-- @field buyer_postcode optional string, at most 8 characters
-- @field custom_data optional, any JSON value, echoed back: a table with keys
--   exactly 1..n is an array, one with string keys an object (keys written in
--   byte order), `{}` an empty object, `cjson.null` null. Sparse or mixed
--   keys, other key types, functions, userdata and threads are `type`; cycles,
--   nesting deeper than 32 tables, NaN and infinity are `range`; the error
--   names the path (`custom_data.items[3]`, `custom_data["odd key"]`)
-- @field notice_url optional string, an absolute URL: `http://` or `https://`
--   (any case), a non-empty host (or `[v6]`), an optional port up to 65535,
--   no spaces (`format`): your webhook
-- @field display_language optional, `"ko"` or `"en"`: the bridge page (`enum`)
-- @field pay_methods required, an array (keys 1..n, else `type`) of at least
--   one (else `empty`) table, each as in `pay_method`; two entries with the
--   same `pg`/`channelKey` and `pay_method` are a `duplicate`
--   (`pay_methods[2]`, naming the first)
-- @field direct optional table, as in `direct`: go straight to the payment
--   window, skipping the bridge page
-- @field expired_at required (or `expire_at`, not both): when the link dies,
--   as integer unix seconds or an RFC 3339 date-time with an offset
--   (`2026-12-01T00:00:00+09:00`; else `format`); must be after `now`
--   (`expired`) and at most 253402300799, 9999-12-31T23:59:59Z (`range`).
--   Written top level as integer seconds, outside `payment_info`. Neither name
--   given: `required` at `expired_at`; both: `conflict` at `expire_at`
-- @field expire_at another name for `expired_at`
-- @table request

--- Field rules of one `pay_methods` entry (`pay_methods[i].label` in errors).
-- Wire order: `pg` or `channelKey`, `pay_method`, `label`.
-- @field pg the PG code, 1-64 characters of `A-Z a-z 0-9 _ . -` (`format`);
--   exactly one of `pg` and `channelKey` (neither: `required` at `pg`; both:
--   `conflict` at `channelKey`)
-- @field channelKey the channel key, same rule as `pg`
-- @field pay_method required, one of: card, trans, vbank, phone, applepay,
--   naverpay, samsungpay, samsung, kpay, kakaopay, payco, lpay, ssgpay,
--   tosspay, cultureland, smartculture, culturegift, booknlife, point, wechat,
--   alipay, unionpay, pinpay, ssgpay_bank, skpay, naverpay_card,
--   naverpay_point, paypal, toss_brandpay, tosspay_card, tosspay_money (`enum`)
-- @field label required string, 1-64 characters: the button's text
-- @table pay_method

--- Field rules of `direct` (payment window without the bridge page).
-- @field pg as in `pay_method`; exactly one of `pg` and `channelKey`
-- @field channelKey as in `pay_method`
-- @field pay_method required, as in `pay_method`
-- @table direct

-- webhook and rest load on first use: most callers need neither.
setmetatable(M, { __index = function(t, k)
  if k == "webhook" or k == "rest" then
    local mod = require("portone.link." .. k)
    rawset(t, k, mod)
    return mod
  end
end })

return M
