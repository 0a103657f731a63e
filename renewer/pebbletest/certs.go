package pebbletest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// listenerCerts is the throwaway CA of one test and the certificate Pebble
// and the front serve their HTTPS with (localhost, 127.0.0.1, ::1). It has
// nothing to do with the certificates Pebble issues.
type listenerCerts struct {
	pool     *x509.CertPool  // trusts the throwaway CA
	tlsCert  tls.Certificate // leaf and key, for the front
	certPath string          // leaf PEM, for Pebble
	keyPath  string          // key PEM, for Pebble
}

// newListenerCerts makes a CA and a server certificate signed by it and
// writes the server certificate and key into dir.
func newListenerCerts(dir string) (*listenerCerts, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "pebbletest throwaway CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})

	lc := &listenerCerts{
		pool:     x509.NewCertPool(),
		certPath: filepath.Join(dir, "listener-cert.pem"),
		keyPath:  filepath.Join(dir, "listener-key.pem"),
	}
	lc.pool.AddCert(caCert)
	if lc.tlsCert, err = tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return nil, err
	}
	if err := os.WriteFile(lc.certPath, certPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(lc.keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	return lc, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n
}
