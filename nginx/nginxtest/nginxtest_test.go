package nginxtest_test

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
	"github.com/certserver/certserver/store/certtest"
)

func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	c := certtest.New(t, certtest.Template{CommonName: "nginxtest", NotAfter: time.Now().Add(time.Hour)}, nil)
	certFile, keyFile = filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key")
	if err := os.WriteFile(certFile, c.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, c.KeyPEM, 0o600); err != nil {
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
