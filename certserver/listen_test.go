package certserver

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckLoopback(t *testing.T) {
	tests := []struct {
		desc     string
		addr     string
		loopback bool // else refused with ErrNotLoopback
		bad      bool // else malformed, not ErrNotLoopback
	}{
		{desc: "127.0.0.1", addr: "127.0.0.1:9401", loopback: true},
		{desc: "127.0.0.0/8", addr: "127.1.2.3:9401", loopback: true},
		{desc: "localhost", addr: "localhost:9401", loopback: true},
		{desc: "LOCALHOST.", addr: "LOCALHOST.:9401", loopback: true},
		{desc: "[::1]", addr: "[::1]:9401", loopback: true},
		{desc: "port 0", addr: "127.0.0.1:0", loopback: true},
		{desc: "0.0.0.0", addr: "0.0.0.0:9401"},
		{desc: "bare port", addr: ":9401"},
		{desc: "10.1.2.3", addr: "10.1.2.3:9401"},
		{desc: "[::]", addr: "[::]:9401"},
		{desc: "public IPv6", addr: "[2001:db8::1]:9401"},
		{desc: "host name", addr: "certs.example.com:9401"},
		{desc: "no port", addr: "127.0.0.1", bad: true},
		{desc: "bad port", addr: "127.0.0.1:99999", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			err := CheckLoopback(tc.addr)
			switch {
			case tc.loopback && err != nil:
				t.Fatalf("CheckLoopback(%q) = %v, want nil", tc.addr, err)
			case tc.loopback:
			case err == nil:
				t.Fatalf("CheckLoopback(%q) = nil, want an error", tc.addr)
			case tc.bad == errors.Is(err, ErrNotLoopback):
				t.Fatalf("CheckLoopback(%q) = %v; wraps ErrNotLoopback = %v", tc.addr, err, !tc.bad)
			}
			if err != nil && !strings.Contains(err.Error(), tc.addr) {
				t.Errorf("error %q does not name the address", err)
			}
		})
	}
}

func TestNonLoopbackRefused(t *testing.T) {
	tests := []struct {
		desc string
		addr string
		ok   bool
	}{
		{desc: "0.0.0.0", addr: "0.0.0.0:9401"},
		{desc: "bare port", addr: ":9401"},
		{desc: "10.1.2.3", addr: "10.1.2.3:9401"},
		{desc: "[::]", addr: "[::]:9401"},
		{desc: "127.0.0.1", addr: "127.0.0.1:0", ok: true},
		{desc: "localhost", addr: "localhost:0", ok: true},
		{desc: "[::1]", addr: "[::1]:0", ok: true},
	}
	st := newTestStore(t)
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			_, cerr := NewCertEndpoint(CertEndpointConfig{Listen: tc.addr}, st, testLogger(t))
			_, aerr := NewAdminAPI(AdminConfig{Listen: tc.addr, Token: "t"}, st, testLogger(t))
			for what, err := range map[string]error{"certificate endpoint": cerr, "admin API": aerr} {
				if tc.ok {
					if err != nil {
						t.Errorf("%s: %v", what, err)
					}
					continue
				}
				if err == nil || !errors.Is(err, ErrNotLoopback) {
					t.Errorf("%s: error %v, want ErrNotLoopback", what, err)
					continue
				}
				if !strings.Contains(err.Error(), "private keys travel over this endpoint") {
					t.Errorf("%s: error %q does not say why", what, err)
				}
			}
			// The explicit option lets it through.
			if _, err := NewCertEndpoint(CertEndpointConfig{Listen: tc.addr, AllowNonLoopback: true}, st, testLogger(t)); err != nil {
				t.Errorf("with AllowNonLoopback: %v", err)
			}
		})
	}
}

func TestUnixSocket(t *testing.T) {
	st := newTestStore(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "certs.sock")
	e := startCertEndpoint(t, CertEndpointConfig{Socket: sock}, st)

	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("%s is %v, not a socket", sock, fi.Mode())
	}
	if got := fi.Mode().Perm(); got != 0o660 {
		t.Errorf("socket mode %#o, want 0660", got)
	}
	if got := e.Addrs()[0].String(); got != sock {
		t.Errorf("Addrs()[0] = %q, want %q", got, sock)
	}
	entries, _ := os.ReadDir(filepath.Dir(sock))
	if len(entries) != 1 {
		t.Errorf("socket directory holds %d entries, want only the socket", len(entries))
	}
	resp, err := unixClient(t, sock).Get("http://certs/v1/certs/nothing.example.com")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("status %d, want 404", resp.StatusCode)
	}

	// A second server on the same path must refuse while the first lives.
	e2, err := NewCertEndpoint(CertEndpointConfig{Socket: sock}, st, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := e2.Listen(context.Background()); err == nil || !strings.Contains(err.Error(), "another server is listening") {
		t.Fatalf("second Listen = %v, want another server is listening", err)
	}
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("the refused server touched the live socket: %v", err)
	}
}

func TestUnixSocketRemovedOnShutdown(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "certs.sock")
	e, err := NewCertEndpoint(CertEndpointConfig{Socket: sock, SocketMode: 0o600}, newTestStore(t), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("socket mode %#o, want 0600", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket still there after shutdown: %v", err)
	}
}

func TestUnixSocketStale(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "certs.sock")
	// A socket file nobody listens on, as a crashed server leaves it.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	startCertEndpoint(t, CertEndpointConfig{Socket: sock}, newTestStore(t))
	resp, err := unixClient(t, sock).Get("http://certs/v1/certs/nothing.example.com")
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	resp.Body.Close()
}

func TestUnixSocketRefusesRegularFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "certs.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := NewCertEndpoint(CertEndpointConfig{Socket: path}, newTestStore(t), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Listen(context.Background()); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen = %v, want not a socket", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Fatal("the file was changed")
	}
}

func TestUnixSocketGroup(t *testing.T) {
	gid := os.Getgid()
	sock := filepath.Join(t.TempDir(), "certs.sock")
	// The process's own group always works, by name or ID.
	startCertEndpoint(t, CertEndpointConfig{Socket: sock, SocketGroup: itoa(gid)}, newTestStore(t))
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if got := fileGID(fi); got != gid {
		t.Errorf("socket group %d, want %d", got, gid)
	}

	e, err := NewCertEndpoint(CertEndpointConfig{Socket: filepath.Join(t.TempDir(), "x.sock"), SocketGroup: "no-such-group-certserver"}, newTestStore(t), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Listen(context.Background()); err == nil || !strings.Contains(err.Error(), `"no-such-group-certserver"`) {
		t.Fatalf("Listen with an unknown group = %v, want an error naming it", err)
	}
}
