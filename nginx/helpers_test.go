package nginx_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
	"github.com/certserver/certserver/store/certtest"
)

// testCA is a self-signed ECDSA P-256 CA that issues leaf certificates.
type testCA struct {
	ca   *certtest.Cert
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	ca := certtest.New(t, certtest.Template{CommonName: "certserver nginx test CA", IsCA: true,
		Serial: big.NewInt(1), NotAfter: time.Now().Add(30 * 24 * time.Hour)}, nil)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return &testCA{ca: ca, pool: pool}
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
	n := lastSerial.Add(1)
	c := certtest.New(t, certtest.Template{DNSNames: names, Serial: big.NewInt(1000 + n),
		// Later for every certificate issued, so that the store takes a
		// reissue as a replacement, never as older than what it has.
		NotAfter: time.Now().Add(24*time.Hour + time.Duration(n)*time.Minute)}, ca.ca)
	return leaf{serial: c.Cert.SerialNumber, chainPEM: c.ChainPEM, keyPEM: c.KeyPEM}
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

// servedBy makes one full TLS handshake with addr for serverName, then
// one request, and returns the serial of the leaf served and the process
// ID of the nginx worker that served it (nginxtest.WorkerHeader).
func servedBy(addr, serverName string) (*big.Int, string, error) {
	cfg := &tls.Config{ServerName: serverName, InsecureSkipVerify: true, SessionTicketsDisabled: true}
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	serial := conn.ConnectionState().PeerCertificates[0].SerialNumber
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", serverName); err != nil {
		return nil, "", fmt.Errorf("request after the handshake for %q: %w", serverName, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, "", fmt.Errorf("answer after the handshake for %q: %w", serverName, err)
	}
	resp.Body.Close()
	pid := resp.Header.Get(nginxtest.WorkerHeader)
	if pid == "" {
		return nil, "", fmt.Errorf("answer for %q: no %s header (%s)", serverName, nginxtest.WorkerHeader, resp.Status)
	}
	return serial, pid, nil
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
