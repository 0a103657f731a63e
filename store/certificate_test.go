package store

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/certserver/certserver/store/certtest"
)

// testNow is the time the certificate tests parse at.
var testNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// testCA is a self-signed issuer for test leaves.
type testCA struct {
	ca      *certtest.Cert
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	ca := certtest.New(t, certtest.Template{CommonName: "Test Root", Organization: []string{"certserver tests"}, IsCA: true,
		Serial: big.NewInt(1), NotBefore: testNow.Add(-48 * time.Hour), NotAfter: testNow.Add(10 * 365 * 24 * time.Hour)}, nil)
	return &testCA{ca: ca, cert: ca.Cert, certPEM: ca.CertPEM, key: ca.Key}
}

// leafSpec describes a leaf for testCA.issue.
type leafSpec struct {
	cn        string
	dnsNames  []string
	serial    int64
	notBefore time.Time
	notAfter  time.Time
}

// issue signs a leaf for key and returns its PEM.
func (ca *testCA) issue(t testing.TB, key crypto.Signer, s leafSpec) []byte {
	t.Helper()
	if s.serial == 0 {
		s.serial = 0x1f2e3d
	}
	if s.notBefore.IsZero() {
		s.notBefore = testNow.Add(-time.Hour)
	}
	if s.notAfter.IsZero() {
		s.notAfter = testNow.Add(90 * 24 * time.Hour)
	}
	// Without cn, the CN is the first DNS name, which ParseCertificate
	// reads only when there are none.
	leaf := certtest.New(t, certtest.Template{CommonName: s.cn, DNSNames: s.dnsNames, Serial: big.NewInt(s.serial),
		NotBefore: s.notBefore, NotAfter: s.notAfter, Key: key}, ca.ca)
	return leaf.CertPEM
}

func newECKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func pkcs8PEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("PRIVATE KEY", der)
}

