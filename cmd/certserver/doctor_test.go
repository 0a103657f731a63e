package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
)

// doctorSetup is one host's certserver and nginx for a doctor test: a
// running serve, and an nginx configuration (written, or running).
type doctorSetup struct {
	dir       string
	serve     *served
	socket    string
	fallback  [2]string // certificate and key files
	nginxConf string
}

// doctorOptions describes a setup; the zero value is a good one whose
// workers run as nobody in the group certserver gives the socket to.
type doctorOptions struct {
	socketGroup string // config's socket_group; "" leaves it out
	socketMode  string // config's socket_mode; "" leaves it out
	user        string // nginx's user directive; default "nobody GROUP", GROUP the test's own
	noLua       bool   // leave out the load_module lines
	fallback    string // the ssl_certificate; default the fallback written
	sidecar     string // the snippet's socket; default where serve listens
	privateDir  bool   // leave the socket's directory closed to others (0700)
}

// newDoctorSetup starts serve with a socket in a directory nobody may
// enter, writes the fallback certificate and, from o, nginx.conf.
func newDoctorSetup(t *testing.T, o doctorOptions) *doctorSetup {
	t.Helper()
	dir := t.TempDir()
	// t.TempDir's directories are private (0700): open them to the
	// worker user, as /run is.
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s := &doctorSetup{dir: dir, socket: filepath.Join(dir, "run", "certs.sock")}
	cfg := fmt.Sprintf("[store]\npath = %q\n[certs]\nsocket = %q\n", filepath.Join(dir, "store"), s.socket)
	if o.socketGroup != "" {
		cfg += fmt.Sprintf("socket_group = %q\n", o.socketGroup)
	}
	if o.socketMode != "" {
		cfg += fmt.Sprintf("socket_mode = %q\n", o.socketMode)
	}
	cfg += "[challenge]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"
	s.serve = startServe(t, cfg)

	chain, key := genCert(t, time.Now().Add(90*24*time.Hour), "fallback.invalid")
	s.fallback = [2]string{filepath.Join(dir, "fallback.crt"), filepath.Join(dir, "fallback.key")}
	for i, b := range [][]byte{chain, key} {
		if err := os.WriteFile(s.fallback[i], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	if o.privateDir {
		if err := os.Chmod(filepath.Dir(s.socket), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if o.user == "" {
		o.user = "nobody " + ownGroup(t)
	}
	if o.fallback == "" {
		o.fallback = s.fallback[0]
	}
	if o.sidecar == "" {
		o.sidecar = "unix:" + s.socket
	}
	var b strings.Builder
	fmt.Fprintf(&b, "user %s;\npid %s;\n", o.user, filepath.Join(dir, "nginx.pid"))
	if !o.noLua {
		for _, m := range []string{"ndk_http_module.so", "ngx_http_lua_module.so"} {
			fmt.Fprintf(&b, "load_module %s;\n", filepath.Join(nginxtest.ModulesDir, m))
		}
	}
	fmt.Fprintf(&b, "events {}\nhttp {\n    include %s;\n", nginxtest.HTTPSnippet(t, dir, o.sidecar, "127.0.0.1:9"))
	fmt.Fprintf(&b, "    server {\n        listen 127.0.0.1:1 ssl;\n        ssl_certificate %s;\n        ssl_certificate_key %s;\n", o.fallback, s.fallback[1])
	fmt.Fprintf(&b, "        include %s;\n    }\n}\n", filepath.Join(nginxtest.SnippetDir(t), "certserver-ssl.conf"))
	s.nginxConf = filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(s.nginxConf, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// ownGroup is the name of the group this process (and so serve) runs as.
func ownGroup(t *testing.T) string {
	t.Helper()
	g, err := user.LookupGroupId(fmt.Sprint(os.Getegid()))
	if err != nil {
		t.Fatal(err)
	}
	return g.Name
}

// doctor runs `certserver doctor` on the setup with extra arguments.
func (s *doctorSetup) doctor(t *testing.T, args ...string) (int, string) {
	t.Helper()
	e, stdout, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN_TOKEN": testToken})
	args = append([]string{"doctor", "--config", s.serve.config, "--admin", s.serve.admin, "--nginx-conf", s.nginxConf}, args...)
	code := run(context.Background(), e, args)
	if stderr.String() != "" {
		t.Errorf("doctor wrote to stderr: %s", stderr)
	}
	return code, stdout.String()
}

// checkLine returns the line of check in doctor's output and the fix
// under it ("" when none).
func checkLine(t *testing.T, out, check string) (line, fix string) {
	t.Helper()
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(l[strings.Index(l, f[1]):], check+"  ") {
			if i+1 < len(lines) {
				fix, _ = strings.CutPrefix(strings.TrimSpace(lines[i+1]), "fix: ")
				if fix == strings.TrimSpace(lines[i+1]) {
					fix = ""
				}
			}
			return l, fix
		}
	}
	t.Fatalf("no %q line in:\n%s", check, out)
	return "", ""
}

// configLineOf returns "file:line" of the first line of file matching re.
func configLineOf(t *testing.T, file, re string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if regexp.MustCompile(re).MatchString(l) {
			return fmt.Sprintf("%s:%d", file, i+1)
		}
	}
	t.Fatalf("%s has no line matching %s", file, re)
	return ""
}

// TestDoctorBrokenSetups: each broken setup makes doctor exit 1 with a
// FAIL line for the check that finds it, naming what it found and the
// line to change; the good one passes every static check.
func TestDoctorBrokenSetups(t *testing.T) {
	t.Parallel()
	nobody, err := lookupAccount("nobody", "")
	if err != nil {
		t.Fatalf("these tests need the user nobody: %v", err)
	}
	nogroup := nobody.group
	own := ownGroup(t)
	tests := []struct {
		desc  string
		opts  doctorOptions
		check string
		found string // in the FAIL line
		fix   func(s *doctorSetup) string
	}{
		{desc: "socket group nginx's workers are not in", opts: doctorOptions{user: "nobody " + nogroup},
			check: "socket access", found: "nginx's workers (nobody) cannot connect to ",
			fix: func(s *doctorSetup) string {
				return configLineOf(t, s.serve.config, `^\[certs\]`) + ": add socket_group = \"" + nogroup + "\" under [certs]"
			}},
		{desc: "socket group set to one nginx's workers are not in", opts: doctorOptions{user: "nobody " + nogroup, socketGroup: own},
			check: "socket access", found: "they are not in its group",
			fix: func(s *doctorSetup) string {
				return configLineOf(t, s.serve.config, `^socket_group`) + ": socket_group = \"" + nogroup + "\""
			}},
		{desc: "socket mode without group write", opts: doctorOptions{socketMode: "0640"},
			check: "socket access", found: "are in the socket's group but cannot write to",
			fix: func(s *doctorSetup) string {
				return configLineOf(t, s.serve.config, `^socket_mode`) + ": socket_mode = \"0660\""
			}},
		{desc: "socket directory closed to nginx's workers", opts: doctorOptions{privateDir: true},
			check: "socket access", found: "nginx's workers (nobody) cannot enter ",
			fix: func(s *doctorSetup) string {
				return "chgrp " + own + " " + filepath.Dir(s.socket) + " && chmod g+x " + filepath.Dir(s.socket)
			}},
		{desc: "nginx's user does not exist", opts: doctorOptions{user: "no-such-user-here"},
			check: "worker user", found: "nginx's workers run as no-such-user-here (user at ",
			fix: func(s *doctorSetup) string {
				return s.nginxConf + ":1: user www-data;"
			}},
		{desc: "missing fallback certificate", opts: doctorOptions{fallback: "/nonexistent/fallback.crt"},
			check: "fallback cert", found: "/nonexistent/fallback.crt (",
			fix: func(s *doctorSetup) string {
				return configLineOf(t, s.nginxConf, `ssl_certificate /nonexistent`) + ": certserver fallback-cert --out /etc/certserver"
			}},
		{desc: "Lua module not loaded", opts: doctorOptions{noLua: true},
			check: "lua module", found: `the Lua module is not loaded: unknown directive "lua_`,
			fix: func(s *doctorSetup) string {
				return s.nginxConf + ": add at the top, before events {}: load_module " + ndkModule
			}},
		{desc: "snippet's socket not serve's", opts: doctorOptions{sidecar: "unix:/run/elsewhere/certs.sock"},
			check: "socket path", found: "nginx asks unix:/run/elsewhere/certs.sock (",
			fix: func(s *doctorSetup) string {
				return configLineOf(t, filepath.Join(s.dir, "certserver-http.conf"), `socket = "unix:/run/elsewhere`) +
					`: socket = "unix:` + s.socket + `",`
			}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			s := newDoctorSetup(t, tt.opts)
			code, out := s.doctor(t, "--name", "none.example.test")
			if code != exitFailure {
				t.Errorf("exit code %d, want %d", code, exitFailure)
			}
			line, fix := checkLine(t, out, tt.check)
			if !strings.HasPrefix(line, "FAIL") || !strings.Contains(line, tt.found) {
				t.Errorf("%s line %q, want FAIL with %q\n%s", tt.check, line, tt.found, out)
			}
			if want := tt.fix(s); !strings.HasPrefix(fix, want) {
				t.Errorf("%s fix %q, want it to start with %q\n%s", tt.check, fix, want, out)
			}
		})
	}

	t.Run("good", func(t *testing.T) {
		t.Parallel()
		s := newDoctorSetup(t, doctorOptions{})
		_, out := s.doctor(t, "--name", "none.example.test")
		for _, check := range []string{"config", "nginx", "lua module", "snippets", "socket path", "worker user", "socket access", "fallback cert"} {
			if line, _ := checkLine(t, out, check); !strings.HasPrefix(line, "ok") {
				t.Errorf("%s: %q, want ok\n%s", check, line, out)
			}
		}
		// nginx is not running: the handshake fails, on a name serve
		// has no certificate for.
		if line, _ := checkLine(t, out, "handshake"); !strings.HasPrefix(line, "FAIL") {
			t.Errorf("handshake %q, want FAIL", line)
		}
		// The same as JSON.
		code, out := s.doctor(t, "--name", "none.example.test", "--json")
		var rep doctorReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("--json: %v\n%s", err, out)
		}
		if last := rep.Checks[len(rep.Checks)-1]; code != exitFailure || rep.OK || len(rep.Checks) != 9 ||
			last.Check != "handshake" || last.Status != checkFail || last.Fix == "" {
			t.Errorf("--json: exit %d, %+v; want 9 checks, the handshake failed with a fix", code, rep)
		}
	})
}

// TestDoctorHandshake runs doctor against a running nginx (nginxtest)
// and serve holding a certificate for a name: with the snippet pointing at
// serve's socket every check passes and the name the admin API lists gets
// its certificate; with the snippet pointing elsewhere nginx serves its
// fallback, and the handshake check says so.
func TestDoctorHandshake(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		desc      string
		elsewhere bool
	}{{desc: "good"}, {desc: "snippet's socket elsewhere", elsewhere: true}} {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()
			s := newDoctorSetup(t, doctorOptions{})
			const name = "shop.example.test"
			chain, key := genCert(t, time.Now().Add(60*24*time.Hour), name)
			crt, keyFile := filepath.Join(s.dir, "shop.crt"), filepath.Join(s.dir, "shop.key")
			for f, b := range map[string][]byte{crt: chain, keyFile: key} {
				if err := os.WriteFile(f, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			e, stdout, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN_TOKEN": testToken})
			if code := run(context.Background(), e, []string{"import", "--admin", s.serve.admin, "--cert", crt, "--key", keyFile}); code != exitOK {
				t.Fatalf("import: exit %d\n%s%s", code, stdout, stderr)
			}
			// Managed, and pending: the renewer is off.
			if code := run(context.Background(), e, []string{"domains", "add", "--admin", s.serve.admin, name}); code != exitOK {
				t.Fatalf("domains add: exit %d\n%s%s", code, stdout, stderr)
			}
			sidecar := "unix:" + s.socket
			if tt.elsewhere {
				sidecar = "unix:" + filepath.Join(s.dir, "run", "other.sock")
			}
			ngx := nginxtest.Start(t, nginxtest.Options{Sidecar: sidecar, FallbackCert: s.fallback[0], FallbackKey: s.fallback[1]})
			s.nginxConf = filepath.Join(ngx.Dir(), "nginx.conf")

			code, out := s.doctor(t)
			line, fix := checkLine(t, out, "handshake")
			if !tt.elsewhere {
				if code != exitOK || !strings.Contains(out, "every check passed") {
					t.Errorf("exit code %d, want every check passed:\n%s", code, out)
				}
				if want := "ok    handshake      nginx at " + ngx.HTTPSAddr() + " serves " + name + " the certificate certserver holds"; !strings.HasPrefix(line, want) {
					t.Errorf("handshake %q, want %q", line, want)
				}
				return
			}
			if code != exitFailure {
				t.Errorf("exit code %d, want %d", code, exitFailure)
			}
			if want := "serves " + name + " its fallback certificate " + s.fallback[0]; !strings.HasPrefix(line, "FAIL") || !strings.Contains(line, want) {
				t.Errorf("handshake %q, want FAIL with %q\n%s", line, want, out)
			}
			if !strings.Contains(fix, "nginx's error log") {
				t.Errorf("handshake fix %q, want a pointer to nginx's error log", fix)
			}
			if line, _ := checkLine(t, out, "socket path"); !strings.HasPrefix(line, "FAIL") {
				t.Errorf("socket path %q, want FAIL", line)
			}
		})
	}
}

// TestSocketGroupWarning: serve warns when no user nginx's workers are
// likely to run as can connect to the socket, naming socket_group and
// the group to set, and says nothing when one can.
func TestSocketGroupWarning(t *testing.T) {
	t.Parallel()
	nobody, err := lookupAccount("nobody", "")
	if err != nil {
		t.Fatalf("this test needs the user nobody: %v", err)
	}
	own := ownGroup(t)
	dir := t.TempDir()
	conf := func(body string) string {
		p := filepath.Join(dir, fmt.Sprintf("nginx%d.conf", len(body)))
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	nobodyConf := conf("user nobody;\nevents {}\n")
	certs := func(group string, mode fileMode) certsConfig {
		return certsConfig{Socket: "/run/certserver/certs.sock", SocketGroup: group, SocketMode: mode}
	}
	for _, tt := range []struct {
		desc  string
		certs certsConfig
		conf  string
		warn  bool
	}{
		{desc: "socket given to a group nobody is not in", certs: certs(own, 0o660), conf: nobodyConf, warn: true},
		{desc: "socket_group left out: certserver's own group", certs: certs("", 0o660), conf: nobodyConf, warn: true},
		{desc: "socket given to nobody's group", certs: certs(nobody.group, 0o660), conf: nobodyConf},
		{desc: "socket open to everyone", certs: certs(own, 0o666), conf: nobodyConf},
		{desc: "socket writable by everyone, not readable", certs: certs(own, 0o662), conf: nobodyConf},
		{desc: "socket readable by everyone, not writable", certs: certs(own, 0o664), conf: nobodyConf, warn: true},
		{desc: "socket_mode 0 is the default 0660", certs: certs(nobody.group, 0), conf: nobodyConf},
		{desc: "no socket", certs: certsConfig{Listen: "127.0.0.1:9401"}, conf: nobodyConf},
		{desc: "nginx's user does not exist here", certs: certs(own, 0o660), conf: conf("user no-such-user-here;\n")},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			if os.Geteuid() == nobody.uid {
				t.Fatal("this test cannot run as nobody")
			}
			w := socketGroupWarning(tt.certs, tt.conf)
			if (w != nil) != tt.warn {
				t.Fatalf("warning %+v, want one: %v", w, tt.warn)
			}
			if w == nil {
				return
			}
			attrs := fmt.Sprint(w.attrs...)
			for _, want := range []string{"socket_group", "users_checked", "nobody", `socket_group = "` + nobody.group + `" in [certs]`} {
				if !strings.Contains(attrs, want) {
					t.Errorf("warning %s %s does not name %q", w.msg, attrs, want)
				}
			}
		})
	}

	// serve logs it at start.
	sdir := t.TempDir()
	s := startServe(t, fmt.Sprintf("[store]\npath = %q\n[certs]\nsocket = %q\nsocket_group = %q\n[challenge]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
		filepath.Join(sdir, "store"), filepath.Join(sdir, "run", "certs.sock"), own))
	want := socketGroupWarning(certsConfig{Socket: "x", SocketGroup: own, SocketMode: 0o660}, stockNginxConf)
	log := s.log.String()
	switch {
	case want == nil && strings.Contains(log, "level=WARN"):
		t.Errorf("serve warns, though a likely nginx worker user here is in group %s:\n%s", own, log)
	case want != nil && (!strings.Contains(log, "level=WARN msg=\""+want.msg) || !strings.Contains(log, "socket_group="+own)):
		t.Errorf("serve log has no socket group warning:\n%s", log)
	}
}

func TestLoopbackOf(t *testing.T) {
	for listen, want := range map[string]string{
		"443": "127.0.0.1:443", "*:443": "127.0.0.1:443", "0.0.0.0:8443": "127.0.0.1:8443",
		"[::]:443": "[::1]:443", "192.0.2.7:443": "192.0.2.7:443", "unix:/run/n.sock": "",
	} {
		if got := loopbackOf(listen); got != want {
			t.Errorf("loopbackOf(%q) = %q, want %q", listen, got, want)
		}
	}
}
