-- scripts/check-doc-links (run by `make docs`) fails on each kind of broken
-- docs it promises to catch, and passes a sound tree.
local C = require "helpers.cli"

local function site(t, pages)
  os.execute("rm -rf " .. C.quote(t:path("site")))
  for name, html in pairs(pages) do
    local path = t:path("site/" .. name)
    os.execute("mkdir -p " .. C.quote(path:match("^(.*)/")))
    C.write(path, html)
  end
  local code = C.exit_code(os.execute("lua5.4 scripts/check-doc-links " .. C.quote(t:path("site"))
    .. " > " .. C.quote(t:path("o")) .. " 2> " .. C.quote(t:path("e"))))
  return code, C.slurp(t:path("e"))
end

describe("scripts/check-doc-links", function()
  local t
  setup(function() t = C.tmpdir() end)
  teardown(function() t:cleanup() end)

  local sound = {
    ["index.html"] = '<a href="topics/a.md.html#Intro">A</a> <a href="https://portone.io">x</a>',
    ["topics/a.md.html"] = '<a name = "Intro"></a><a href="../modules/m.html#f">f</a>'
      .. '<link href="../style.css">',
    ["modules/m.html"] = '<a name="f"></a><a href="../index.html">home</a>',
    ["style.css"] = "",
  }
  local function with(over)
    local p = {}
    for k, v in pairs(sound) do p[k] = v end
    for k, v in pairs(over) do p[k] = v or nil end
    return p
  end

  -- the checker exits 1 on the sound tree with `over`'s pages, saying `what`
  local function fails_saying(over, what)
    local code, err = site(t, with(over))
    assert.equal(1, code)
    assert.truthy(err:find(what, 1, true), err)
  end

  it("passes a sound tree", function()
    assert.equal(0, (site(t, sound)))
  end)

  it("fails on a missing page, a missing anchor, a link out of the tree", function()
    fails_saying({ ["modules/m.html"] = '<a name="f"></a><a href="../nope.html">x</a>' },
      "modules/m.html: broken link '../nope.html'")
    fails_saying({ ["topics/a.md.html"] = '<a href="../modules/m.html#g">g</a><link href="../style.css">' },
      "no anchor 'g' in modules/m.html")
    fails_saying({ ["modules/m.html"] = '<a name="f"></a><a href="../../README.md">r</a>' }, "leaves")
  end)

  it("fails on a page no link reaches, and on the contributors' DESIGN notes", function()
    fails_saying({ ["modules/orphan.html"] = "<p>alone</p>" },
      "modules/orphan.html: not reachable from index.html")
    fails_saying({ ["modules/m.html"] = '<a name="f"></a><a href="../index.html">h</a> see DESIGN §4' },
      "mentions 'DESIGN'")
  end)
end)
