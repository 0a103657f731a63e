package nginx_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testCA is a self-signed ECDSA P-256 CA that issues leaf certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "certserver nginx test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// leaf is an issued certificate: its serial, the PEM of the chain (leaf,
// then the CA) and the PEM (PKCS #8) of its key.
type leaf struct {
	serial   *big.Int
	chainPEM []byte
	keyPEM   []byte
}

var lastSerial atomic.Int64

// issue returns a new leaf for names with a fresh serial and key, expiring
// later than every leaf issued before it.
func (ca *testCA) issue(t testing.TB, names ...string) leaf {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	n := lastSerial.Add(1)
	serial := big.NewInt(1000 + n)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		// Later for every certificate issued, so that the store takes a
		// reissue as a replacement, never as older than what it has.
		NotAfter:    time.Now().Add(24*time.Hour + time.Duration(n)*time.Minute),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})...)
	return leaf{
		serial:   serial,
		chainPEM: chain,
		keyPEM:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

// writeFiles writes the leaf's chain and key as name.crt and name.key in
// dir and returns their paths.
func (l leaf) writeFiles(t testing.TB, dir, name string) (certFile, keyFile string) {
	t.Helper()
	certFile = filepath.Join(dir, name+".crt")
	keyFile = filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, l.chainPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, l.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// handshake makes one full TLS handshake with addr for serverName, without
// session resumption, and returns the certificates the server sent. With
// roots set the chain must verify for serverName against them.
func handshake(addr, serverName string, roots *x509.CertPool) ([]*x509.Certificate, error) {
	cfg := &tls.Config{
		ServerName:             serverName,
		RootCAs:                roots,
		InsecureSkipVerify:     roots == nil,
		SessionTicketsDisabled: true,
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates, nil
}

// servedSerial returns the serial of the leaf addr serves for serverName,
// without verifying it.
func servedSerial(t testing.TB, addr, serverName string) *big.Int {
	t.Helper()
	certs, err := handshake(addr, serverName, nil)
	if err != nil {
		t.Fatalf("handshake with %s for %q: %v", addr, serverName, err)
	}
	return certs[0].SerialNumber
}

// eventually polls cond every 50ms until it returns nil or timeout passes,
// then fails with its last error.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// expectSerial is a condition for eventually: addr serves want for
// serverName.
func expectSerial(addr, serverName string, want *big.Int) func() error {
	return func() error {
		certs, err := handshake(addr, serverName, nil)
		if err != nil {
			return err
		}
		if got := certs[0].SerialNumber; got.Cmp(want) != 0 {
			return fmt.Errorf("%q served serial %v, want %v", serverName, got, want)
		}
		return nil
	}
}

// shortTempDir returns a new directory with a short path, for unix sockets
// (whose paths are limited to about 100 bytes), removed at cleanup.
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// countLines returns how many lines of log contain s.
func countLines(log, s string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}
