package nginx_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/certserver/certserver/nginx/nginxtest"
	"github.com/certserver/certserver/store/certtest"
)

// TestLuaKeyParse: the Lua module builds an ECDSA P-256 key in the
// layouts Go and OpenSSL write (PKCS #8, as the sidecar sends it, and
// SEC 1) from its scalar and point (stats "key_fast"), and parses every
// other key as before (parse_pem_priv_key, stats "key_pem"): the
// certificate is served with a key that signs the handshake (the client
// verifies it), a key of another type, curve or layout included. A key
// that does not match its leaf, and a malformed one, get the fallback
// and a log line that says what is wrong, and the worker serves on.
func TestLuaKeyParse(t *testing.T) {
	pki := newChainPKI(t, "keys")
	fb := newTestCA(t).issue(t, "fallback.invalid")
	fbCert, fbKey := fb.writeFiles(t, t.TempDir(), "fallback")
	side := startFakeSidecar(t)
	side.leafFormat = true
	ngx := nginxtest.Start(t, nginxtest.Options{Sidecar: "unix:" + side.sock, FallbackCert: fbCert, FallbackKey: fbKey,
		Workers: 1, Stats: true, Configure: patient + " log_interval = 0.001,"})
	addr := ngx.HTTPSAddr()

	pid0, _, err := statsOnce(addr)
	if err != nil {
		t.Fatal(err)
	}
	// steps returns how many keys the worker built (fast) and parsed
	// from PEM (pem) since the last call, checking it is still the same
	// worker.
	var fast0, pem0 int
	steps := func(t *testing.T) (fast, pem int) {
		t.Helper()
		pid, st, err := statsOnce(addr)
		if err != nil {
			t.Fatal(err)
		}
		if pid != pid0 {
			t.Fatalf("worker %s answers, want %s: the worker was replaced", pid, pid0)
		}
		fast, pem = st["key_fast"]-fast0, st["key_pem"]-pem0
		fast0, pem0 = st["key_fast"], st["key_pem"]
		return fast, pem
	}

	p256 := func() crypto.Signer {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}

	t.Run("served", func(t *testing.T) {
		rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		sec1 := p256()
		noPoint := p256()
		for _, tc := range []struct {
			desc      string
			key       crypto.Signer
			keyPEM    func(c *certtest.Cert) []byte // default: c.KeyPEM (PKCS #8)
			fast, pem int
		}{
			{desc: "P-256 in PKCS #8", key: p256(), fast: 1},
			{desc: "P-256 in SEC 1", key: sec1, keyPEM: func(*certtest.Cert) []byte { return sec1PEM(t, sec1) }, fast: 1},
			{desc: "RSA", key: rsaKey, pem: 1},
			{desc: "P-384", key: p384, pem: 1},
			{desc: "P-256 without its public point", key: noPoint, keyPEM: func(*certtest.Cert) []byte { return pkcs8WithoutPoint(t, noPoint) }, pem: 1},
		} {
			t.Run(tc.desc, func(t *testing.T) {
				name := strings.NewReplacer(" ", "-", "#", "", "-", "").Replace(strings.ToLower(tc.desc)) + ".keys.test"
				c := certtest.New(t, certtest.Template{DNSNames: []string{name}, Key: tc.key}, pki.inter)
				keyPEM := c.KeyPEM
				if tc.keyPEM != nil {
					keyPEM = tc.keyPEM(c)
				}
				side.set(name, answer{status: 200, maxAge: 3600,
					body: append(append(append([]byte{}, c.CertPEM...), pki.inter.CertPEM...), keyPEM...)})
				certs, err := handshake(addr, name, pki.roots)
				if err != nil {
					t.Fatalf("%v\nerror log:\n%s", err, ngx.ErrorLog())
				}
				if !bytes.Equal(certs[0].Raw, c.Cert.Raw) {
					t.Fatalf("served serial %v, want %v", certs[0].SerialNumber, c.Cert.SerialNumber)
				}
				if fast, pem := steps(t); fast != tc.fast || pem != tc.pem {
					t.Errorf("keys built from scalar and point %d, parsed from PEM %d; want %d, %d", fast, pem, tc.fast, tc.pem)
				}
			})
		}
	})

	t.Run("rejected", func(t *testing.T) {
		trunc := p256()
		der, err := x509.MarshalPKCS8PrivateKey(trunc)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			desc   string
			key    crypto.Signer
			keyPEM []byte
			fast   int
			log    []string
		}{
			{desc: "key of another certificate", key: p256(), keyPEM: certtest.New(t, certtest.Template{DNSNames: []string{"other.keys.test"}}, pki.inter).KeyPEM,
				fast: 1, log: []string{"the private key does not match the certificate"}},
			{desc: "truncated key", key: trunc, keyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der[:len(der)-20]}),
				log: []string{"bad private key: ", "(read as P-256: PrivateKeyInfo is truncated)"}},
			{desc: "key not in base64", key: p256(), keyPEM: []byte("-----BEGIN PRIVATE KEY-----\n*** not base64 ***\n-----END PRIVATE KEY-----\n"),
				log: []string{"bad private key: ", "(read as P-256: PEM is not base64)"}},
		} {
			t.Run(tc.desc, func(t *testing.T) {
				name := strings.ReplaceAll(tc.desc, " ", "-") + ".keys.test"
				c := certtest.New(t, certtest.Template{DNSNames: []string{name}, Key: tc.key}, pki.inter)
				side.set(name, answer{status: 200, maxAge: 3600,
					body: append(append(append([]byte{}, c.CertPEM...), pki.inter.CertPEM...), tc.keyPEM...)})
				certs, err := handshake(addr, name, nil)
				if err != nil {
					t.Fatal(err)
				}
				if certs[0].SerialNumber.Cmp(fb.serial) != 0 {
					t.Fatalf("served serial %v, want the fallback's %v", certs[0].SerialNumber, fb.serial)
				}
				if fast, pem := steps(t); fast != tc.fast || pem != 0 {
					t.Errorf("keys built from scalar and point %d, parsed from PEM %d; want %d, 0", fast, pem, tc.fast)
				}
				var line string
				for _, l := range strings.Split(ngx.ErrorLog(), "\n") {
					if strings.Contains(l, "certserver: bad answer for "+name+": ") {
						line = l
					}
				}
				for _, want := range tc.log {
					if !strings.Contains(line, want) {
						t.Errorf("the log line for %s %q does not say %q\nerror log:\n%s", name, line, want, ngx.ErrorLog())
					}
				}
			})
		}
	})

	// The worker serves on: a good key after the bad ones.
	c, body := pki.issue(t, "after.keys.test", nil)
	side.set("after.keys.test", answer{status: 200, body: body, maxAge: 3600})
	certs, err := handshake(addr, "after.keys.test", pki.roots)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(certs[0].Raw, c.Cert.Raw) {
		t.Errorf("after.keys.test: served serial %v, want %v", certs[0].SerialNumber, c.Cert.SerialNumber)
	}
	if fast, _ := steps(t); fast != 1 {
		t.Errorf("after.keys.test: %d keys built from scalar and point, want 1", fast)
	}
	ngx.AssertCleanErrorLog(t)
}

