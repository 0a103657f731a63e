package nginx_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
)

// TestLuaValidName holds the Lua module's valid_name, in the nginx that
// runs it, to store/hostname/testdata/names.tsv, the table of SNI names
// that store/hostname's TestSharedNames holds the sidecar's check to: the
// Lua accepts every name marked valid or lua-only and refuses every name
// marked invalid. nginx runs the check in init_by_lua, writes what it
// found to a file, and stops with an error that says the check is done
// (nginx -t does not run init_by_lua; this way no port is opened).
func TestLuaValidName(t *testing.T) {
	bin := nginxtest.Binary(t)
	table, err := filepath.Abs(filepath.Join("..", "store", "hostname", "testdata", "names.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "valid_name.out")
	luaDir := filepath.Join(filepath.Dir(nginxtest.SnippetDir(t)), "lua")
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(validNameConf(dir, luaDir, table, out)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	b, err := exec.CommandContext(ctx, bin, "-p", dir+"/", "-c", conf, "-e", filepath.Join(dir, "error.log")).CombinedOutput()
	if err == nil || ctx.Err() != nil || !strings.Contains(string(b), validNameDone) {
		t.Fatalf("nginx did not stop after the check (%v):\n%s", err, b)
	}
	b, err = os.ReadFile(out)
	if err != nil {
		t.Fatalf("init_by_lua wrote no result: %v", err)
	}
	report := string(b)
	m := regexp.MustCompile(`(?m)^checked (\d+)$`).FindStringSubmatch(report)
	if m == nil {
		t.Fatalf("the Lua check did not finish:\n%s", report)
	}
	if n, _ := strconv.Atoi(m[1]); n < 20 {
		t.Fatalf("the Lua checked %d names; the table is cut short", n)
	}
	if strings.Count(report, "\n") > 1 {
		t.Fatalf("valid_name disagrees with names.tsv:\n%s", report)
	}
}

// validNameDone is the error that stops nginx once the check is done.
const validNameDone = "valid_name check done"

// validNameConf is an nginx.conf whose init_by_lua checks every row of
// table with valid_name and writes to out a line per disagreement, then
// "checked N".
func validNameConf(dir, luaDir, table, out string) string {
	return "daemon off;\nmaster_process off;\npid " + filepath.Join(dir, "nginx.pid") + ";\n" +
		"load_module " + filepath.Join(nginxtest.ModulesDir, "ndk_http_module.so") + ";\n" +
		"load_module " + filepath.Join(nginxtest.ModulesDir, "ngx_http_lua_module.so") + ";\n" +
		"events {}\nhttp {\n" +
		"    lua_package_path " + strconv.Quote(filepath.Join(luaDir, "?.lua")+";;") + ";\n" +
		"    init_by_lua_block {\n" + `
        local valid_name = require("resty.certserver").valid_name
        local want = { valid = true, ["lua-only"] = true, invalid = false }
        local lines, n = {}, 0
        local no = 0
        for line in io.lines(` + strconv.Quote(table) + `) do
            no = no + 1
            if line ~= "" and line:sub(1, 1) ~= "#" then
                local name, verdict = line:match("^([^\t]+)\t([^\t]+)\t[^\t]*$")
                if want[verdict] == nil then
                    lines[#lines + 1] = "line " .. no .. ": malformed row"
                elseif valid_name(name) ~= want[verdict] then
                    lines[#lines + 1] = "line " .. no .. ": valid_name(" .. name
                        .. ") = " .. tostring(valid_name(name)) .. ", table says " .. verdict
                end
                n = n + 1
            end
        end
        lines[#lines + 1] = "checked " .. n
        local f = assert(io.open(` + strconv.Quote(out) + `, "w"))
        f:write(table.concat(lines, "\n"), "\n")
        f:close()
        error("` + validNameDone + `")
` + "    }\n}\n"
}
