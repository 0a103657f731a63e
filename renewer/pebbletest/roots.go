package pebbletest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"
)

// CertPool returns a pool trusting the certificate Pebble and its front
// serve their HTTPS with (not the certificates Pebble issues: see Roots).
func (s *Server) CertPool() *x509.CertPool { return s.tlsPool.Clone() }

// HTTPClient returns a new client that trusts Pebble's HTTPS listeners.
// Its requests give up after requestTimeout.
func (s *Server) HTTPClient() *http.Client { return newClient(s.tlsPool, requestTimeout) }

func newClient(pool *x509.CertPool, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 8,
		},
	}
}

// Roots returns a pool of the roots Pebble issues under: /roots/0 and the
// alternate roots, from the management API. Pebble makes new roots every
// time it starts; they do not change while it runs, so the pool is fetched
// once. It fails the test when the management API does not answer.
func (s *Server) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	s.rootsMu.Lock()
	defer s.rootsMu.Unlock()
	if s.roots == nil {
		certs, err := s.fetchCerts("roots")
		if err != nil {
			t.Fatalf("pebbletest: %v", err)
		}
		pool := x509.NewCertPool()
		for _, c := range certs {
			pool.AddCert(c)
		}
		s.roots = pool
	}
	return s.roots.Clone()
}

// Intermediates returns Pebble's intermediates (/intermediates/0 and the
// alternates). Chains longer than one intermediate (Options.ChainLength)
// have more that the management API does not show.
func (s *Server) Intermediates(t testing.TB) []*x509.Certificate {
	t.Helper()
	certs, err := s.fetchCerts("intermediates")
	if err != nil {
		t.Fatalf("pebbletest: %v", err)
	}
	return certs
}

func (s *Server) fetchCerts(kind string) ([]*x509.Certificate, error) {
	client := s.HTTPClient()
	var certs []*x509.Certificate
	for i := 0; i <= s.alternateRoots; i++ {
		url := fmt.Sprintf("%s/%s/%d", s.ManagementURL, kind, i)
		resp, err := client.Get(url)
		if err != nil {
			return nil, fmt.Errorf("get %s: %w", url, err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("get %s: %w", url, err)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("get %s: status %s", url, resp.Status)
		}
		parsed, err := parsePEMCerts(body)
		if err != nil || len(parsed) == 0 {
			return nil, fmt.Errorf("get %s: no certificate in the answer (%v)", url, err)
		}
		certs = append(certs, parsed...)
	}
	return certs, nil
}

// VerifyChain checks that chainPEM (leaf first, then intermediates, as
// served to TLS clients) verifies for name against Pebble's roots at the
// current time, for server authentication. It returns the verification
// error; it fails the test only when the roots cannot be fetched.
func (s *Server) VerifyChain(t testing.TB, chainPEM []byte, name string) error {
	t.Helper()
	certs, err := parsePEMCerts(chainPEM)
	if err != nil {
		return err
	}
	return s.VerifyCerts(t, certs, name)
}

// VerifyCerts is VerifyChain for parsed certificates, such as
// tls.ConnectionState.PeerCertificates.
func (s *Server) VerifyCerts(t testing.TB, certs []*x509.Certificate, name string) error {
	t.Helper()
	if len(certs) == 0 {
		return errors.New("empty chain")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		DNSName:       name,
		Roots:         s.Roots(t),
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	return err
}

func parsePEMCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}
