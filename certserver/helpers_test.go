package certserver

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/certtest"
)

// testLogger logs to the test's output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// failingStore is a store whose certificate reads fail with err.
type failingStore struct {
	store.Store
	err error
}

func (s failingStore) LookupCertificate(context.Context, string) (*store.Certificate, error) {
	return nil, s.err
}

func (s failingStore) GetCertificate(context.Context, string) (*store.Certificate, error) {
	return nil, s.err
}

func (s failingStore) GetChallenge(context.Context, string) (string, error) {
	return "", s.err
}

func (s failingStore) ListCertificates(context.Context, string, int) ([]*store.Certificate, error) {
	return nil, s.err
}

// putCert stores c, failing the test on error.
func putCert(t testing.TB, st store.Store, c *store.Certificate) {
	t.Helper()
	if err := st.PutCertificate(context.Background(), c); err != nil {
		t.Fatalf("put certificate %s: %v", c.ID, err)
	}
}

// testCert is a generated certificate with its key, PEM encoded.
type testCert struct {
	chain, key []byte
	serial     string
	notAfter   time.Time
}

// newTestCert returns a self-signed ECDSA P-256 certificate for names,
// valid from 90 days before notAfter until notAfter.
func newTestCert(t testing.TB, notAfter time.Time, names ...string) testCert {
	t.Helper()
	c := certtest.New(t, certtest.Template{DNSNames: names, NotBefore: notAfter.Add(-90 * 24 * time.Hour), NotAfter: notAfter}, nil)
	return testCert{chain: c.CertPEM, key: c.KeyPEM, serial: c.Cert.SerialNumber.Text(16), notAfter: notAfter}
}

// serving starts serve(ctx) in the background and stops it in t.Cleanup,
// failing the test when it returns an error.
func serving(t testing.TB, serve func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

// startCertEndpoint starts a certificate endpoint and returns it.
func startCertEndpoint(t testing.TB, cfg CertEndpointConfig, st store.Store) *CertEndpoint {
	t.Helper()
	e, err := NewCertEndpoint(cfg, st, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	serving(t, e.Serve)
	return e
}

// startAdmin starts an admin API on 127.0.0.1:0 and returns its base URL.
func startAdmin(t testing.TB, cfg AdminConfig, st store.Store) string {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	a, err := NewAdminAPI(cfg, st, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	serving(t, a.Serve)
	return "http://" + a.Addrs()[0].String()
}

// unixClient returns an HTTP client whose every request goes to the unix
// socket at path.
func unixClient(t testing.TB, path string) *http.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}
