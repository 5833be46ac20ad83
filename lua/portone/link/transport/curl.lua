--- Blocking transport over one libcurl easy handle (`core.http_new`).
-- One handle per client: libcurl keeps its connection cache in the handle, so
-- consecutive requests reuse one keep-alive connection.
-- @module portone.link.transport.curl
local core = require "portone.link.core"

local M = {}
local T = {}
T.__index = T

--- Makes a transport.
-- @tparam table opts `{timeout, connect_timeout, cainfo, proxy, max_response_bytes,
-- user_agent}` (a User-Agent request header, when given, wins over `user_agent`)
-- (seconds and bytes, already checked by the client)
-- @return the transport
function M.new(opts)
  local h = core.http_new({
    timeout = opts.timeout,
    connect_timeout = opts.connect_timeout,
    cainfo = opts.cainfo,
    proxy = opts.proxy,
    max_response_bytes = opts.max_response_bytes,
    user_agent = opts.user_agent,
    share = opts.share,   -- the client's TLS sessions and DNS cache (core.share_new)
    -- no caller reads the headers of a 2xx (only Retry-After of errors):
    -- the table is not built for them
    error_headers_only = true,
  })
  return setmetatable({ h = h }, T)
end

--- Sends one request and waits for the answer (blocking).
-- @tparam string method `"POST"`, `"PUT"`, `"GET"`, ...
-- @tparam string url the absolute URL
-- @tparam table headers a list of `"Name: value"` strings
-- @tparam[opt] string body the request body (nil: none)
-- @tparam[opt=2] int max_sends most times the request may go out: libcurl
--   re-sends one whose reused keep-alive connection died before any response
--   byte; the send after `max_sends` is refused (an error, `sent = true`)
-- @return `status, body, headers, sends` (headers: lower-case name to value;
--   nil for a 2xx answer, which no caller reads; sends: times the request
--   went out), or `nil, info` with `info = {kind = "transport"|"timeout",
--   message =, curl_code =, sent =, sends =, too_large =}` (see
--   `portone.link.protocol.transport_error`)
function T:request(method, url, headers, body, max_sends)
  if self.closed then
    return nil, { kind = "transport", message = "the transport is closed", sent = false, sends = 0 }
  end
  return self.h:request(method, url, headers, body, max_sends)
end

--- The C handle (`core.http_new`), for the client's fast create call
-- (`h:create`, see src/http_easy.c).
function T:handle()
  return self.h
end

--- Connections libcurl opened so far.
-- @treturn int
function T:connections()
  return self.h:connections()
end

--- Frees the curl handle (also done by its __gc). Safe to call twice.
function T:close()
  if not self.closed then
    self.closed = true
    self.h:close()
  end
end

--- Blocks the calling thread (nanosleep; no busy wait).
T.sleep = core.sleep
--- The same sleep, on the module (`sleep(seconds)`).
M.sleep = core.sleep

return M
