package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFallbackCert(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nginx")
	e, stdout, stderr := testEnv(nil)
	if code := run(context.Background(), e, []string{"fallback-cert", "--out", dir}); code != exitOK {
		t.Fatalf("exit code %d\n%s%s", code, stdout, stderr)
	}
	crt, key := filepath.Join(dir, "fallback.crt"), filepath.Join(dir, "fallback.key")
	pair, err := tls.LoadX509KeyPair(crt, key)
	if err != nil {
		t.Fatalf("the files do not load as a key pair: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "certserver fallback" {
		t.Errorf("CN %q", leaf.Subject.CommonName)
	}
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok {
		t.Errorf("key type %T, want ECDSA", leaf.PublicKey)
	}
	if years := leaf.NotAfter.Sub(time.Now()).Hours() / 24 / 365; years < 9.9 || years > 10.1 {
		t.Errorf("valid for %.1f years, want 10", years)
	}
	if leaf.SerialNumber.Sign() <= 0 || leaf.SerialNumber.BitLen() < 64 {
		t.Errorf("serial %v is not a large random positive number", leaf.SerialNumber)
	}
	fi, err := os.Stat(key)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %#o, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("directory holds %d files, want 2 (temporary files left?)", len(entries))
	}

	// A second run refuses and leaves the files alone.
	before, _ := os.ReadFile(key)
	e, _, stderr = testEnv(nil)
	if code := run(context.Background(), e, []string{"fallback-cert", "--out", dir}); code != exitFailure {
		t.Fatalf("overwrite without --force: exit code %d, want %d", code, exitFailure)
	}
	if !strings.Contains(stderr.String(), "exists; use --force") {
		t.Errorf("stderr %q", stderr)
	}
	if after, _ := os.ReadFile(key); string(after) != string(before) {
		t.Error("the key was changed")
	}

	// --force replaces both.
	e, _, _ = testEnv(nil)
	if code := run(context.Background(), e, []string{"fallback-cert", "--force", "--out", dir}); code != exitOK {
		t.Fatalf("--force: exit code %d", code)
	}
	if after, _ := os.ReadFile(key); string(after) == string(before) {
		t.Error("--force did not replace the key")
	}
	if _, err := tls.LoadX509KeyPair(crt, key); err != nil {
		t.Errorf("after --force: %v", err)
	}
}
