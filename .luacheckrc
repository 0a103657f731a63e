-- luacheck settings for the nginx-side Lua (lua/). scripts/test.sh and the
-- before-stop hook run `luacheck --std ngx_lua lua` from the repository
-- root, where luacheck finds this file (also from lua/, one level up).
std = "ngx_lua"
max_line_length = 80
-- Plain output, so that scripts can read the summary line.
color = false
