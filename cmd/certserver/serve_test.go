package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
	"github.com/certserver/certserver/renewer"
)

// TestServe runs `certserver serve` in-process: it imports a certificate
// through the admin API, fetches it from the unix socket, and stops
// cleanly when its context ends.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "certs.sock")
	cfgPath := filepath.Join(dir, "certserver.toml")
	cfg := `
[store]
path = "` + filepath.Join(dir, "store") + `"
[certs]
socket = "` + sock + `"
[challenge]
listen = "127.0.0.1:0"
[tls_alpn]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[log]
level = "debug"
`
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e, _, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN_TOKEN": testToken})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- run(ctx, e, []string{"serve", "--config", cfgPath}) }()

	waitFor(t, "the start-up log line", func() bool { return strings.Contains(stderr.String(), "certserver started") })
	log := stderr.String()
	if !strings.Contains(log, "certificates on unix socket "+sock) || !strings.Contains(log, "ACME challenges on http://127.0.0.1:") ||
		!strings.Contains(log, "TLS-ALPN-01 challenges on 127.0.0.1:") || !strings.Contains(log, "issuance off") {
		t.Errorf("start-up line does not say where it listens:\n%s", log)
	}
	m := regexp.MustCompile(`admin=(http://127\.0\.0\.1:\d+)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no admin address in the log:\n%s", log)
	}
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket: %v %v", fi, err)
	}

	chain, key := genCert(t, time.Now().Add(30*24*time.Hour), "served.example.com")
	cl, err := client.New(m[1], testToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ImportCertificate(ctx, &api.ImportRequest{ChainPEM: string(chain), KeyPEM: string(key)}); err != nil {
		t.Fatalf("import: %v", err)
	}

	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Get("http://certs/v1/certs/served.example.com")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), string(chain)) || !strings.HasSuffix(string(body), string(key)) {
		t.Fatalf("GET: %d %q", resp.StatusCode, body)
	}
	if strings.Contains(stderr.String(), testToken) || strings.Contains(stderr.String(), "PRIVATE KEY") {
		t.Error("the log holds the token or a key")
	}
	// Ready: the store answers and the certificate endpoint accepts.
	resp, err = http.Get(m[1] + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ready\n" {
		t.Fatalf("GET /readyz: %d %q, want 200 ready", resp.StatusCode, body)
	}

	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("serve exit code %d\n%s", code, stderr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop")
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if !strings.Contains(stderr.String(), "certserver stopped") {
		t.Errorf("no stop line:\n%s", stderr)
	}
}

func TestServeStartFailures(t *testing.T) {
	dir := t.TempDir()
	token := map[string]string{"CERTSERVER_ADMIN_TOKEN": "t"}
	acme := "[certs]\nsocket = \"\"\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[acme]\ndirectory = \"https://127.0.0.1:1/dir\"\nagree_terms = true\n"
	notPEM, empty := filepath.Join(dir, "roots.pem"), filepath.Join(dir, "eab.key")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	twoLines := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(twoLines, []byte("t\nu\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().String()
	tests := []struct {
		desc string
		cfg  string
		vars map[string]string
		want string
	}{
		{desc: "no token", cfg: "[certs]\nsocket = \"" + filepath.Join(dir, "a.sock") + "\"\n", want: "set admin.token_file or the environment variable CERTSERVER_ADMIN_TOKEN"},
		{desc: "missing token file", cfg: "[certs]\nsocket = \"" + filepath.Join(dir, "b.sock") + "\"\n[admin]\ntoken_file = \"/nonexistent/token\"\n", want: "admin.token_file: open /nonexistent/token"},
		{desc: "token file of two lines", cfg: "[certs]\nsocket = \"" + filepath.Join(dir, "d.sock") + "\"\n[admin]\ntoken_file = \"" + twoLines + "\"\n",
			want: "admin.token_file: token file " + twoLines + ": holds 2 lines: want the token alone on one line"},
		{desc: "socket path is a file", cfg: "[certs]\nsocket = \"" + filepath.Join(dir, "certserver.toml") + "\"\n", vars: map[string]string{"CERTSERVER_ADMIN_TOKEN": "t"}, want: "not a socket"},
		{desc: "missing ca_roots", cfg: acme + "ca_roots = \"/nonexistent/roots.pem\"\n", vars: token, want: "acme.ca_roots: open /nonexistent/roots.pem"},
		{desc: "ca_roots without a certificate", cfg: acme + "ca_roots = \"" + notPEM + "\"\n", vars: token, want: "acme.ca_roots: " + notPEM + " holds no PEM certificate"},
		{desc: "missing eab_hmac_file", cfg: acme + "eab_kid = \"k\"\neab_hmac_file = \"/nonexistent/eab\"\n", vars: token, want: "acme.eab_hmac_file: open /nonexistent/eab"},
		{desc: "empty eab_hmac_file", cfg: acme + "eab_kid = \"k\"\neab_hmac_file = \"" + empty + "\"\n", vars: token, want: "acme.eab_hmac_file: " + empty + " is empty"},
		{desc: "agree_terms missing", cfg: "[acme]\ndirectory = \"https://127.0.0.1:1/dir\"\n", vars: token, want: "acme.agree_terms"},
		{desc: "challenge port taken", cfg: "[certs]\nsocket = \"" + filepath.Join(dir, "c.sock") + "\"\n[challenge]\nlisten = \"" + taken + "\"\n", vars: token, want: "challenge endpoint"},
		{desc: "tls-alpn-01 port taken", cfg: "[certs]\nsocket = \"" + filepath.Join(dir, "e.sock") + "\"\n[tls_alpn]\nlisten = \"" + taken + "\"\n", vars: token, want: "tls-alpn-01 responder: listen tcp " + taken},
	}
	for i, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			cfgPath := filepath.Join(dir, "certserver.toml")
			cfg := "[store]\npath = \"" + filepath.Join(dir, "store", string(rune('a'+i))) + "\"\n" + tc.cfg
			if !strings.Contains(cfg, "[challenge]") {
				cfg += "[challenge]\nlisten = \"127.0.0.1:0\"\n"
			}
			if !strings.Contains(cfg, "[admin]") {
				cfg += "[admin]\nlisten = \"127.0.0.1:0\"\n"
			}
			if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			e, _, stderr := testEnv(tc.vars)
			// A start that does not fail serves until this bound, then
			// exits 0 and fails the test.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if code := run(ctx, e, []string{"serve", "--config", cfgPath}); code != exitFailure {
				t.Fatalf("exit code %d, want %d\n%s", code, exitFailure, stderr)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q does not contain %q", stderr, tc.want)
			}
		})
	}
	// A failed start releases what it bound.
	if _, err := os.Lstat(filepath.Join(dir, "c.sock")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket left behind by a failed start: %v", err)
	}
}

// served is a `certserver serve` running in-process for a test.
type served struct {
	config string      // its configuration file
	admin  string      // admin API URL
	log    *syncBuffer // its standard error
	cancel context.CancelFunc
	done   chan int
}

// startServe runs `certserver serve` with the configuration document cfg
// and the admin token testToken until the test ends, and waits for its
// start line.
func startServe(t testing.TB, cfg string) *served {
	t.Helper()
	cfgPath := filepath.Join(t.TempDir(), "certserver.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e, _, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN_TOKEN": testToken})
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{config: cfgPath, log: stderr, cancel: cancel, done: make(chan int, 1)}
	go func() { s.done <- run(ctx, e, []string{"serve", "--config", cfgPath}) }()
	t.Cleanup(func() {
		if code := s.stop(t); code != exitOK {
			t.Errorf("serve exit code %d", code)
		}
		// Its issuer is gone: the next test's may use other resolvers.
		renewer.ForgetLegoResolvers()
		if t.Failed() {
			t.Logf("serve log:\n%s", stderr)
		}
	})
	waitFor(t, "the start-up log line", func() bool {
		select {
		case code := <-s.done:
			s.done <- code
			return true
		default:
		}
		return strings.Contains(stderr.String(), "certserver started")
	})
	m := regexp.MustCompile(`admin=(http://127\.0\.0\.1:\d+)`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("serve did not start:\n%s", stderr)
	}
	s.admin = m[1]
	return s
}

