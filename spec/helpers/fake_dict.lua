--- A double of an `ngx.shared` dict, for specs that run sandbox modules
-- outside nginx. Values live in `d.data` (a spec may drop a key there, as an
-- eviction would); expiry times are not kept (nothing here outlives a spec).
-- `d.refuse(key, value)` returning true makes safe_set, safe_add and lpush
-- fail as lua-nginx-module's do when a value does not fit: "no memory", and
-- a safe_set has freed the old value first, so the key is gone.
local M = {}

function M.new()
  local d = { data = {}, refuse = function() return false end }
  function d:get(k) return self.data[k] end
  function d:set(k, v) self.data[k] = v; return true end
  function d:safe_set(k, v)
    if self.refuse(k, v) then
      self.data[k] = nil
      return nil, "no memory"
    end
    self.data[k] = v
    return true
  end
  function d:add(k, v)
    if self.data[k] ~= nil then return false, "exists" end
    self.data[k] = v
    return true
  end
  function d:safe_add(k, v)
    if self.data[k] ~= nil then return false, "exists" end
    return self:safe_set(k, v)
  end
  function d:replace(k, v)
    if self.data[k] == nil then return false, "not found" end
    self.data[k] = v
    return true
  end
  function d:incr(k, by, init)
    local v = self.data[k]
    if v == nil then
      if init == nil then return nil, "not found" end
      v = init
    end
    self.data[k] = v + by
    return self.data[k]
  end
  function d:delete(k) self.data[k] = nil end
  -- lists: data[k] = { head, ..., tail }; an lpush refused by `refuse`
  -- answers "no memory", as lua-nginx-module's does (it never evicts)
  function d:lpush(k, v)
    if self.refuse(k, v) then return false, "no memory" end
    local l = self.data[k] or {}
    table.insert(l, 1, v)
    self.data[k] = l
    return #l
  end
  local function pop(self, k, i)
    local l = self.data[k]
    if not l then return nil end
    local v = table.remove(l, i or #l)
    if #l == 0 then self.data[k] = nil end
    return v
  end
  function d:lpop(k) return pop(self, k, 1) end
  function d:rpop(k) return pop(self, k) end
  function d:llen(k) return self.data[k] and #self.data[k] or 0 end
  function d:flush_all() self.data = {} end
  function d.flush_expired() return 0 end
  --- The keys held now, sorted (for specs that drop each in turn).
  function d:keys()
    local out = {}
    for k in pairs(self.data) do out[#out + 1] = k end
    table.sort(out)
    return out
  end
  return d
end

return M
