package main

import (
	"context"
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
	if !strings.Contains(log, "certificates on unix socket "+sock) {
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
	tests := []struct {
		desc string
		cfg  string
		vars map[string]string
		want string
	}{
		{desc: "no token", cfg: "[certs]\nsocket = \"" + filepath.Join(dir, "a.sock") + "\"\n", want: "set admin.token_file or the environment variable CERTSERVER_ADMIN_TOKEN"},
		{desc: "missing token file", cfg: "[certs]\nsocket = \"" + filepath.Join(dir, "b.sock") + "\"\n[admin]\ntoken_file = \"/nonexistent/token\"\n", want: "admin.token_file: open /nonexistent/token"},
		{desc: "socket path is a file", cfg: "[certs]\nsocket = \"" + filepath.Join(dir, "certserver.toml") + "\"\n", vars: map[string]string{"CERTSERVER_ADMIN_TOKEN": "t"}, want: "not a socket"},
	}
	for i, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			cfgPath := filepath.Join(dir, "certserver.toml")
			cfg := "[store]\npath = \"" + filepath.Join(dir, "store", string(rune('a'+i))) + "\"\n" + tc.cfg
			if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			e, _, stderr := testEnv(tc.vars)
			if code := run(context.Background(), e, []string{"serve", "--config", cfgPath}); code != exitFailure {
				t.Fatalf("exit code %d, want %d\n%s", code, exitFailure, stderr)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q does not contain %q", stderr, tc.want)
			}
		})
	}
}
