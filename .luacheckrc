std = "max"
max_line_length = 110
exclude_files = { "build/", "lua_modules/" }
files["spec/"] = { std = "+busted" }
-- Code that runs inside nginx sees the ngx global.
read_globals = { "ngx" }
color = false
