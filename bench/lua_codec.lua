--- bench/lua_codec.lua - the pure-Lua contender of make bench-encode: every
-- rule the C core checks (src/rules.c), written plainly and fairly in Lua,
-- then the body built with two cjson.encode calls. It reports the same
-- fields and codes (not the messages) so a spec-like self check can compare
-- it with the C core; it is not part of the module.
local cjson = require "cjson"

local byte, find, type, floor, pairs, next = string.byte, string.find, type, math.floor, pairs, next
local MAX_SAFE = 2 ^ 53 - 1
local MAX_EXPIRY = 253402300799
local MAX_DEPTH = 32

local M = {}

-- Strict UTF-8 (no overlong, surrogate, > U+10FFFF); with noctrl no C0, DEL
-- or C1 either. Returns the number of code points, or nil.
local function ulen(s, noctrl)
  if not find(s, "[\128-\255]") then
    if noctrl and find(s, "[%z\1-\31\127]") then return nil end
    return #s
  end
  local n, i, len = 0, 1, #s
  while i <= len do
    local c = byte(s, i)
    if c < 0x80 then
      if noctrl and (c < 0x20 or c == 0x7f) then return nil end
      i = i + 1
    elseif c >= 0xC2 and c <= 0xDF then
      local c1 = byte(s, i + 1)
      if not c1 or c1 < 0x80 or c1 > 0xBF or (noctrl and c == 0xC2 and c1 < 0xA0) then return nil end
      i = i + 2
    elseif c >= 0xE0 and c <= 0xEF then
      local c1, c2 = byte(s, i + 1, i + 2)
      if not c2 or c1 < 0x80 or c1 > 0xBF or c2 < 0x80 or c2 > 0xBF
        or (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 > 0x9F) then return nil end
      i = i + 3
    elseif c >= 0xF0 and c <= 0xF4 then
      local c1, c2, c3 = byte(s, i + 1, i + 3)
      if not c3 or c1 < 0x80 or c1 > 0xBF or c2 < 0x80 or c2 > 0xBF or c3 < 0x80 or c3 > 0xBF
        or (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 > 0x8F) then return nil end
      i = i + 4
    else
      return nil
    end
    n = n + 1
  end
  return n
end

local function set(list)
  local t = {}
  for w in list:gmatch("%S+") do t[w] = true end
  return t
end
local LANG = set "ko en"
local PAY = set [[card trans vbank phone applepay naverpay samsungpay samsung kpay
  kakaopay payco lpay ssgpay tosspay cultureland smartculture culturegift booknlife
  point wechat alipay unionpay pinpay ssgpay_bank skpay naverpay_card naverpay_point
  paypal toss_brandpay tosspay_card tosspay_money]]

local function f_user_code(s) return find(s, "^imp%d+$") ~= nil end
local function f_currency(s) return find(s, "^[A-Z][A-Z][A-Z]$") ~= nil end
local function f_tel(s) return find(s, "^[0-9+%-() ]*$") ~= nil and find(s, "%d") ~= nil end
local function f_email(s)
  if find(s, "[ \t]") then return false end
  local a, b = find(s, "@", 1, true)
  return a ~= nil and a > 1 and a < #s and not find(s, "@", b + 1, true)
end
local function f_pg(s) return #s <= 64 and find(s, "^[A-Za-z0-9_.%-]*$") ~= nil end
local function f_url(s)
  if find(s, " ", 1, true) then return false end
  local rest = s:match("^[Hh][Tt][Tt][Pp][Ss]?://(.+)$")
  if not rest then return false end
  local auth = rest:match("^[^/?#]*")
  auth = auth:gsub("^.*@", "")
  local host, port
  if auth:sub(1, 1) == "[" then
    host, port = auth:match("^(%[[^%]]+%])(.*)$")
  else
    host, port = auth:match("^([^:]*)(.*)$")
  end
  if not host or host == "" then return false end
  if port ~= "" then
    local p = port:match("^:(%d+)$")
    if not p or tonumber(p) > 65535 then return false end
  end
  return true
end

