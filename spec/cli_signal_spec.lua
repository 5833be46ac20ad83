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

  -- In a child interpreter (this suite's, with this cpath) whose shell set
  -- the dispositions first: prints what `code` prints, or nothing if a
  -- signal killed it.
  local function child(shell_first, code)
    -- the suite's interpreter ($PLINK_LUA: the ASan one, which the ASan
    -- build of the module needs)
    local lua = os.getenv("PLINK_LUA")
      or (rawget(_G, "jit") and "luajit" or (_VERSION == "Lua 5.1" and "lua5.1" or "lua5.4"))
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write('package.cpath = ', ("%q"):format(package.cpath), '\n',
      'local sig = require "portone.cli.signal"\n',
      'local function send(name)\n',
      '  local p = io.popen("kill -" .. name .. " $PPID"); p:read("*a"); p:close()\n',
      'end\n',
      code, "\n")
    f:close()
    local cmd = ("%q"):format(shell_first .. " exec " .. lua .. " " .. script)
    local p = assert(io.popen("exec 2>/dev/null; sh -c " .. cmd))
    local out = p:read("*a")
    p:close()
    os.remove(script)
    return out
  end

  it("counts SIGHUP too, unless it was ignored before (nohup)", function()
    local count = 'sig.catch(); send("HUP"); print(sig.count() .. " " .. sig.SIGHUP)'
    assert.equal("1 1\n", child("trap - HUP;", count))
    assert.equal("0 1\n", child("trap '' HUP;", count))
  end)

  -- (SIGTERM: the stand-alone interpreters put their own SIGINT handler in
  -- place while a script runs, whatever the shell set)
  it("release() puts back what catch() found: an ignored signal is taken, then ignored again", function()
    assert.equal("alive\n", child("trap '' TERM;",
      'sig.catch(); send("TERM"); assert(sig.count() == 1); sig.release(); send("TERM"); print("alive")'))
    -- and a default one ends the process again
    assert.equal("", child("trap - TERM;", 'sig.catch(); sig.release(); send("TERM"); print("alive")'))
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

-- portone.cli.fsync: the batch's results file on the disk (fdatasync), and
-- the directory of a file it creates (fsync); the C side reads io's file
-- handles, whose layout differs between Lua 5.4, 5.1 and LuaJIT.
describe("portone.cli.fsync", function()
  local fsync = require "portone.cli.fsync"

  it("syncs a file (flushing what is buffered first), and a pipe is nothing to sync", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:setvbuf("full")
    f:write("buffered")
    assert.is_true(fsync.file(f))
    local r = assert(io.open(path, "rb"))
    assert.equal("buffered", r:read("*a"))    -- the flush came first
    r:close()
    f:close()
    os.remove(path)
    local p = assert(io.popen("cat > /dev/null", "w"))
    assert.is_true(fsync.file(p))
    p:close()
  end)

  it("syncs a directory; a missing one is nil and a message", function()
    assert.is_true(fsync.dir("/tmp"))
    local ok, err = fsync.dir("/nonexistent-portone-dir")
    assert.is_nil(ok)
    assert.matches("/nonexistent%-portone%-dir: ", err)
  end)

  it("raises for a closed file or something that is not a file handle", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:close()
    os.remove(path)
    assert.has_error(function() fsync.file(f) end)
    assert.has_error(function() fsync.file("path") end)
    assert.has_error(function() fsync.dir() end)
  end)
end)
