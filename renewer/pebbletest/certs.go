package pebbletest

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/certserver/certserver/store/certtest"
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
	week := time.Now().Add(7 * 24 * time.Hour)
	ca, err := certtest.Mint(certtest.Template{CommonName: "pebbletest throwaway CA", IsCA: true, NotAfter: week}, nil)
	if err != nil {
		return nil, err
	}
	leaf, err := certtest.Mint(certtest.Template{DNSNames: []string{"localhost"},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, NotAfter: week}, ca)
	if err != nil {
		return nil, err
	}
	caCert, certPEM, keyPEM := ca.Cert, leaf.CertPEM, leaf.KeyPEM

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
