package certtest_test

import (
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"github.com/certserver/certserver/store/certtest"
)

// TestMint checks what the tests that use certtest rely on: a leaf signed
// by a CA verifies against it for its names, its ChainPEM and KeyPEM make a
// TLS key pair, and the fields given are the certificate's.
func TestMint(t *testing.T) {
	notAfter := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	ca := certtest.New(t, certtest.Template{CommonName: "certtest CA", IsCA: true}, nil)
	leaf := certtest.New(t, certtest.Template{DNSNames: []string{"a.example", "b.example"}, Serial: big.NewInt(42), NotAfter: notAfter}, ca)

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{DNSName: "b.example", Roots: roots}); err != nil {
		t.Fatalf("leaf does not verify against its CA: %v", err)
	}
	pair, err := tls.X509KeyPair(leaf.ChainPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatalf("ChainPEM and KeyPEM: %v", err)
	}
	if len(pair.Certificate) != 2 {
		t.Fatalf("ChainPEM holds %d certificates, want the leaf and the CA", len(pair.Certificate))
	}
	if c := leaf.Cert; c.Subject.CommonName != "a.example" || c.SerialNumber.Int64() != 42 || !c.NotAfter.Equal(notAfter) || c.IsCA {
		t.Fatalf("leaf CN %q serial %v not after %v CA %v; want a.example, 42, %v, not a CA", c.Subject.CommonName, c.SerialNumber, c.NotAfter, c.IsCA, notAfter)
	}

	self := certtest.New(t, certtest.Template{DNSNames: []string{"self.example"}}, nil)
	if string(self.ChainPEM) != string(self.CertPEM) || self.Cert.CheckSignature(self.Cert.SignatureAlgorithm, self.Cert.RawTBSCertificate, self.Cert.Signature) != nil {
		t.Fatal("a certificate minted without an issuer is not self-signed")
	}
}
