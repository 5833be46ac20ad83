-- portone.cli.signal counts SIGINT and SIGTERM instead of dying (the batch
-- command reads the count between polls).
local sig = require "portone.cli.signal"

-- io.popen, not os.execute: system() ignores SIGINT in the caller while it waits
local function send(name)
  local p = assert(io.popen("kill -" .. name .. " $PPID"))
  p:read("*a")
  p:close()
end

describe("portone.cli.signal", function()
  after_each(function() sig.release() end)

  it("counts SIGINT and SIGTERM and remembers the first", function()
    assert.is_true(sig.catch())
    assert.same({ 0, 0 }, { sig.count() })
    send("INT")
    assert.same({ 1, sig.SIGINT }, { sig.count() })
    send("TERM")
    assert.same({ 2, sig.SIGINT }, { sig.count() })
  end)

  it("catch() starts a new count", function()
    assert.is_true(sig.catch())
    send("TERM")
    assert.is_true(sig.catch())
    assert.same({ 0, 0 }, { sig.count() })
    send("TERM")
    assert.same({ 1, sig.SIGTERM }, { sig.count() })
  end)
end)
