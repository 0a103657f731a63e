package nginxtest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
)

func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "nginxtest"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestStart checks the harness itself: nginx comes up on its ports with
// both TLS servers, reloads when asked, and reports its workers' CPU.
func TestStart(t *testing.T) {
	certFile, keyFile := selfSigned(t, t.TempDir())
	ngx := nginxtest.Start(t, nginxtest.Options{
		Sidecar:      "unix:/nonexistent/certs.sock",
		FallbackCert: certFile,
		FallbackKey:  keyFile,
		StaticCert:   certFile,
		StaticKey:    keyFile,
	})
	for _, addr := range []string{ngx.HTTPSAddr(), ngx.StaticHTTPSAddr()} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("handshake with %s: %v", addr, err)
		}
		conn.Close()
	}

	if n := ngx.Reloads(); n != 0 {
		t.Fatalf("Reloads() = %d before any reload", n)
	}
	pid := ngx.PID()
	ngx.Reload(t)
	if n := ngx.Reloads(); n != 1 {
		t.Errorf("Reloads() = %d after one reload", n)
	}
	if ngx.PID() != pid {
		t.Errorf("master PID changed on reload")
	}
	if _, err := ngx.WorkerCPU(); err != nil {
		t.Errorf("WorkerCPU: %v", err)
	}
	ngx.AssertCleanErrorLog(t)
}
