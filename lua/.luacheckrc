-- luacheck settings for the nginx-side Lua; the hook runs
-- `luacheck --std ngx_lua lua` from the repository root.
std = "ngx_lua"
max_line_length = 80
