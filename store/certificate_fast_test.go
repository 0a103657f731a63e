package store

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"reflect"
	"syscall"
	"testing"
	"time"
)

// fastInputs are chains and keys for the fast-path tests: the layouts
// certbot, lego and openssl write (which the fast paths must take) and
// near misses (which they must leave to the general path).
type fastInput struct {
	desc       string
	chain, key []byte
	fast       bool // both fast paths accept it
}

func fastInputs(t testing.TB) []fastInput {
	ca := newTestCA(t)
	key, other := newECKey(t, elliptic.P256()), newECKey(t, elliptic.P256())
	key384 := newECKey(t, elliptic.P384())
	leaf := ca.issue(t, key, leafSpec{dnsNames: []string{"a.example.com"}})
	leaf384 := ca.issue(t, key384, leafSpec{dnsNames: []string{"b.example.com"}})
	chain, pk8, sec1 := concat(leaf, ca.certPEM), pkcs8PEM(t, key), sec1PEM(t, key)
	sec1NoCurve := sec1DER(t, key)
	// MarshalECPrivateKey writes the curve as [0] right after the scalar:
	// cut it out, keeping the public key [1].
	curve := []byte{0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	if i := bytes.Index(sec1NoCurve, curve); i > 0 {
		sec1NoCurve = append(append([]byte{0x30, sec1NoCurve[1] - byte(len(curve))}, sec1NoCurve[2:i]...), sec1NoCurve[i+len(curve):]...)
	} else {
		t.Fatal("no curve in the SEC 1 key")
	}
	crlf := func(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")) }
	return []fastInput{
		{desc: "certbot: chain and pkcs8 key", chain: chain, key: pk8, fast: true},
		{desc: "sec1 key", chain: chain, key: sec1, fast: true},
		{desc: "leaf alone", chain: leaf, key: pk8, fast: true},
		{desc: "blank lines around", chain: concat([]byte("\n"), leaf, []byte("\n\n"), ca.certPEM, []byte("\n")), key: concat(pk8, []byte("\n")), fast: true},
		{desc: "no final newlines", chain: bytes.TrimSuffix(chain, []byte("\n")), key: bytes.TrimSuffix(pk8, []byte("\n")), fast: true},
		{desc: "mismatched key", chain: chain, key: pkcs8PEM(t, other)},
		{desc: "key of the issuer", chain: chain, key: pkcs8PEM(t, ca.key)},
		{desc: "p-384", chain: leaf384, key: pkcs8PEM(t, key384)},
		{desc: "sec1 key naming no curve", chain: chain, key: pemBlock("EC PRIVATE KEY", sec1NoCurve)},
		{desc: "crlf", chain: crlf(chain), key: crlf(pk8)},
		{desc: "text before", chain: concat([]byte("subject=a\n"), chain), key: concat([]byte("key\n"), pk8)},
		{desc: "ec parameters", chain: chain, key: concat(pemBlock("EC PARAMETERS", curve[2:]), sec1)},
		{desc: "header", chain: bytes.Replace(chain, []byte("-----\n"), []byte("-----\nA: b\n\n"), 1), key: pk8},
		{desc: "corrupt base64", chain: bytes.Replace(chain, []byte("-----\nM"), []byte("-----\n*"), 1), key: bytes.Replace(pk8, []byte("-----\nM"), []byte("-----\n*"), 1)},
		{desc: "corrupt intermediate", chain: concat(leaf, pemBlock("CERTIFICATE", ca.cert.Raw[:len(ca.cert.Raw)-1])), key: pk8},
		{desc: "two keys", chain: chain, key: concat(pk8, pk8)},
		{desc: "empty blocks", chain: []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), key: []byte("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n")},
	}
}

// sec1DER is key in SEC 1 DER.
func sec1DER(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestParseCertificateFastPaths: the chains and keys tools write take the
// fast paths, near misses do not, and whatever a fast path accepts the
// general path accepts with the same result.
func TestParseCertificateFastPaths(t *testing.T) {
	for _, in := range fastInputs(t) {
		t.Run(in.desc, func(t *testing.T) {
			checkFastPaths(t, in.chain, in.key, in.fast)
		})
	}
}

// checkFastPaths checks that what fastChain and fastKey accept of chain
// and key, parseChain, parseKey and the match check accept, with the same
// leaf, chain and key blocks; with mustBeFast, that both accept.
func checkFastPaths(t *testing.T, chain, key []byte, mustBeFast bool) {
	t.Helper()
	leaf, gotChain, parsed, okChain := fastChain(chain)
	if mustBeFast && !okChain {
		t.Fatal("fastChain declined")
	}
	if !okChain {
		return
	}
	// What the record's encoding takes of parsed is what it would decode
	// of the chain.
	wantLeaf, wantInters, wantCompact := splitChain(gotChain)
	if &parsed.pem[0] != &gotChain[0] || parsed.compact != wantCompact || !reflect.DeepEqual(parsed.inters, wantInters) ||
		wantCompact && !bytes.Equal(parsed.leaf, wantLeaf) {
		t.Fatalf("fastChain decoded chain %q as compact %v, leaf %x, intermediates %x; want %v, %x, %x",
			gotChain, parsed.compact, parsed.leaf, parsed.inters, wantCompact, wantLeaf, wantInters)
	}
	want, wantChain, err := parseChain(chain)
	if err != nil {
		t.Fatalf("fastChain accepted a chain parseChain refuses: %v", err)
	}
	if !bytes.Equal(leaf.Raw, want.Raw) || !bytes.Equal(gotChain, wantChain) {
		t.Fatalf("fastChain read a different leaf or chain:\n%q\nwant\n%q", gotChain, wantChain)
	}
	gotKey, parsedKey, okKey := fastKey(key, leaf)
	if mustBeFast && !okKey {
		t.Fatal("fastKey declined")
	}
	if !okKey {
		return
	}
	k, wantKey, err := parseKey(key)
	if err != nil {
		t.Fatalf("fastKey accepted a key parseKey refuses: %v", err)
	}
	if pub, ok := k.Public().(*ecdsa.PublicKey); !ok || !pub.Equal(leaf.PublicKey) {
		t.Fatal("fastKey accepted a key that does not match the leaf")
	}
	if !bytes.Equal(gotKey, wantKey) {
		t.Fatalf("fastKey kept %q, want %q", gotKey, wantKey)
	}
	// What the record's encoding takes of parsedKey is what it would
	// decode of the key.
	wantCode, wantDER := compactKey(gotKey)
	var wantP256 bool
	if point, ok := leafP256Point(leaf.Raw); ok && wantCode == 1 && len(wantDER) > len(p256PKCS8Head)+32 {
		wantP256 = bytes.Equal(wantDER, p256PKCS8(wantDER[len(p256PKCS8Head):len(p256PKCS8Head)+32], point))
	}
	if &parsedKey.pem[0] != &gotKey[0] || parsedKey.code != wantCode || !bytes.Equal(parsedKey.der, wantDER) || parsedKey.p256 != wantP256 {
		t.Fatalf("fastKey decoded key %q as type %d, DER %x, P-256 of the leaf %v; want %d, %x, %v",
			gotKey, parsedKey.code, parsedKey.der, parsedKey.p256, wantCode, wantDER, wantP256)
	}
	// And the record written from what they decoded is the one written
	// from the PEM.
	if c, err := ParseCertificate(chain, key, testNow); err == nil {
		checkParsedRecord(t, c)
	}
}

// FuzzParseCertificateFastPaths: whatever the fast paths accept, the
// general path accepts with the same result.
func FuzzParseCertificateFastPaths(f *testing.F) {
	for _, in := range fastInputs(f) {
		f.Add(in.chain, in.key)
	}
	f.Fuzz(func(t *testing.T, chain, key []byte) {
		checkFastPaths(t, chain, key, false)
	})
}

// BenchmarkParseCertificate parses a certbot lineage (a P-256 leaf, its
// intermediate and a PKCS #8 key) by the fast path and by the general
// path alone, side by side, each also in CPU time (cpu-ns/op, which other
// work on the machine inflates less than the time per op).
func BenchmarkParseCertificate(b *testing.B) {
	ca := newTestCA(b)
	key := newECKey(b, elliptic.P256())
	chain := concat(ca.issue(b, key, leafSpec{dnsNames: []string{"a.example.com", "www.a.example.com"}}), ca.certPEM)
	keyPEM := pkcs8PEM(b, key)
	general := func(chain, keyPEM []byte) error {
		leaf, _, err := parseChain(chain)
		if err != nil {
			return err
		}
		k, _, err := parseKey(keyPEM)
		if err != nil {
			return err
		}
		if !k.Public().(*ecdsa.PublicKey).Equal(leaf.PublicKey) {
			return ErrKeyMismatch
		}
		return nil
	}
	for _, bb := range []struct {
		desc  string
		parse func(chain, keyPEM []byte) error
	}{
		{"fast", func(chain, keyPEM []byte) error { _, err := ParseCertificate(chain, keyPEM, testNow); return err }},
		{"general", general},
	} {
		b.Run(bb.desc, func(b *testing.B) {
			cpu0 := processCPU(b)
			for b.Loop() {
				if err := bb.parse(chain, keyPEM); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU is the CPU time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkParseAndEncode is what the store does with one certificate of
// an import: ParseCertificate, then the record's encoding (formatV2) of
// what it returned, in CPU time too (cpu-ns/op).
func BenchmarkParseAndEncode(b *testing.B) {
	ca := newTestCA(b)
	key := newECKey(b, elliptic.P256())
	chain := concat(ca.issue(b, key, leafSpec{dnsNames: []string{"a.example.com", "www.a.example.com"}}), ca.certPEM)
	keyPEM := pkcs8PEM(b, key)
	b.ReportAllocs()
	cpu0 := processCPU(b)
	for b.Loop() {
		c, err := ParseCertificate(chain, keyPEM, testNow)
		if err != nil {
			b.Fatal(err)
		}
		if rec, _ := encodeCertificate(c); rec[0] != formatV2 || len(rec) > 1500 {
			b.Fatalf("record of %d bytes, format %d: not the compact one", len(rec), rec[0])
		}
	}
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
}
