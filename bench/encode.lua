-- bench/encode.lua - link.encode (validate + double-encode in C) against the
-- same body built with lua-cjson (cjson.encode of payment_info, then of the
-- outer object; no validation at all). Both run in one process, on the same
-- request, for about the same time; prints ops/s and the ratio.
--
--   make bench-encode
--   (or: LUA_PATH="lua/?.lua;lua/?/init.lua;spec/?.lua;;" lua5.4 bench/encode.lua [seconds])
local link = require "portone.link"
local cjson = require "cjson"
local requests = require "helpers.requests" -- spec/ is on LUA_PATH (make bench-encode)

local SECONDS = tonumber(arg and arg[1]) or 2.0
local NOW = requests.DOCS_NOW

-- The docs' example plus the optional fields a real order carries.
local req = requests.docs_example()
req.buyer_name = "홍길동"
req.buyer_email = "buyer@example.com"
req.custom_data = { order = 1042, items = { "A-1", "B-2" }, gift = false }
req.notice_url = "https://example.com/portone/webhook"
local opts = { now = NOW }

local function with_cjson(r)
  local info = {}
  for k, v in pairs(r) do
    if k ~= "expired_at" and k ~= "expire_at" then info[k] = v end
  end
  return cjson.encode({ payment_info = cjson.encode(info), expired_at = r.expired_at })
end

-- ops/s of f over about `secs` of CPU time
local function rate(f, secs)
  local n, batch = 0, 100
  local t0 = os.clock()
  local el
  repeat
    for _ = 1, batch do f() end
    n = n + batch
    el = os.clock() - t0
  until el >= secs
  return n / el
end

-- The contenders take turns in short rounds, and each keeps its best round,
-- so a busy machine slows them alike instead of skewing the ratio.
local function race(fs, total)
  local best, rounds = {}, 10
  for _, f in ipairs(fs) do
    for _ = 1, 200 do f() end       -- warm up
  end
  for _ = 1, rounds do
    for i, f in ipairs(fs) do
      local r = rate(f, total / rounds)
      if not best[i] or r > best[i] then best[i] = r end
    end
  end
  return best
end

assert(link.encode(req, opts), "the bench request must be valid")
local body = link.encode(req, opts)
local a = cjson.decode(body)
local b = cjson.decode(with_cjson(req))
assert(a.expired_at == b.expired_at)

local r = race({
  function() link.encode(req, opts) end,
  function() link.validate(req, opts) end,
  function() link.core.encode(req, NOW) end,
  function() with_cjson(req) end,
}, SECONDS)
local r_encode, r_validate, r_core, r_cjson = r[1], r[2], r[3], r[4]

print(("%s, %d-byte body, best of 10 rounds, %.1f s each contender"):format(_VERSION, #body, SECONDS))
print(("  link.encode      %10.0f ops/s"):format(r_encode))
print(("  link.validate    %10.0f ops/s"):format(r_validate))
print(("  core.encode      %10.0f ops/s"):format(r_core))
print(("  lua-cjson x2     %10.0f ops/s  (no validation)"):format(r_cjson))
print(("  ratio link.encode / lua-cjson = %.2f"):format(r_encode / r_cjson))