-- kind, required, max chars, format / enum set, group ("1"/"2"), extra
local S, I = "string", "integer"
local REQUEST = {
  { "title", S, true, 256 }, { "user_code", S, true, nil, f_user_code },
  { "amount", I, true, min = 1 }, { "merchant_uid", S, true, 40 }, { "name", S, true, 40 },
  { "tax_free", I, false, min = 0, le_amount = true }, { "currency", S, true, nil, f_currency },
  { "language", S, false, nil, LANG }, { "buyer_name", S, false, 16 },
  { "buyer_tel", S, true, 16, f_tel }, { "buyer_addr", S, false, 128 },
  { "buyer_email", S, false, 64, f_email }, { "buyer_postcode", S, false, 8 },
  { "custom_data", "json", false }, { "notice_url", S, false, nil, f_url },
  { "display_language", S, false, nil, LANG }, { "pay_methods", "list", true },
  { "direct", "object", false }, { "expired_at", "expiry", group = 1 },
  { "expire_at", "expiry", group = 2 },
}
local PAY_METHOD = {
  { "pg", S, false, nil, f_pg, group = 1 }, { "channelKey", S, false, nil, f_pg, group = 2 },
  { "pay_method", S, true, nil, PAY }, { "label", S, true, 64 },
}
local DIRECT = {
  { "pg", S, false, nil, f_pg, group = 1 }, { "channelKey", S, false, nil, f_pg, group = 2 },
  { "pay_method", S, true, nil, PAY },
}
for _, sc in ipairs { REQUEST, PAY_METHOD, DIRECT } do
  sc.known = {}
  for _, f in ipairs(sc) do sc.known[f[1]] = true end
end
REQUEST.sub = { pay_methods = PAY_METHOD, direct = DIRECT }

local function isint(v) return type(v) == "number" and v == floor(v) and v - v == 0 end

