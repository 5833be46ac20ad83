-- spec/tools/echo_server.lua - a tiny HTTP/1.1 server (luasocket) whose
-- answer body is the request's header lines, one a line, in order.
--
--   lua5.4 spec/tools/echo_server.lua PORT_FILE
--
-- Binds 127.0.0.1 on a free port and writes it to PORT_FILE. The path
-- /status/NNN answers with status NNN (and an X-Echo header); anything else
-- with 200. Keeps the connection open between requests. Runs until killed.
local socket = require "socket"

local server = assert(socket.bind("127.0.0.1", 0))
local _, port = server:getsockname()
local f = assert(io.open(arg[1], "w")); f:write(port, "\n"); f:close()

local function serve(c)
  c:settimeout(10)
  while true do
    local line = c:receive("*l")
    if not line then return end
    local path = line:match("^%u+ (%S+)") or "/"
    local heads, len = {}, 0
    while true do
      local h = c:receive("*l")
      if not h or h == "" then break end
      heads[#heads + 1] = h
      local n = h:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)")
      if n then len = tonumber(n) end
    end
    if len > 0 then c:receive(len) end
    local status = tonumber(path:match("^/status/(%d+)")) or 200
    -- the request line too (as "Request-Line: ..."): the specs check the method and URL
    local body = "Request-Line: " .. line .. "\n" .. table.concat(heads, "\n") .. "\n"
    -- /bigheaders/N: N more header lines of 1 KB each
    local pads = tonumber(path:match("^/bigheaders/(%d+)")) or 0
    local extra = ("X-Pad: " .. ("p"):rep(1015) .. "\r\n"):rep(pads)
    c:send(("HTTP/1.1 %d X\r\nContent-Length: %d\r\nX-Echo: yes\r\n%s\r\n%s")
      :format(status, #body, extra, body))
  end
end

while true do
  local c = server:accept()
  if c then serve(c); c:close() end
end
