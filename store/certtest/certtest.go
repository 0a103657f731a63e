// Package certtest mints X.509 certificates for tests: CAs, and leaves
// signed by a CA or by themselves, PEM encoded as certserver stores them
// (keys as PKCS #8). Every test that needs a certificate it does not get
// from a CA mints it here.
package certtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"testing"
	"time"
)

// Template describes a certificate to mint. Zero fields take the defaults
// given.
type Template struct {
	// CommonName is the subject's CN. Default: the first of DNSNames.
	CommonName string
	// Organization is the subject's O. Default: none.
	Organization []string
	// DNSNames and IPs are the subject alternative names.
	DNSNames []string
	IPs      []net.IP
	// Serial is the serial number. Default: 96 random bits.
	Serial *big.Int
	// NotBefore and NotAfter bound the validity. Defaults: an hour ago, and
	// 90 days after NotBefore.
	NotBefore, NotAfter time.Time
	// SubjectKeyID is the subject key identifier. Default: none for a leaf
	// (Go's own for a CA).
	SubjectKeyID []byte
	// IsCA makes a CA certificate (key usage cert sign); else a TLS server
	// leaf (digital signature, server auth).
	IsCA bool
	// Key is the certificate's private key. Default: a new ECDSA P-256 key.
	Key crypto.Signer
}

// Cert is a minted certificate with its key.
type Cert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// CertPEM is the certificate alone; ChainPEM is it followed by its
	// issuer's ChainPEM (for a self-signed certificate, CertPEM).
	CertPEM, ChainPEM []byte
	// KeyPEM is Key as a PKCS #8 "PRIVATE KEY" block.
	KeyPEM []byte
}

// Mint signs the certificate tmpl describes with issuer's key, or its own
// when issuer is nil.
func Mint(tmpl Template, issuer *Cert) (*Cert, error) {
	key := tmpl.Key
	if key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("certtest: %w", err)
		}
		key = k
	}
	serial := tmpl.Serial
	if serial == nil {
		s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 96))
		if err != nil {
			return nil, fmt.Errorf("certtest: %w", err)
		}
		serial = s
	}
	cn := tmpl.CommonName
	if cn == "" && len(tmpl.DNSNames) > 0 {
		cn = tmpl.DNSNames[0]
	}
	notBefore, notAfter := tmpl.NotBefore, tmpl.NotAfter
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = notBefore.Add(90 * 24 * time.Hour)
	}
	x := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: tmpl.Organization},
		DNSNames:     tmpl.DNSNames,
		IPAddresses:  tmpl.IPs,
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		SubjectKeyId: tmpl.SubjectKeyID,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.IsCA {
		x.KeyUsage, x.ExtKeyUsage = x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature, nil
		x.IsCA, x.BasicConstraintsValid = true, true
	}
	parent, signer := x, key
	if issuer != nil {
		parent, signer = issuer.Cert, issuer.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, x, parent, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("certtest: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certtest: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certtest: %w", err)
	}
	c := &Cert{
		Cert:    cert,
		Key:     key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
	c.ChainPEM = c.CertPEM
	if issuer != nil {
		c.ChainPEM = append(append([]byte(nil), c.CertPEM...), issuer.ChainPEM...)
	}
	return c, nil
}

// New is Mint for a test: a failure fails it.
func New(tb testing.TB, tmpl Template, issuer *Cert) *Cert {
	tb.Helper()
	c, err := Mint(tmpl, issuer)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}
