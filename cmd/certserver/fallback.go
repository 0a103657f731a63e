package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

const fallbackHelp = `
Writes DIR/fallback.crt and DIR/fallback.key: a self-signed ECDSA P-256
certificate (CN "certserver fallback", valid for 10 years) and its private
key (mode 0600). nginx needs a certificate of its own in every TLS server
block (ssl_certificate); certserver's Lua hook replaces it for every name
the store has a certificate for, so clients only see the fallback for
names certserver cannot serve (yet).

Existing files are left alone unless --force is given. DIR is created if
missing.

Examples:
  certserver fallback-cert --out /etc/nginx/certserver
  certserver fallback-cert --out /etc/nginx/certserver --force

then, in nginx:
  ssl_certificate     /etc/nginx/certserver/fallback.crt;
  ssl_certificate_key /etc/nginx/certserver/fallback.key;
`

func runFallbackCert(_ context.Context, e *env, args []string) int {
	fs := newFlagSet("fallback-cert", "--out DIR [--force]", fallbackHelp)
	out := fs.String("out", "", "the `directory` to write fallback.crt and fallback.key to (required)")
	force := fs.Bool("force", false, "replace existing files")
	if code, ok := fs.parseNone(e, args); !ok {
		return code
	}
	if *out == "" {
		return usageError(e, "fallback-cert", "--out DIR is required")
	}
	crt, key, err := writeFallbackCert(*out, *force, e.now())
	if err != nil {
		return fail(e, "fallback-cert", err)
	}
	fmt.Fprintf(e.stdout, "wrote %s\nwrote %s (mode 0600)\n", crt, key)
	return exitOK
}

// writeFallbackCert generates the fallback certificate and writes it to
// dir. Without force it refuses, before writing anything, when either file
// exists. Each file is written to a temporary name and renamed into place.
func writeFallbackCert(dir string, force bool, now time.Time) (crtPath, keyPath string, err error) {
	crtPath, keyPath = filepath.Join(dir, "fallback.crt"), filepath.Join(dir, "fallback.key")
	if !force {
		for _, p := range []string{crtPath, keyPath} {
			if _, err := os.Lstat(p); err == nil {
				return "", "", fmt.Errorf("%s exists; use --force to replace it", p)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return "", "", err
			}
		}
	}
	crtPEM, keyPEM, err := fallbackCert(now)
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(crtPath, crtPEM, 0o644); err != nil {
		return "", "", err
	}
	return crtPath, keyPath, nil
}

// fallbackCert returns a new self-signed certificate and its key, PEM
// encoded.
func fallbackCert(now time.Time) (crtPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	// A positive serial of up to 128 bits (RFC 5280 section 4.1.2.2 allows
	// 20 octets).
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, err
	}
	serial.Add(serial, big.NewInt(1))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "certserver fallback"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// writeFileAtomic writes data to path with mode perm through a temporary
// file in the same directory, so that readers see the old file or the new
// one, never a part.
func writeFileAtomic(path string, data []byte, perm fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
