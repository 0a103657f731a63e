package nginx_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
)

// TestExampleConf checks that nginx/example.conf, with its paths pointed
// into a temporary directory and this tree, passes `nginx -t`. (nginx -t
// does not run init_by_lua; nginxtest.Start runs the snippet's for real.)
func TestExampleConf(t *testing.T) {
	bin := nginxtest.Binary(t)
	dir := t.TempDir()
	snippets := nginxtest.SnippetDir(t)
	ca := newTestCA(t)
	fbCert, fbKey := ca.issue(t, "fallback.invalid").writeFiles(t, dir, "fallback")
	httpSnippet := nginxtest.HTTPSnippet(t, dir, "unix:/run/certserver/certs.sock", "127.0.0.1:9402")

	b, err := os.ReadFile(filepath.Join(snippets, "example.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(b)
	for _, r := range []struct{ old, new string }{
		{"/etc/nginx/snippets/certserver-http.conf", httpSnippet},
		{"/etc/nginx/snippets/", snippets + "/"},
		{"/etc/certserver/fallback.crt", fbCert},
		{"/etc/certserver/fallback.key", fbKey},
		{"/var/log/nginx/", dir + "/"},
		{"/run/nginx.pid", filepath.Join(dir, "nginx.pid")},
	} {
		if !strings.Contains(conf, r.old) {
			t.Fatalf("example.conf no longer mentions %s; update this test", r.old)
		}
		conf = strings.ReplaceAll(conf, r.old, r.new)
	}
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	out, err := exec.Command(bin, "-t", "-p", dir+"/", "-c", path, "-e", filepath.Join(dir, "error.log")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "test is successful") {
		t.Fatalf("nginx -t on example.conf: %v\n%s", err, out)
	}
}

// TestConfigureRejectsMisuse starts nginx with the http snippet's configure
// call given a bad option and expects nginx to refuse to start, naming it.
func TestConfigureRejectsMisuse(t *testing.T) {
	bin := nginxtest.Binary(t)
	for _, tc := range []struct {
		desc   string
		option string
		want   string
	}{
		{desc: "unknown option", option: "negative_tl = 3,", want: `option "negative_tl" is unknown`},
		{desc: "wrong type", option: `lru_size = "big",`, want: `option "lru_size" must be a number`},
		{desc: "out of range", option: "connect_timeout_ms = 0,", want: `option "connect_timeout_ms" must be positive`},
		{desc: "error_ttl 0 (never ask again)", option: "error_ttl = 0,", want: `option "error_ttl" must be positive`},
		{desc: "prewarm_wait forever", option: "prewarm_wait = math.huge,", want: `option "prewarm_wait" must be at most 3600`},
		{desc: "prewarm_wait over an hour", option: "prewarm_wait = 3601,", want: `option "prewarm_wait" must be at most 3600`},
		{desc: "lock shorter than a request", option: "lock_timeout_ms = 200,", want: `option "lock_timeout_ms" must exceed`},
		{desc: "bad socket", option: `socket = "localhost:9401",`, want: `option "socket" must be`},
		{desc: "undeclared dict", option: `shared_dict = "nope",`, want: `lua_shared_dict that is not declared: nope`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			dir := t.TempDir()
			httpSnippet := nginxtest.HTTPSnippet(t, dir, "unix:/run/certserver/certs.sock", "127.0.0.1:9402")
			b, err := os.ReadFile(httpSnippet)
			if err != nil {
				t.Fatal(err)
			}
			// The snippet's socket line goes, so that the bad socket case
			// is the only socket.
			s := strings.Replace(string(b), "configure{\n", "configure{\n        "+tc.option+"\n", 1)
			s = strings.Replace(s, `socket = "unix:/run/certserver/certs.sock",`, "", 1)
			if !strings.Contains(s, tc.option) {
				t.Fatal("cannot insert the option into the snippet")
			}
			if err := os.WriteFile(httpSnippet, []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
			conf := filepath.Join(dir, "nginx.conf")
			if err := os.WriteFile(conf, []byte(minimalConf(dir, httpSnippet)), 0o644); err != nil {
				t.Fatal(err)
			}
			// An nginx that accepts the option runs in the foreground: the
			// timeout ends it, and the test fails at once instead of
			// hanging until go test's own timeout.
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, "-p", dir+"/", "-c", conf, "-e", filepath.Join(dir, "error.log")).CombinedOutput()
			if err == nil || ctx.Err() != nil {
				t.Fatalf("nginx started with %s", tc.option)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("nginx output does not say %q:\n%s", tc.want, out)
			}
		})
	}
}

// minimalConf is an nginx.conf that only includes httpSnippet; nginx
// fails before it would listen anywhere.
func minimalConf(dir, httpSnippet string) string {
	return "daemon off;\nmaster_process off;\npid " + filepath.Join(dir, "nginx.pid") + ";\n" +
		"load_module " + filepath.Join(nginxtest.ModulesDir, "ndk_http_module.so") + ";\n" +
		"load_module " + filepath.Join(nginxtest.ModulesDir, "ngx_http_lua_module.so") + ";\n" +
		"events {}\nhttp {\n    include " + httpSnippet + ";\n}\n"
}