// ecPrivateKey is an ECPrivateKey (RFC 5915 section 3).
type ecPrivateKey struct {
	Version    int
	PrivateKey []byte
	Curve      asn1.ObjectIdentifier `asn1:"optional,explicit,tag:0"`
	PublicKey  asn1.BitString        `asn1:"optional,explicit,tag:1"`
}

// sec1PEM returns key as a SEC 1 "EC PRIVATE KEY" block, as openssl
// ecparam -genkey writes it (the curve named, the public point).
func sec1PEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// pkcs8WithoutPoint returns the P-256 key as a PKCS #8 "PRIVATE KEY"
// block whose ECPrivateKey leaves out its optional public point.
func pkcs8WithoutPoint(t testing.TB, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	var ec ecPrivateKey
	if _, err := asn1.Unmarshal(der, &ec); err != nil {
		t.Fatal(err)
	}
	inner, err := asn1.Marshal(struct {
		Version    int
		PrivateKey []byte
	}{1, ec.PrivateKey})
	if err != nil {
		t.Fatal(err)
	}
	curve, err := asn1.Marshal(ec.Curve)
	if err != nil {
		t.Fatal(err)
	}
	der, err = asn1.Marshal(struct {
		Version    int
		Algorithm  pkix.AlgorithmIdentifier
		PrivateKey []byte
	}{0, pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}, Parameters: asn1.RawValue{FullBytes: curve}}, inner})
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}
