-- bench/cold.lua - where the client's time over raw libcurl goes when each
-- request starts from cold caches, as in bench-http (the sandbox runs on
-- the same CPU between any two requests and evicts what the client
-- touched). A model, not a timing: callgrind's cache simulation counts
-- the cache lines a request misses in the last level it simulates (I1 and
-- D1 32 KB, LL 512 KB: one core's L2 on the bench machine), by shared
-- object and function, for
--   raw-same  bench/raw_curl.c with PLINK_EVICT (the bench's limit)
--   c-path    the client's handle sending a body encoded once (h:create)
--   client    client:create(req)
-- each writing over 4 MB (bench/evict.c) before every request. A request's
-- count is (300 requests - 100 requests) / 200, so the set-up cancels out.
-- On the bench machine each such line cost roughly 20-25 ns of wall time
-- (the client's ~730 extra lines against its 12-20 us over raw-same).
--
--   make bench-cold        (valgrind; about two minutes)
--
-- The child runs (under valgrind): lua5.4 bench/cold.lua --child MODE N URL CA
local MODE, CHILD_N, CHILD_URL, CHILD_CA = arg[2], tonumber(arg[3]), arg[4], arg[5]

local function request(seq)
  local now = os.time()
  return {
    title = "Bench order", user_code = "imp12345678", amount = 10000,
    merchant_uid = ("cold-%d-%d"):format(now, seq), name = "Item", currency = "KRW",
    buyer_tel = "010-1234-5678", expired_at = now + 3600,
    pay_methods = { { pg = "INIpayTest", pay_method = "card", label = "Card" } },
  }
end

if arg[1] == "--child" then
  local link = require "portone.link"
  local protocol = require "portone.link.protocol"
  local touch = require("evict").touch
  local client = link.new({ base_url = CHILD_URL, cainfo = CHILD_CA, timeout = 120 })
  -- 100 request tables used in turn, as bench-http's client does
  local reqs = {}
  for i = 1, 100 do reqs[i] = request(i) end
  for i = 1, 20 do assert(client:create(reqs[i])) end
  local h, url = client._h, CHILD_URL .. protocol.PATH
  local heads = protocol.headers(client:_cfg(nil), true)
  local body = assert(link.encode(request(0)))
  collectgarbage()
  if MODE == "client" then
    for i = 1, CHILD_N do touch(); assert(client:create(reqs[i % 100 + 1])) end
  else
    for _ = 1, CHILD_N do touch(); assert(type(h:create("POST", url, heads, body, 2)) == "table") end
  end
  client:close()
  return
end

local sandbox = require "portone.sandbox"
local link = require "portone.link"
local protocol = require "portone.link.protocol"

local RAW = os.getenv("RAW_CURL") or "build/raw_curl"
local LUA_CPATH = os.getenv("LUA_CPATH") or ""

local function sh(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

-- the certificate (cert also the CA file), and raw_curl's inputs beside it
local tls = require("helpers.sandbox").tls_cert()
local dir, cert, keypem = tls.dir, tls.cert, tls.key

local function write(path, s)
  local f = assert(io.open(path, "w"))
  f:write(s)
  f:close()
end

local VALGRIND = "valgrind --tool=callgrind --cache-sim=yes --I1=32768,8,64 --D1=32768,8,64"
  .. " --LL=524288,8,64 --callgrind-out-file=%s"

-- callgrind's output: self cost of each (object, function), the events
-- named on its `events:` line (names are compressed: "(n) name" once,
-- then "(n)"; the line after `calls=` is a call's inclusive cost, skipped)
local function load(path)
  local names, ev, costs = {}, nil, {}
  local ob, fn, skip = "?", "?", false
  local function name(kind, s)
    local id, rest = s:match("^%((%d+)%)%s*(.*)$")
    if not id then return s end
    if rest ~= "" then names[kind .. id] = rest end
    return names[kind .. id] or "?"
  end
  for line in io.lines(path) do
    local tag, v = line:match("^(%a+)=(.*)$")
    if tag == "ob" then ob = name("ob", v)
    elseif tag == "fn" then fn = name("fn", v)
    elseif tag == "cob" then name("ob", v)
    elseif tag == "cfn" then name("fn", v)
    elseif tag == "fl" or tag == "fi" or tag == "fe" or tag == "cfi" or tag == "cfl" then name("fl", v)
    elseif tag == "calls" then skip = true
    elseif line:match("^events:") then
      ev = {}
      for e in line:gmatch("%S+") do ev[#ev + 1] = e end
      table.remove(ev, 1)
    elseif line:match("^[%d%+%-%*]") then
      if skip then
        skip = false
      else
        local key = ob .. "\0" .. fn
        local t = costs[key] or {}
        costs[key] = t
        local i = 0
        for x in line:gmatch("%S+") do
          if i > 0 then t[ev[i]] = (t[ev[i]] or 0) + tonumber(x) end
          i = i + 1
        end
      end
    end
  end
  return costs
end

-- LL misses of a request, by "object\0function" (the eviction left out)
local function per_request(run)
  local a, b = load(run(100)), load(run(300))
  local d = {}
  for key, t in pairs(b) do
    if not key:find("evict", 1, true) then
      local s = a[key] or {}
      local function delta(e) return ((t[e] or 0) - (s[e] or 0)) / 200 end
      d[key] = { i = delta("ILmr"), d = delta("DLmr") + delta("DLmw"), ir = delta("Ir") }
    end
  end
  return d
end

local function by_object(d)
  local o = {}
  for key, v in pairs(d) do
    local ob = key:match("^([^%z]*)"):match("([^/]+)$") or "?"
    ob = ob:gsub("%.so[%.%d]*$", ""):gsub("^lua5%.4$", "lua (interpreter)")
      :gsub("^raw_curl$", "raw_curl (own)")
    local t = o[ob] or { i = 0, d = 0, ir = 0 }
    o[ob] = t
    t.i, t.d, t.ir = t.i + v.i, t.d + v.d, t.ir + v.ir
  end
  return o
end

local sb = assert(sandbox.start({ port = 0, tls = { cert = cert, key = keypem } }))
local ok, err = pcall(function()
  local url = sb.url
  -- raw_curl's inputs: the client's headers and a body of the bench's request
  local c = link.new({ base_url = url, cainfo = cert })
  local heads = protocol.headers(c:_cfg(nil), true)
  c:close()
  write(dir .. "/same.txt", table.concat(heads, "\n") .. "\nExpect:\n")
  write(dir .. "/body.json", assert(link.encode(request(0))))
  local runs = {
    { "raw-same", function(n)
      local out = ("%s/raw.%d"):format(dir, n)
      assert(sh(("echo %d | PLINK_EVICT=1 " .. VALGRIND .. " %s %s %s %s %s >/dev/null 2>&1")
        :format(n, out, RAW, url .. protocol.PATH, dir .. "/body.json", dir .. "/same.txt", cert)),
        "raw_curl under valgrind failed")
      return out
    end },
  }
  for _, mode in ipairs({ "c-path", "client" }) do
    runs[#runs + 1] = { mode, function(n)
      local out = ("%s/%s.%d"):format(dir, mode, n)
      assert(sh(("LUA_CPATH='%s' " .. VALGRIND .. " lua5.4 bench/cold.lua --child %s %d %s %s"
        .. " >/dev/null 2>&1"):format(LUA_CPATH, out, mode, n, url, cert)),
        mode .. " under valgrind failed")
      return out
    end }
  end
  local res, objs, names = {}, {}, {}
  for _, r in ipairs(runs) do
    res[r[1]] = per_request(r[2])
    for ob, t in pairs(by_object(res[r[1]])) do
      objs[ob] = objs[ob] or {}
      objs[ob][r[1]] = t
      names[ob] = true
    end
  end
  print(("bench-cold: last-level cache lines missed a request over HTTPS (callgrind model;"
    .. " instructions + data), %s"):format(_VERSION))
  print(("  %-20s %18s %18s %18s"):format("object (I + D lines)", "raw-same", "c-path", "client"))
  local list = {}
  for ob in pairs(names) do list[#list + 1] = ob end
  local function total(ob)
    local t = objs[ob].client or objs[ob]["raw-same"] or { i = 0, d = 0 }
    return t.i + t.d
  end
  table.sort(list, function(x, y) return total(x) > total(y) end)
  local sums = {}
  for _, ob in ipairs(list) do
    local cells = {}
    for _, r in ipairs(runs) do
      local t = objs[ob][r[1]] or { i = 0, d = 0 }
      sums[r[1]] = (sums[r[1]] or 0) + t.i + t.d
      cells[#cells + 1] = ("%5.0f = %4.0f + %3.0f"):format(t.i + t.d, t.i, t.d)
    end
    if total(ob) >= 1 then print(("  %-20s %18s %18s %18s"):format(ob, (table.unpack or unpack)(cells))) end
  end
  print(("  %-20s %18.0f %18.0f %18.0f"):format("all", sums["raw-same"], sums["c-path"], sums.client))
  print(("  client - raw-same: %.0f lines; client - c-path: %.0f (validate + encode, Lua glue)")
    :format(sums.client - sums["raw-same"], sums.client - sums["c-path"]))
  -- the functions of the client's extra over c-path
  local rows = {}
  for key, v in pairs(res.client) do
    local p = res["c-path"][key] or { i = 0, d = 0 }
    local dl = v.i + v.d - p.i - p.d
    if dl >= 3 then rows[#rows + 1] = { key = key, dl = dl, v = v } end
  end
  table.sort(rows, function(x, y) return x.dl > y.dl end)
  print("  client over c-path, by function (lines; unnamed: no symbols in that object):")
  for k = 1, math.min(12, #rows) do
    local ob, fn = rows[k].key:match("^([^%z]*)%z(.*)$")
    print(("    %+5.0f  %-40s %s"):format(rows[k].dl, fn:sub(1, 40), ob:match("([^/]+)$") or ob))
  end
end)
sb:stop()
require("helpers.sandbox").cleanup_certs()
if not ok then error(err, 0) end
