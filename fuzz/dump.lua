local function dump(v, ind, seen)
  ind = ind or ""; seen = seen or {}
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) ~= "table" then return tostring(v) .. (math.type(v) and "("..math.type(v)..")" or "") end
  if seen[v] then return "<cycle>" end
  seen[v] = true
  local out = {"{"}
  for k, x in pairs(v) do out[#out+1] = ind .. "  [" .. dump(k) .. "] = " .. dump(x, ind .. "  ", seen) end
  seen[v] = nil
  return table.concat(out, "\n") .. "\n" .. ind .. "}"
end
return dump
