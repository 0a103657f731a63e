package certserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
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
// valid from an hour before notAfter minus 90 days until notAfter.
func newTestCert(t testing.TB, notAfter time.Time, names ...string) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 96))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    notAfter.Add(-90 * 24 * time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return testCert{
		chain:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:      pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		serial:   serial.Text(16),
		notAfter: notAfter,
	}
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