func sec1PEM(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("EC PRIVATE KEY", der)
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestParseCertificate(t *testing.T) {
	ca := newTestCA(t)
	ecKey := newECKey(t, elliptic.P256())
	ec384Key := newECKey(t, elliptic.P384())
	otherKey := newECKey(t, elliptic.P256())
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	basic := ca.issue(t, ecKey, leafSpec{cn: "www.example.com", dnsNames: []string{"www.example.com", "example.com"}})
	basicKey := pkcs8PEM(t, ecKey)
	ecParams := pemBlock("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07})

	tests := []struct {
		desc      string
		chain     []byte
		key       []byte
		wantErr   error
		wantNames []string
		wantType  KeyType
		wantChain []byte // when it differs from chain
		wantKey   []byte // when it differs from key
	}{
		{
			desc:      "ecdsa p-256 leaf with its issuer and a pkcs8 key",
			chain:     concat(basic, ca.certPEM),
			key:       basicKey,
			wantNames: []string{"www.example.com", "example.com"},
			wantType:  "ecdsa-p256",
		},
		{
			desc:      "sec1 ec key after ec parameters",
			chain:     basic,
			key:       concat(ecParams, sec1PEM(t, ecKey)),
			wantNames: []string{"www.example.com", "example.com"},
			wantType:  "ecdsa-p256",
			wantKey:   sec1PEM(t, ecKey),
		},
		{
			desc:      "ecdsa p-384",
			chain:     ca.issue(t, ec384Key, leafSpec{dnsNames: []string{"a.example.com"}}),
			key:       pkcs8PEM(t, ec384Key),
			wantNames: []string{"a.example.com"},
			wantType:  "ecdsa-p384",
		},
		{
			desc:      "rsa 2048 with a pkcs1 key",
			chain:     ca.issue(t, rsaKey, leafSpec{dnsNames: []string{"rsa.example.com"}}),
			key:       pemBlock("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)),
			wantNames: []string{"rsa.example.com"},
			wantType:  "rsa2048",
		},
		{
			desc:      "rsa 2048 with a pkcs8 key",
			chain:     ca.issue(t, rsaKey, leafSpec{dnsNames: []string{"rsa.example.com"}}),
			key:       pkcs8PEM(t, rsaKey),
			wantNames: []string{"rsa.example.com"},
			wantType:  "rsa2048",
		},
		{
			desc:      "ed25519",
			chain:     ca.issue(t, edKey, leafSpec{dnsNames: []string{"ed.example.com"}}),
			key:       pkcs8PEM(t, edKey),
			wantNames: []string{"ed.example.com"},
			wantType:  "ed25519",
		},
		{
			// U+2603 is DISALLOWED in IDNA2008, which only orders check.
			desc:      "san outside IDNA2008 kept",
			chain:     ca.issue(t, ecKey, leafSpec{dnsNames: []string{"xn--n3h.example.com", "example.com"}}),
			key:       basicKey,
			wantNames: []string{"xn--n3h.example.com", "example.com"},
			wantType:  "ecdsa-p256",
		},
		{
			desc:      "wildcard san normalized",
			chain:     ca.issue(t, ecKey, leafSpec{dnsNames: []string{"*.Example.COM.", "example.com"}}),
			key:       basicKey,
			wantNames: []string{"*.example.com", "example.com"},
			wantType:  "ecdsa-p256",
		},
		{
			desc:      "idn san in a-label form",
			chain:     ca.issue(t, ecKey, leafSpec{dnsNames: []string{"xn--bcher-kva.example", "www.xn--bcher-kva.example"}}),
			key:       basicKey,
			wantNames: []string{"xn--bcher-kva.example", "www.xn--bcher-kva.example"},
			wantType:  "ecdsa-p256",
		},
		{
			desc:      "duplicates and invalid sans skipped, order kept",
			chain:     ca.issue(t, ecKey, leafSpec{dnsNames: []string{"b.example.com", "_bad.example.com", "A.example.com", "B.EXAMPLE.COM", "localhost", "a.example.com"}}),
			key:       basicKey,
			wantNames: []string{"b.example.com", "a.example.com"},
			wantType:  "ecdsa-p256",
		},
		{
			desc:      "common name used without sans",
			chain:     ca.issue(t, ecKey, leafSpec{cn: "Legacy.Example.com"}),
			key:       basicKey,
			wantNames: []string{"legacy.example.com"},
			wantType:  "ecdsa-p256",
		},
		{
			desc:      "common name ignored with sans",
			chain:     ca.issue(t, ecKey, leafSpec{cn: "cn.example.com", dnsNames: []string{"san.example.com"}}),
			key:       basicKey,
			wantNames: []string{"san.example.com"},
			wantType:  "ecdsa-p256",
		},
		{
			desc:      "text around blocks dropped",
			chain:     concat([]byte("subject=CN = www.example.com\n"), basic, []byte("\nissuer=Test Root\n\n"), ca.certPEM, []byte("trailing words\n")),
			key:       concat([]byte("key follows\n"), basicKey, []byte("\n\n")),
			wantNames: []string{"www.example.com", "example.com"},
			wantType:  "ecdsa-p256",
			wantChain: concat(basic, ca.certPEM),
			wantKey:   basicKey,
		},
		{
			desc:      "missing final newline added",
			chain:     bytes.TrimSuffix(basic, []byte("\n")),
			key:       bytes.TrimSuffix(basicKey, []byte("\n")),
			wantNames: []string{"www.example.com", "example.com"},
			wantType:  "ecdsa-p256",
			wantChain: basic,
			wantKey:   basicKey,
		},
		{desc: "empty chain", chain: nil, key: basicKey, wantErr: ErrNotCertificate},
		{desc: "chain of text", chain: []byte("hello\n"), key: basicKey, wantErr: ErrNotCertificate},
		{desc: "key block in chain", chain: concat(basic, basicKey), key: basicKey, wantErr: ErrNotCertificate},
		{desc: "corrupt certificate", chain: pemBlock("CERTIFICATE", []byte("not der")), key: basicKey, wantErr: ErrNotCertificate},
		{desc: "truncated block", chain: concat(basic, ca.certPEM[:len(ca.certPEM)/2]), key: basicKey, wantErr: ErrNotCertificate},
		{desc: "empty key", chain: basic, key: nil, wantErr: ErrBadKey},
		{desc: "corrupt key", chain: basic, key: pemBlock("PRIVATE KEY", []byte("not der")), wantErr: ErrBadKey},
		{desc: "certificate as key", chain: basic, key: basic, wantErr: ErrBadKey},
		{desc: "two keys", chain: basic, key: concat(basicKey, basicKey), wantErr: ErrBadKey},
		{desc: "truncated key", chain: basic, key: basicKey[:len(basicKey)/2], wantErr: ErrBadKey},
		{
			desc:    "encrypted key",
			chain:   basic,
			key:     pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-128-CBC,00"}, Bytes: []byte{1}}),
			wantErr: ErrBadKey,
		},
		{desc: "mismatched key", chain: basic, key: pkcs8PEM(t, otherKey), wantErr: ErrKeyMismatch},
		{desc: "key of another type", chain: basic, key: pkcs8PEM(t, rsaKey), wantErr: ErrKeyMismatch},
		{desc: "key of the issuer", chain: concat(basic, ca.certPEM), key: pkcs8PEM(t, ca.key), wantErr: ErrKeyMismatch},
		{desc: "no valid names", chain: ca.issue(t, ecKey, leafSpec{cn: "x", dnsNames: []string{"_x.example.com", "localhost"}}), key: basicKey, wantErr: ErrNoNames},
		{desc: "no names at all", chain: ca.issue(t, ecKey, leafSpec{}), key: basicKey, wantErr: ErrNoNames},
		{
			desc:    "expired",
			chain:   ca.issue(t, ecKey, leafSpec{dnsNames: []string{"old.example.com"}, notBefore: testNow.AddDate(0, -4, 0), notAfter: testNow.Add(-time.Second)}),
			key:     basicKey,
			wantErr: ErrExpired,
		},
		{
			desc:      "not yet valid is accepted",
			chain:     ca.issue(t, ecKey, leafSpec{dnsNames: []string{"new.example.com"}, notBefore: testNow.Add(time.Hour)}),
			key:       basicKey,
			wantNames: []string{"new.example.com"},
			wantType:  "ecdsa-p256",
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			c, err := ParseCertificate(tt.chain, tt.key, testNow)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseCertificate error = %v, want %v", err, tt.wantErr)
				}
				if c != nil {
					t.Errorf("ParseCertificate returned a certificate with an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseCertificate: %v", err)
			}
			if !slices.Equal(c.Names, tt.wantNames) || c.ID != tt.wantNames[0] {
				t.Errorf("ID, Names = %q, %q; want %q", c.ID, c.Names, tt.wantNames)
			}
			if c.KeyType != tt.wantType {
				t.Errorf("KeyType = %q, want %q", c.KeyType, tt.wantType)
			}
			wantChain, wantKey := tt.chain, tt.key
			if tt.wantChain != nil {
				wantChain = tt.wantChain
			}
			if tt.wantKey != nil {
				wantKey = tt.wantKey
			}
			if !bytes.Equal(c.ChainPEM, wantChain) {
				t.Errorf("ChainPEM = %q, want %q", c.ChainPEM, wantChain)
			}
			if !bytes.Equal(c.KeyPEM, wantKey) {
				t.Errorf("KeyPEM differs from the key block given")
			}
			leaf, _ := pem.Decode(c.ChainPEM)
			x, err := x509.ParseCertificate(leaf.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if !c.NotBefore.Equal(x.NotBefore) || !c.NotAfter.Equal(x.NotAfter) {
				t.Errorf("validity = %v..%v, want %v..%v", c.NotBefore, c.NotAfter, x.NotBefore, x.NotAfter)
			}
			if want := "CN=Test Root,O=certserver tests"; c.Issuer != want {
				t.Errorf("Issuer = %q, want %q", c.Issuer, want)
			}
			if c.Serial != "1f2e3d" {
				t.Errorf("Serial = %q, want %q", c.Serial, "1f2e3d")
			}
			if c.Source != "" || c.Origin != "" || !c.RenewAt.IsZero() || !c.StoredAt.IsZero() {
				t.Errorf("ParseCertificate set fields that belong to the caller: %+v", c)
			}
		})
	}
}

func TestParseCertificateCopiesInput(t *testing.T) {
	ca := newTestCA(t)
	key := newECKey(t, elliptic.P256())
	chain := ca.issue(t, key, leafSpec{dnsNames: []string{"a.example.com"}})
	keyPEM := pkcs8PEM(t, key)
	c, err := ParseCertificate(chain, keyPEM, testNow)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(c.ChainPEM)
	wantKey := bytes.Clone(c.KeyPEM)
	clear(chain)
	clear(keyPEM)
	if !bytes.Equal(c.ChainPEM, want) || !bytes.Equal(c.KeyPEM, wantKey) {
		t.Error("the Certificate shares memory with the input")
	}
}

// TestParseCertificateIntermediates: an intermediate that parsed once is
// known by its PEM text and not parsed again, but a corrupt one is refused every time, and the set
// of those that parsed stays within its bound.
func TestParseCertificateIntermediates(t *testing.T) {
	ca := newTestCA(t)
	key := newECKey(t, elliptic.P256())
	keyPEM := pkcs8PEM(t, key)
	leaf := ca.issue(t, key, leafSpec{dnsNames: []string{"a.example.com"}})
	if _, err := ParseCertificate(concat(leaf, ca.certPEM), keyPEM, testNow); err != nil {
		t.Fatal(err)
	}
	body, _, _, ok := fastBlock(ca.certPEM, certMarkers)
	if _, known := knownIntermediates.get(body); !ok || !known {
		t.Error("the intermediate that parsed is not in the set")
	}
	corrupt := pemBlock("CERTIFICATE", ca.cert.Raw[:len(ca.cert.Raw)-1])
	for range 2 {
		if _, err := ParseCertificate(concat(leaf, ca.certPEM, corrupt), keyPEM, testNow); !errors.Is(err, ErrNotCertificate) {
			t.Fatalf("chain with a corrupt intermediate: err = %v, want ErrNotCertificate", err)
		}
	}

	s := knownSet{max: 3}
	for i := range 10 {
		s.add([]byte{byte(i)}, &knownIntermediate{})
		if len(s.m) > s.max {
			t.Fatalf("after %d adds the set holds %d, more than %d", i+1, len(s.m), s.max)
		}
		if _, ok := s.get([]byte{byte(i)}); !ok {
			t.Fatalf("%d not in the set just after it was added", i)
		}
	}
}

// TestParseCertificateTextBeforeBlock: text before a block, even a
// malformed BEGIN line, is not part of the stored chain.
func TestParseCertificateTextBeforeBlock(t *testing.T) {
	ca := newTestCA(t)
	key := newECKey(t, elliptic.P256())
	leaf := ca.issue(t, key, leafSpec{dnsNames: []string{"a.example.com"}})
	c, err := ParseCertificate(concat([]byte("subject=a\n-----BEGIN oops\n"), leaf), pkcs8PEM(t, key), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.ChainPEM, leaf) {
		t.Errorf("ChainPEM = %q, want the block alone %q", c.ChainPEM, leaf)
	}
}

// TestParseKey checks the exported key parser, the one every package uses
// for stored keys: it returns the key of a file ParseCertificate accepts and
// refuses what ParseCertificate refuses in a key, with ErrBadKey.
func TestParseKey(t *testing.T) {
	ecKey := newECKey(t, elliptic.P256())
	ecParams := pemBlock("EC PARAMETERS", []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07})
	tests := []struct {
		desc    string
		pem     []byte
		wantErr bool
	}{
		{desc: "pkcs8", pem: pkcs8PEM(t, ecKey)},
		{desc: "sec1 after ec parameters", pem: concat(ecParams, sec1PEM(t, ecKey))},
		{desc: "empty", pem: nil, wantErr: true},
		{desc: "two keys", pem: concat(pkcs8PEM(t, ecKey), pkcs8PEM(t, ecKey)), wantErr: true},
		{desc: "a certificate block", pem: pemBlock("CERTIFICATE", []byte{1}), wantErr: true},
		{desc: "garbage in a key block", pem: pemBlock("PRIVATE KEY", []byte{1, 2, 3}), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			key, err := ParseKey(tt.pem)
			if tt.wantErr {
				if !errors.Is(err, ErrBadKey) || key != nil {
					t.Fatalf("ParseKey = %v, %v; want ErrBadKey", key, err)
				}
				return
			}
			if err != nil || !ecKey.Equal(key) {
				t.Fatalf("ParseKey = %v, %v; want the key", key, err)
			}
		})
	}
}
