package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestParseNginxDump: the files of an `nginx -T` dump are read with their
// includes expanded in place (globs in name order, relative to the main
// file's directory), every directive with its own file and line, and a
// *_by_lua_block kept as Lua text whatever braces and quotes it holds.
func TestParseNginxDump(t *testing.T) {
	dump := `# configuration file /etc/nginx/nginx.conf:
user www-data;   # the workers
include /etc/nginx/modules-enabled/*.conf;
http {
    include snippets/a.conf;
    server {
        listen 443 ssl;
        ssl_certificate "/etc/ssl/my cert.pem";
        include snippets/ssl.conf;
    }
}

# configuration file /etc/nginx/modules-enabled/50-lua.conf:
load_module modules/lua.so;

# configuration file /etc/nginx/modules-enabled/10-ndk.conf:
load_module modules/ndk.so;

# configuration file /etc/nginx/snippets/a.conf:
init_by_lua_block {
    -- a comment with a } brace
    local s = "}{"
    local t = { a = [[ } ]] }
    require("resty.certserver").configure{
        socket = "unix:/run/x.sock",
    }
}
lua_shared_dict certserver_certs 64m;

# configuration file /etc/nginx/snippets/ssl.conf:
ssl_certificate_by_lua_block { require("resty.certserver").ssl_certificate() }
`
	files, main := splitNginxDump(dump)
	if main != "/etc/nginx/nginx.conf" || len(files) != 5 {
		t.Fatalf("main %q, %d files", main, len(files))
	}
	conf, err := parseNginxConfig(files, main)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range conf {
		got = append(got, d.name+" "+strings.Join(d.args, " ")+" @"+d.where())
	}
	want := []string{
		"user www-data @/etc/nginx/nginx.conf:1",
		"load_module modules/ndk.so @/etc/nginx/modules-enabled/10-ndk.conf:1",
		"load_module modules/lua.so @/etc/nginx/modules-enabled/50-lua.conf:1",
		"http  @/etc/nginx/nginx.conf:3",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("top level:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	http := conf[3]
	initLua := child(http.block, "init_by_lua_block")
	if initLua == nil || initLua.where() != "/etc/nginx/snippets/a.conf:1" || !strings.Contains(initLua.lua, `socket = "unix:/run/x.sock"`) {
		t.Fatalf("init_by_lua_block %+v", initLua)
	}
	if d := child(http.block, "lua_shared_dict"); d == nil || d.where() != "/etc/nginx/snippets/a.conf:9" {
		t.Fatalf("lua_shared_dict after the Lua block: %+v", d)
	}
	srv := child(http.block, "server")
	if c := child(srv.block, "ssl_certificate"); c == nil || c.args[0] != "/etc/ssl/my cert.pem" || c.line != 7 {
		t.Fatalf("ssl_certificate %+v", c)
	}
	if h := child(srv.block, "ssl_certificate_by_lua_block"); h == nil || !isCertserverHook(h) || h.file != "/etc/nginx/snippets/ssl.conf" {
		t.Fatalf("hook %+v", h)
	}
}

// TestParseNginxErrors: what the parser refuses names the file and line.
func TestParseNginxErrors(t *testing.T) {
	for _, tt := range []struct{ desc, conf, want string }{
		{desc: "unclosed block", conf: "http {\n server {\n", want: "/c.conf:3: unexpected end of file"},
		{desc: "stray brace", conf: "events {}\n}\n", want: "/c.conf:2: unexpected \"}\""},
		{desc: "unclosed Lua block", conf: "init_by_lua_block {\n local t = {\n", want: "/c.conf:1: the Lua block is not closed"},
		{desc: "missing include", conf: "include /nonexistent/x.conf;\n", want: "/c.conf:1: include /nonexistent/x.conf"},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := parseNginxConfig(dumpFiles{"/c.conf": tt.conf}, "/c.conf")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// TestParseNginxFromDisk: when nginx -t fails, the files are read from
// disk, includes by glob.
func TestParseNginxFromDisk(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("nginx.conf", "http {\n    include sites/*;\n}\n")
	write("sites/b", "server { listen 8443 ssl; }\n")
	write("sites/a", "server { listen 443 ssl; }\n")
	conf, err := parseNginxConfig(diskFiles{}, filepath.Join(dir, "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	servers := children(conf[0].block, "server")
	if len(servers) != 2 || servers[0].file != filepath.Join(dir, "sites/a") || child(servers[1].block, "listen").args[0] != "8443" {
		t.Fatalf("servers %+v", servers)
	}
}