-- RFC 3339 with an offset -> unix seconds, or nil
local function rfc3339(s)
  local y, mo, d, h, mi, sec, frac, z = s:match(
    "^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if not y then return nil end
  if frac == "." then return nil end
  y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
  local mdays = { 31, (y % 4 == 0 and (y % 100 ~= 0 or y % 400 == 0)) and 29 or 28,
    31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
  if mo < 1 or mo > 12 or d < 1 or d > mdays[mo] or h > 23 or mi > 59 or sec > 60 then return nil end
  local off
  if z == "Z" or z == "z" then
    off = 0
  else
    local sign, oh, om = z:match("^([+-])(%d%d):(%d%d)$")
    if not sign or tonumber(oh) > 23 or tonumber(om) > 59 then return nil end
    off = (tonumber(oh) * 60 + tonumber(om)) * 60 * (sign == "-" and -1 or 1)
  end
  if sec == 60 then sec = 59 end
  -- days from civil (Howard Hinnant)
  local yy = mo <= 2 and y - 1 or y
  local era = floor(yy / 400)
  local yoe = yy - era * 400
  local doy = floor((153 * (mo + (mo > 2 and -3 or 9)) + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  local days = era * 146097 + doe - 719468
  return days * 86400 + h * 3600 + mi * 60 + sec - off
end

local check_json
-- custom_data: a JSON value; keys strings or exactly 1..n; no cycles, NaN/inf
function check_json(v, errs, path, depth, seen)
  local t = type(v)
  if t == "string" then
    if not ulen(v, false) then errs[#errs + 1] = { path, "format" } end
  elseif t == "number" then
    if v ~= v or v - v ~= 0 then errs[#errs + 1] = { path, "range" } end
  elseif t == "table" then
    if depth >= MAX_DEPTH or seen[v] then errs[#errs + 1] = { path, "range" }; return end
    seen[v] = true
    local n, nstr, nint = 0, 0, 0
    for k in pairs(v) do
      n = n + 1
      if type(k) == "string" then nstr = nstr + 1 elseif isint(k) and k >= 1 then nint = nint + 1 end
    end
    if nint == n and n > 0 and #v == n then
      for i = 1, n do check_json(v[i], errs, path .. "[" .. i .. "]", depth + 1, seen) end
    elseif nstr == n then
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = k end
      table.sort(keys)
      for _, k in ipairs(keys) do
        if not ulen(k, false) then errs[#errs + 1] = { path, "format" } end
        check_json(v[k], errs, path .. "." .. k, depth + 1, seen)
      end
    else
      errs[#errs + 1] = { path, "type" }
    end
    seen[v] = nil
  elseif t ~= "boolean" and not (t == "userdata" and v == cjson.null) then
    errs[#errs + 1] = { path, "type" }
  end
end

local function check_object(t, sc, errs, prefix, ctx)
  local g1
  for _, f in ipairs(sc) do
    local name, kind, req = f[1], f[2], f[3]
    local v = t[name]
    local path = prefix .. name
    if f.group == 1 then g1 = v ~= nil end
    if f.group == 2 then
      if v ~= nil and g1 then errs[#errs + 1] = { path, "conflict" }
      elseif v == nil and not g1 then errs[#errs + 1] = { prefix .. sc[_ - 1][1], "required" } end
    elseif v == nil and req then
      errs[#errs + 1] = { path, "required" }
    end
    if v ~= nil then
      if kind == S then
        local n = type(v) == "string" and ulen(v, true)
        if type(v) ~= "string" then errs[#errs + 1] = { path, "type" }
        elseif not n then errs[#errs + 1] = { path, "format" }
        elseif n == 0 and (req or f.group) then errs[#errs + 1] = { path, "empty" }
        elseif f[4] and n > f[4] then errs[#errs + 1] = { path, "too_long" }
        elseif type(f[5]) == "table" and not f[5][v] then errs[#errs + 1] = { path, "enum" }
        elseif type(f[5]) == "function" and not f[5](v) then errs[#errs + 1] = { path, "format" }
        end
      elseif kind == I then
        if name == "amount" then ctx.amount = nil end
        if not isint(v) then errs[#errs + 1] = { path, "type" }
        elseif v < f.min or v > MAX_SAFE then errs[#errs + 1] = { path, "range" }
        elseif f.le_amount and ctx.amount and v > ctx.amount then errs[#errs + 1] = { path, "range" }
        elseif name == "amount" then ctx.amount = v end
      elseif kind == "json" then
        check_json(v, errs, path, 0, {})
      elseif kind == "list" then
        local n, seq = 0, true
        if type(v) ~= "table" then errs[#errs + 1] = { path, "type" }
        else
          for k in pairs(v) do
            n = n + 1
            if not (isint(k) and k >= 1) then seq = false end
          end
          if not seq or #v ~= n then errs[#errs + 1] = { path, "type" }
          elseif n == 0 then errs[#errs + 1] = { path, "empty" }
          else
            local pairs_seen = {}
            for i = 1, n do
              local e, ep = v[i], path .. "[" .. i .. "]"
              if type(e) ~= "table" then errs[#errs + 1] = { ep, "type" }
              else
                check_object(e, sc.sub and sc.sub[name] or PAY_METHOD, errs, ep .. ".", ctx)
                local pg, ck, pm = e.pg, e.channelKey, e.pay_method
                if (pg == nil or type(pg) == "string") and (ck == nil or type(ck) == "string")
                  and (pm == nil or type(pm) == "string") then
                  local key = tostring(pg) .. "\0" .. tostring(ck) .. "\0" .. tostring(pm)
                  if pairs_seen[key] then errs[#errs + 1] = { ep, "duplicate" }
                  else pairs_seen[key] = i end
                end
              end
            end
          end
        end
      elseif kind == "object" then
        if type(v) ~= "table" then errs[#errs + 1] = { path, "type" }
        else check_object(v, DIRECT, errs, path .. ".", ctx) end
      elseif kind == "expiry" then
        local secs
        if type(v) == "number" then
          if not isint(v) then errs[#errs + 1] = { path, "type" }
          elseif v > MAX_SAFE or v < -MAX_SAFE then errs[#errs + 1] = { path, "range" }
          else secs = v end
        elseif type(v) == "string" then
          secs = rfc3339(v)
          if not secs then errs[#errs + 1] = { path, "format" } end
        else
          errs[#errs + 1] = { path, "type" }
        end
        if secs then
          if secs <= ctx.now then errs[#errs + 1] = { path, "expired" }
          elseif secs > MAX_EXPIRY then errs[#errs + 1] = { path, "range" }
          else ctx.expires = secs end
        end
      end
    end
  end
  -- unknown keys, sorted as the C core sorts them
  local unknown
  for k in pairs(t) do
    if type(k) ~= "string" or not sc.known[k] then
      unknown = unknown or {}
      unknown[#unknown + 1] = k
    end
  end
  if unknown then
    local rank = { string = 1, number = 2, boolean = 3 }
    table.sort(unknown, function(a, b)
      local ra, rb = rank[type(a)] or 4, rank[type(b)] or 4
      if ra ~= rb then return ra < rb end      -- strings, numbers, then the rest
      if ra <= 2 then return a < b end
      if ra == 3 then return not a and b end
      return false
    end)
    for _, k in ipairs(unknown) do errs[#errs + 1] = { prefix .. tostring(k), "unknown_field" } end
  end
end

--- Validates req against every rule; returns true, or false and a list of
-- {field, code}. `ctx.expires` receives the expiry in seconds.
function M.validate(req, now, ctx)
  ctx = ctx or {}
  ctx.now, ctx.amount, ctx.expires = now, nil, nil
  local errs = {}
  check_object(req, REQUEST, errs, "", ctx)
  if errs[1] then return false, errs end
  return true
end

--- Validates, then builds the body with two cjson.encode calls.
local ctx = {}
function M.encode(req, now)
  local ok, errs = M.validate(req, now, ctx)
  if not ok then return nil, errs end
  local info = {}
  for k, v in next, req do
    if k ~= "expired_at" and k ~= "expire_at" then info[k] = v end
  end
  return cjson.encode({ payment_info = cjson.encode(info), expired_at = ctx.expires })
end

return M
