-- Name resolution never holds poll(0): a transfer that times out while the
-- threaded resolver still waits for DNS must not join the resolver thread
-- (libcurl 7.88 did, holding the caller until getaddrinfo gave up).
-- The resolver is a silent or slow DNS server on loopback, reached through
-- a private resolv.conf (helpers.resolver): glibc's getaddrinfo and
-- libcurl's threaded resolver run exactly as in a user's process.
local resolver = require "helpers.resolver"
local helper = require "helpers.sandbox"

local ok, why = resolver.available()

describe("async client with a slow resolver #nosan", function()
  if not ok then
    pending("skipped: " .. why)
    return
  end

  it("poll(0) does not wait for a resolver that never answers when the connect timeout fires", function()
    local dns = resolver.start(-1)
    -- resolv.conf says 2 s per try; the connect timeout is 0.5 s. Without
    -- CURLOPT_QUICK_EXIT the poll that reports the timeout blocked ~1.5 s.
    local out = dns:run("spec/tools/poll_probe.lua", { "https://api.slow.test", 2, 4, "", 0.5 })
    dns:stop()
    local r = resolver.parse(out)
    assert.equal(2, r.failed, out)
    assert.truthy(tostring(r.err):find("Resolving_timed_out", 1, true), out)
    assert.is_true(r.worst_ms < 250, out)
  end)

  it("poll(0) keeps running while a resolver takes a second to answer, then the call succeeds", function()
    local sb = helper.start()
    local port = sb.url:match(":(%d+)$")
    local dns = resolver.start(1000)
    local out = dns:run("spec/tools/poll_probe.lua", {
      "http://localhost.slow.test:" .. port, 3, 6, "", 3 })
    dns:stop()
    sb:stop()
    local r = resolver.parse(out)
    assert.equal(3, r.ok, out)
    -- about a second of polls at 1 ms each: the loop kept its pace
    assert.is_true(r.polls > 200, out)
    assert.is_true(r.worst_ms < 250, out)
  end)
end)