// stop stops serve and returns its exit code; calling it again returns the
// same code.
func (s *served) stop(t testing.TB) int {
	s.cancel()
	select {
	case code := <-s.done:
		s.done <- code
		return code
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
		return -1
	}
}

// TestServeIssuanceWiring runs serve with issuance and on-demand issuance
// on against a CA that does not answer: the start line says so, an added
// name is ordered and fails in the renewer's words, and a certificate
// request for an allowed unknown name brings it under management through
// the on-demand policy.
func TestServeIssuanceWiring(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadCA := "https://" + ln.Addr().String() + "/dir"
	ln.Close()
	s := startServe(t, `
[store]
path = "`+filepath.Join(dir, "store")+`"
[certs]
socket = ""
listen = "127.0.0.1:0"
[challenge]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[acme]
directory = "`+deadCA+`"
agree_terms = true
timeout = "10s"
[renewer]
idle_wait = "1s"
# No DNS server of the test's own here: pre-flight off, so that nothing
# asks the system's resolvers.
[preflight]
enabled = false
[on_demand]
allow = ["*.shops.example.com"]
`)
	log := s.log.String()
	if !strings.Contains(log, "issuance on from "+deadCA+", pre-flight off, on-demand on") {
		t.Errorf("start line does not say issuance and on-demand are on:\n%s", log)
	}
	certsAddr := regexp.MustCompile(`certs_tcp=(127\.0\.0\.1:\d+)`).FindStringSubmatch(log)
	if certsAddr == nil {
		t.Fatalf("no certificate endpoint address in:\n%s", log)
	}

	if code, out, errOut := runCLI(t, s.admin, "", "domains", "add", "ordered.example.com"); code != exitOK {
		t.Fatalf("domains add: %d %s %s", code, out, errOut)
	}
	var doc api.Domain
	waitFor(t, "the order to fail", func() bool {
		code, out, _ := runCLI(t, s.admin, "", "domains", "show", "--json", "ordered.example.com")
		return code == exitOK && json.Unmarshal([]byte(out), &doc) == nil && doc.State == "failing"
	})
	// A CA that cannot be reached fails the order, but the failure is the
	// CA's: the name waits for it without a failure counted.
	if doc.Failures != 0 || !strings.Contains(doc.LastError, "connection refused") {
		t.Errorf("failing record %+v, want the connection failure, not counted", doc)
	}

	resp, err := http.Get("http://" + certsAddr[1] + "/v1/certs/new.shops.example.com")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("certificate endpoint: %d, want 404", resp.StatusCode)
	}
	waitFor(t, "the on-demand name to be managed", func() bool {
		code, out, _ := runCLI(t, s.admin, "", "domains", "show", "--json", "new.shops.example.com")
		return code == exitOK && json.Unmarshal([]byte(out), &doc) == nil
	})
	if doc.Source != "on-demand" {
		t.Errorf("on-demand record %+v", doc)
	}
	// A name the policy refuses is not managed.
	resp, err = http.Get("http://" + certsAddr[1] + "/v1/certs/other.example.com")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	time.Sleep(200 * time.Millisecond)
	if code, _, _ := runCLI(t, s.admin, "", "domains", "show", "other.example.com"); code != exitFailure {
		t.Errorf("a refused on-demand name is managed")
	}

	if code := s.stop(t); code != exitOK || !strings.Contains(s.log.String(), "certserver stopped") {
		t.Errorf("stop: exit code %d\n%s", code, s.log)
	}
}
