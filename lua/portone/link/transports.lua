--- What `link.new` and `link.rest.new` share about transports: the names,
-- the default choice, and the rule for a base URL.
-- @module portone.link.transports
local M = {}

--- Transport modules by name. Adding a transport is one line here.
M.MODULES = {
  curl = "portone.link.transport.curl",
  ngx = "portone.link.transport.ngx",
}

--- The default transport: inside nginx always `"ngx"` (in a phase without
-- cosockets it fails with a clear error instead of blocking the worker),
-- elsewhere `"curl"`.
function M.default_name()
  if select(3, require("portone.link.transport.ngx").available()) ~= false then return "ngx" end
  return "curl"
end

--- Opens the transport `name` (default: `default_name()`) with `opts`.
-- @return the transport, or nil when there is no transport by that name
function M.open(name, opts)
  local mod = M.MODULES[name or M.default_name()]
  return mod and require(mod).new(opts)
end

-- True for an octet libcurl and nginx read as the decimal number it looks
-- like: 0..255, no leading zero (libcurl reads 010 as octal; 099 or 256 is
-- no address, so it goes to DNS).
local function octet(s)
  return s ~= nil and (s == "0" or s:find("^[1-9]%d?%d?$") ~= nil) and tonumber(s) <= 255
end

--- True for the loopback hosts plain http may go to: `localhost`,
-- `127.x.x.x` (an address: `127.999.0.1` is a name that DNS resolves, to
-- any host), `[::1]`.
function M.is_loopback(host)
  host = host:lower()
  if host == "localhost" or host == "[::1]" then return true end
  local a, b, c = host:match("^127%.(%d+)%.(%d+)%.(%d+)$")
  return octet(a) and octet(b) and octet(c) or false
end

--- Checks a base URL: http(s), a host (a name of letters, digits, `.`, `_`
-- and `-`, or an address), an optional port, no user info, query or
-- fragment; plain http only to loopback unless `o.insecure`; a path only
-- with `o.path`. Trailing slashes are dropped.
-- @return the URL, or nil and what is wrong with it ("must use https ...")
function M.check_base_url(url, o)
  o = o or {}
  local scheme, authority, path = url:match("^(%a[%w+.-]*)://([^/?#]*)(.*)$")
  if not scheme then return nil, "must be an absolute http(s) URL" end
  scheme = scheme:lower()
  if scheme ~= "https" and scheme ~= "http" then
    return nil, "must use https (got " .. scheme .. "://)"
  end
  if authority:find("@", 1, true) then return nil, "must not carry user info" end
  local host = authority:match("^(%[[%x:.]+%])") or authority:match("^([^:]+)")
  if not host or host == "" then return nil, "has no host" end
  -- a name or an address as written: white space or a control character
  -- would only fail inside every later call (libcurl refuses the URL), and
  -- libcurl decodes %XX in a host, so an escape could name another one
  if not (host:find("^[%w._-]+$") or host:find("^%[[%x:.]+%]$")) then return nil, "has a bad host" end
  local port = authority:sub(#host + 1)
  if port ~= "" and not port:find("^:%d+$") then return nil, "has a bad port" end
  if path:find("[?#%s%c]") then return nil, "must not carry a query, fragment or spaces" end
  path = path:gsub("/+$", "")
  if path ~= "" and not o.path then return nil, "must be scheme://host[:port] with no path" end
  if scheme == "http" and not M.is_loopback(host) and o.insecure ~= true then
    return nil, "is plain http to a non-loopback host; use https"
  end
  return scheme .. "://" .. authority .. path
end

--- The `proxy` option for libcurl on a checked base URL: `proxy` when one
-- is given; else `""` (no proxy) for a loopback host, else nil (libcurl's
-- own `http_proxy`/`https_proxy`/`ALL_PROXY`/`no_proxy` handling). libcurl
-- takes the environment's proxy for loopback hosts too: a plain-http call
-- to the sandbox would carry the bearer token (and getToken's imp_secret)
-- in clear text to that proxy, and a proxy cannot reach this machine's
-- loopback anyway.
-- @tparam string url a URL `check_base_url` returned
-- @tparam[opt] string proxy the caller's proxy option
function M.proxy_for(url, proxy)
  if proxy ~= nil then return proxy end
  local authority = url:match("^%a[%w+.-]*://([^/?#]*)") or ""
  local host = authority:match("^(%[[%x:.]+%])") or authority:match("^([^:]+)") or ""
  if M.is_loopback(host) then return "" end
  return nil
end

return M
