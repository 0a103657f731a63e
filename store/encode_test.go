package store

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	encasn1 "encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"reflect"
	"runtime"
	"slices"
	"testing"
	"time"
	"weak"

	"github.com/certserver/certserver/store/certtest"
)

func TestEncodeRoundTrip(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 890123456, time.UTC)
	paris := time.FixedZone("CET", 3600)
	tests := []struct {
		desc string
		cert *Certificate
		dom  *Domain
	}{
		{
			desc: "every field set",
			cert: &Certificate{
				ID: "example.com", Names: []string{"example.com", "*.example.com"},
				ChainPEM: []byte("chain"), KeyPEM: []byte("key"), NotBefore: at, NotAfter: at.Add(time.Hour),
				Issuer: "CN=R11", Serial: "0a", KeyType: "rsa2048", Source: "import", Origin: "/etc/ssl/x.pem",
				RenewAt: at.Add(time.Minute), StoredAt: at.Add(time.Second),
			},
			dom: &Domain{
				Name: "example.com", State: StateFailing, Profile: "tlsserver", CertID: "example.com",
				NextAttempt: at, Failures: 7, LastError: "rate limited", FailingSince: at.Add(-time.Hour),
				Source: "cli", AddedAt: at.Add(-48 * time.Hour), UpdatedAt: at,
				Attempts: []Attempt{
					{At: at, Outcome: "failed", Error: "acme rateLimited: too many", Took: 1500 * time.Millisecond},
					{At: at.Add(-time.Hour), Outcome: "issued", Serial: "0b", Took: time.Second},
				},
				ExtraNames: []string{"www.example.com", "*.example.com"},
			},
		},
		{
			desc: "managed with another name",
			cert: &Certificate{Names: []string{"b.example"}, ChainPEM: []byte("c"), KeyPEM: []byte("k")},
			dom:  &Domain{Name: "b.example", State: StateValid, CertID: "a.example", ManagedWith: "a.example"},
		},
		{
			desc: "zero values",
			cert: &Certificate{Names: []string{}, ChainPEM: []byte{}, KeyPEM: []byte{}},
			dom:  &Domain{},
		},
		{
			desc: "negative and far times",
			cert: &Certificate{
				Names: []string{"a.example"}, ChainPEM: []byte("c"), KeyPEM: []byte("k"),
				NotBefore: time.Date(1601, 1, 1, 0, 0, 0, 1, time.UTC), NotAfter: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC),
			},
			dom: &Domain{Name: "a.example", Failures: -1, NextAttempt: time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			for _, format := range []struct {
				desc string
				rec  []byte
				src  intermediateSource
			}{{"v1", encodeCertificateV1(tt.cert), nil}, {"v2", nil, nil}} {
				if format.rec == nil {
					rec, src := encodeV2(tt.cert)
					format.rec, format.src = rec, src
				}
				var c Certificate
				if err := decodeCertificate(format.rec, &c, format.src); err != nil {
					t.Fatalf("%s: %v", format.desc, err)
				}
				if !reflect.DeepEqual(&c, tt.cert) {
					t.Errorf("%s certificate\n got %+v\nwant %+v", format.desc, c, *tt.cert)
				}
			}
			var d Domain
			if err := decodeDomain(appendDomain(nil, tt.dom), &d); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&d, tt.dom) {
				t.Errorf("domain\n got %+v\nwant %+v", d, *tt.dom)
			}
		})
	}

	t.Run("times come back in utc", func(t *testing.T) {
		var d Domain
		in := &Domain{Name: "a.example", AddedAt: at.In(paris)}
		if err := decodeDomain(appendDomain(nil, in), &d); err != nil {
			t.Fatal(err)
		}
		if !d.AddedAt.Equal(in.AddedAt) || d.AddedAt.Location() != time.UTC {
			t.Errorf("AddedAt = %v, want %v in UTC", d.AddedAt, in.AddedAt)
		}
	})
}

func TestDecodeRefusesCorruptRecords(t *testing.T) {
	cert := encodeCertificateV1(&Certificate{ID: "a.example", Names: []string{"a.example"}, ChainPEM: []byte("chain"), KeyPEM: []byte("key")})
	certV2, _ := encodeCertificate(&Certificate{ID: "a.example", Names: []string{"a.example"}, ChainPEM: []byte("chain"), KeyPEM: []byte("key")})
	dom := appendDomain(nil, &Domain{Name: "a.example", State: StateValid})
	tests := []struct {
		desc string
		cert []byte
		dom  []byte
	}{
		{desc: "empty", cert: nil, dom: nil},
		{desc: "unknown format", cert: append([]byte{9}, cert[1:]...), dom: append([]byte{9}, dom[1:]...)},
		{desc: "json", cert: []byte(`{"id":"a.example"}`), dom: []byte(`{"name":"a.example"}`)},
		{desc: "length past the end", cert: cert[:len(cert)-40], dom: dom[:4]},
		{desc: "huge name count", cert: []byte{formatV1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, dom: []byte{formatV1, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{desc: "bad varint", cert: []byte{formatV1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80}, dom: []byte{formatV1, 0x80}},
		{desc: "v2 length past the end", cert: certV2[:len(certV2)-40], dom: dom[:4]},
		{desc: "v2 unknown chain form", cert: append(append([]byte{}, certV2[:len("\x02\x09a.example\x01\x09a.example")]...), 7), dom: dom[:4]},
		{desc: "v2 unknown key form", cert: append(append([]byte{}, certV2[:len("\x02\x09a.example\x01\x09a.example\x00\x05chain")]...), 9, 1, 'k'), dom: dom[:4]},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			var c Certificate
			if err := decodeCertificate(tt.cert, &c, nil); !errors.Is(err, errCorrupt) {
				t.Errorf("decodeCertificate error = %v, want errCorrupt", err)
			}
			var d Domain
			if err := decodeDomain(tt.dom, &d); !errors.Is(err, errCorrupt) {
				t.Errorf("decodeDomain error = %v, want errCorrupt", err)
			}
		})
	}
}

func TestDecodeReadsOlderRecords(t *testing.T) {
	// A record written before fields were added ends early; the missing
	// fields read as zero.
	full := appendDomain(nil, &Domain{Name: "a.example", State: StateValid, Profile: "p"})
	short := full[:1+1+len("a.example")+1+len(StateValid)]
	var d Domain
	if err := decodeDomain(short, &d); err != nil {
		t.Fatal(err)
	}
	if want := (Domain{Name: "a.example", State: StateValid, NextAttempt: time.Time{}}); !reflect.DeepEqual(d, want) {
		t.Errorf("got %+v, want %+v", d, want)
	}
}

// FuzzDecode checks that no stored value makes the decoders panic, and
// that what decodes re-encodes to a value that decodes the same.
func FuzzDecode(f *testing.F) {
	f.Add(encodeCertificateV1(&Certificate{ID: "a.example", Names: []string{"a.example"}, ChainPEM: []byte("c"), KeyPEM: []byte("k")}))
	v2, _ := encodeCertificate(&Certificate{ID: "a.example", Names: []string{"a.example"}, ChainPEM: []byte("c"), KeyPEM: []byte("k")})
	f.Add(v2)
	f.Add(appendDomain(nil, &Domain{Name: "a.example", State: StateValid, Failures: 3}))
	f.Add([]byte{formatV1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Certificate
		if decodeCertificate(b, &c, nil) == nil {
			var again Certificate
			rec, src := encodeV2(&c)
			if err := decodeCertificate(rec, &again, src); err != nil || !reflect.DeepEqual(again, c) {
				t.Fatalf("certificate %+v re-decodes as %+v, %v", c, again, err)
			}
		}
		var d Domain
		if decodeDomain(b, &d) == nil {
			var again Domain
			if err := decodeDomain(appendDomain(nil, &d), &again); err != nil || !reflect.DeepEqual(again, d) {
				t.Fatalf("domain %+v re-decodes as %+v, %v", d, again, err)
			}
		}
	})
}

func TestDecodeReadsDomainsWrittenBeforeAttempts(t *testing.T) {
	// A domain record written before Attempts existed ends after UpdatedAt.
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	d := &Domain{Name: "a.example", State: StateValid, AddedAt: at, UpdatedAt: at}
	full := appendDomain(nil, d)
	old := full[:len(full)-1] // drop the attempt count, the last byte
	var got Domain
	if err := decodeDomain(old, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, d) || got.Attempts != nil {
		t.Errorf("got %+v, want %+v with no attempts", got, *d)
	}
}

func TestAddAttemptKeepsTheNewest(t *testing.T) {
	var d Domain
	for i := range RecentAttempts + 5 {
		d.AddAttempt(Attempt{Serial: string(rune('a' + i))})
	}
	if len(d.Attempts) != RecentAttempts {
		t.Fatalf("%d attempts kept, want %d", len(d.Attempts), RecentAttempts)
	}
	if first, last := d.Attempts[0].Serial, d.Attempts[RecentAttempts-1].Serial; first != string(rune('a'+RecentAttempts+4)) || last != string(rune('a'+5)) {
		t.Errorf("attempts run from %q to %q, want the newest first and the oldest five dropped", first, last)
	}
}

func TestEncodeKeepsChainsAsDER(t *testing.T) {
	root := certtest.New(t, certtest.Template{CommonName: "Test Root", IsCA: true}, nil)
	inter := certtest.New(t, certtest.Template{CommonName: "Test E1", IsCA: true}, root)
	leaf := certtest.New(t, certtest.Template{DNSNames: []string{"a.example.com"}}, inter)
	sealedKey := []byte("-----BEGIN CERTSERVER SEALED KEY-----\nFormat: 1\nKey-Id: k1\n\nAAAA\n-----END CERTSERVER SEALED KEY-----\n")
	tests := []struct {
		desc        string
		chain, key  []byte
		compact     bool // chain kept as DER
		intermeds   int
		derKey      bool
		smallerThan int // the record is smaller than this share (%) of formatV1's
	}{
		{desc: "leaf, intermediate and root, pkcs8 key", chain: leaf.ChainPEM, key: leaf.KeyPEM, compact: true, intermeds: 2, derKey: true, smallerThan: 50},
		{desc: "sealed key", chain: leaf.ChainPEM, key: sealedKey, compact: true, intermeds: 2, smallerThan: 60},
		{desc: "text before the chain", chain: append([]byte("subject=CN=a\n"), leaf.ChainPEM...), key: leaf.KeyPEM, derKey: true, smallerThan: 101},
		{desc: "lines of 76", chain: bytes.Replace(leaf.CertPEM, []byte("\n"), nil, 3), key: leaf.KeyPEM, derKey: true, smallerThan: 101},
		{desc: "no line break at the end", chain: bytes.TrimSuffix(leaf.CertPEM, []byte("\n")), key: bytes.TrimSuffix(leaf.KeyPEM, []byte("\n")), smallerThan: 101},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			c := &Certificate{ID: "a.example.com", Names: []string{"a.example.com"}, ChainPEM: tt.chain, KeyPEM: tt.key}
			rec, src := encodeV2(c)
			_, inters, compact := splitChain(tt.chain)
			keyType, _ := compactKey(tt.key)
			if compact != tt.compact || len(inters) != tt.intermeds || (keyType != keyRaw) != tt.derKey {
				t.Errorf("chain as der %v with %d intermediates, key as der %v; want %v, %d, %v", compact, len(inters), keyType != keyRaw, tt.compact, tt.intermeds, tt.derKey)
			}
			if old := encodeCertificateV1(c); len(rec)*100 >= len(old)*tt.smallerThan {
				t.Errorf("record of %d bytes, formatV1's %d: want under %d%%", len(rec), len(old), tt.smallerThan)
			}
			var got Certificate
			if err := decodeCertificate(rec, &got, src); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.ChainPEM, tt.chain) || !bytes.Equal(got.KeyPEM, tt.key) {
				t.Errorf("read back\n%s\n%s\nwant\n%s\n%s", got.ChainPEM, got.KeyPEM, tt.chain, tt.key)
			}
			if tt.intermeds > 0 {
				if err := decodeCertificate(rec, &got, interMap{}); !errors.Is(err, errMissingIntermediate) {
					t.Errorf("decoded without its intermediates: error %v, want errMissingIntermediate", err)
				}
			}
		})
	}
}

// BenchmarkEncodeCertificate measures what a record costs the write path
// and the read path in each format, for a leaf, an intermediate and a
// root with a P-256 key.
func BenchmarkEncodeCertificate(b *testing.B) {
	root := certtest.New(b, certtest.Template{CommonName: "Test Root", IsCA: true}, nil)
	inter := certtest.New(b, certtest.Template{CommonName: "Test E1", IsCA: true}, root)
	leaf := certtest.New(b, certtest.Template{DNSNames: []string{"a.example.com"}}, inter)
	c := &Certificate{ID: "a.example.com", Names: []string{"a.example.com"}, ChainPEM: leaf.ChainPEM[:len(leaf.ChainPEM)-len(root.CertPEM)], KeyPEM: leaf.KeyPEM}
	v2, src := encodeV2(c)
	b.Run("encode/v1", func(b *testing.B) {
		for b.Loop() {
			encodeCertificateV1(c)
		}
	})
	b.Run("encode/v2", func(b *testing.B) {
		for b.Loop() {
			encodeCertificate(c)
		}
	})
	// As a write after ParseCertificate does it: from what parsing
	// decoded, which the value it returned carries.
	parsed, err := ParseCertificate(c.ChainPEM, c.KeyPEM, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	if chain, key := parsed.parsed.of(parsed); chain == nil || key == nil {
		b.Fatal("ParseCertificate kept nothing for the encoding")
	}
	b.Run("encode/v2/parsed", func(b *testing.B) {
		for b.Loop() {
			if _, inters := encodeCertificate(parsed); len(inters) != 1 {
				b.Fatal("not the compact record")
			}
		}
	})
	v1 := encodeCertificateV1(c)
	b.Run("decode/v1", func(b *testing.B) {
		var got Certificate
		for b.Loop() {
			decodeCertificate(v1, &got, nil)
		}
	})
	b.Run("decode/v2", func(b *testing.B) {
		var got Certificate
		for b.Loop() {
			decodeCertificate(v2, &got, src)
		}
	})
	b.Logf("record %d bytes in v1, %d in v2", len(v1), len(v2))
}

// TestEncodeParsedChainChanged: the record of a certificate whose ChainPEM
// or KeyPEM changed after ParseCertificate holds the changed PEM, not what
// was parsed: whether the slice was replaced, cut or changed in place. An
// unchanged one, or a copy of the value, is encoded from what was parsed.
func TestEncodeParsedChainChanged(t *testing.T) {
	ca := newTestCA(t)
	key := newECKey(t, elliptic.P256())
	keyPEM := pkcs8PEM(t, key)
	chainA := concat(ca.issue(t, key, leafSpec{dnsNames: []string{"a.example.com"}}), ca.certPEM)
	chainB := concat(ca.issue(t, key, leafSpec{dnsNames: []string{"b.example.com"}}), ca.certPEM)
	otherKey := pkcs8PEM(t, newECKey(t, elliptic.P256()))
	flip := func(b []byte, i int) {
		b[i] ^= 'A' ^ 'B'
		if b[i] != 'A' && b[i] != 'B' {
			b[i] = 'A'
		}
	}
	for _, tt := range []struct {
		desc       string
		change     func(c *Certificate) *Certificate
		chain, key bool // what was parsed of each is used
	}{
		{"unchanged", func(c *Certificate) *Certificate { return c }, true, true},
		{"value copied", func(c *Certificate) *Certificate { cp := *c; cp.Source = SourceImport; return &cp }, true, true},
		{"key replaced", func(c *Certificate) *Certificate { c.KeyPEM = slices.Clone(otherKey); return c }, true, false},
		{"key copied", func(c *Certificate) *Certificate { c.KeyPEM = slices.Clone(c.KeyPEM); return c }, true, false},
		{"key changed in place", func(c *Certificate) *Certificate {
			flip(c.KeyPEM, len("-----BEGIN PRIVATE KEY-----\n")+50)
			return c
		}, true, false},
		{"replaced", func(c *Certificate) *Certificate { c.ChainPEM = slices.Clone(chainB); return c }, false, false},
		{"cut", func(c *Certificate) *Certificate { c.ChainPEM = c.ChainPEM[:len(c.ChainPEM)-len(ca.certPEM)]; return c }, false, false},
		{"changed in place", func(c *Certificate) *Certificate {
			// A character in the middle of the leaf's second line: the
			// chain keeps its layout, the leaf another signature.
			flip(c.ChainPEM, len("-----BEGIN CERTIFICATE-----\n")+65+10)
			return c
		}, false, false},
		{"changed in place and copied", func(c *Certificate) *Certificate {
			c.ChainPEM[len(c.ChainPEM)-40] = '\n'
			c.ChainPEM = slices.Clone(c.ChainPEM)
			return c
		}, false, false},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			c, err := ParseCertificate(chainA, keyPEM, testNow)
			if err != nil {
				t.Fatal(err)
			}
			if chain, key := c.parsed.of(c); chain == nil || key == nil {
				t.Fatal("ParseCertificate kept nothing for the encoding")
			}
			c = tt.change(c)
			if chain, key := c.parsed.of(c); (chain != nil) != tt.chain || (key != nil) != tt.key {
				t.Errorf("what was parsed is used: chain %v, key %v; want %v, %v", chain != nil, key != nil, tt.chain, tt.key)
			}
			want, wantKey := slices.Clone(c.ChainPEM), slices.Clone(c.KeyPEM)
			rec, src := encodeV2(c)
			var got Certificate
			if err := decodeCertificate(rec, &got, src); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.ChainPEM, want) {
				t.Errorf("chain read back\n%s\nwant\n%s", got.ChainPEM, want)
			}
			if !bytes.Equal(got.KeyPEM, wantKey) {
				t.Errorf("key read back\n%s\nwant\n%s", got.KeyPEM, wantKey)
			}
			checkParsedRecord(t, c)
		})
	}
}

// checkParsedRecord checks that the record of c and its intermediates are
// byte for byte those of the same value without what ParseCertificate
// decoded, which the encoding then decodes from the PEM.
func checkParsedRecord(t *testing.T, c *Certificate) {
	t.Helper()
	plain := *c
	plain.parsed = nil
	rec, inters := encodeCertificate(c)
	want, wantInters := encodeCertificate(&plain)
	if !bytes.Equal(rec, want) {
		t.Errorf("record from what was parsed\n%x\nfrom the PEM\n%x", rec, want)
	}
	if !reflect.DeepEqual(inters, wantInters) {
		t.Errorf("%d intermediates from what was parsed, %d from the PEM, or not the same", len(inters), len(wantInters))
	}
}

// TestEncodeParsedSameRecord: a record written from what ParseCertificate
// decoded is byte for byte the one written from the PEM, for every chain
// and key the fast paths take or leave (the fast inputs, and layouts they
// take but the record does not keep as DER), and what they decoded is used
// whenever they took both.
func TestEncodeParsedSameRecord(t *testing.T) {
	inputs := fastInputs(t)
	ca := newTestCA(t)
	key := newECKey(t, elliptic.P256())
	leaf := ca.issue(t, key, leafSpec{dnsNames: []string{"a.example.com"}})
	pk8 := pkcs8PEM(t, key)
	chain := concat(leaf, ca.certPEM)
	many := leaf
	for range maxChain + 1 {
		many = concat(many, ca.certPEM)
	}
	inputs = append(inputs,
		fastInput{desc: "leaf in lines of 76", chain: concat(rewrap(t, leaf, 76), ca.certPEM), key: pk8, fast: true},
		fastInput{desc: "intermediate in lines of 76", chain: concat(leaf, rewrap(t, ca.certPEM, 76)), key: pk8, fast: true},
		fastInput{desc: "key in lines of 76", chain: chain, key: rewrap(t, pk8, 76), fast: true},
		fastInput{desc: "two intermediates", chain: concat(chain, ca.certPEM), key: pk8, fast: true},
		fastInput{desc: "second intermediate in lines of 76", chain: concat(chain, rewrap(t, ca.certPEM, 76)), key: pk8, fast: true},
		fastInput{desc: "more intermediates than a record keeps", chain: many, key: pk8, fast: true},
		fastInput{desc: "sec1 key without its public key", chain: chain, key: sec1NoPublic(t, key), fast: true},
	)
	for _, in := range inputs {
		t.Run(in.desc, func(t *testing.T) {
			c, err := ParseCertificate(in.chain, in.key, testNow)
			if err != nil {
				return // the fast-path tests check what is refused
			}
			if chain, key := c.parsed.of(c); in.fast && (chain == nil || key == nil) {
				t.Errorf("what was parsed is used: chain %v, key %v; want both", chain != nil, key != nil)
			}
			checkParsedRecord(t, c)
		})
	}
}

// rewrap is the PEM block b with its base64 in lines of n characters.
func rewrap(t testing.TB, b []byte, n int) []byte {
	t.Helper()
	block, rest := pem.Decode(b)
	if block == nil || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("not one PEM block: %q", b)
	}
	text := base64.StdEncoding.EncodeToString(block.Bytes)
	out := []byte("-----BEGIN " + block.Type + "-----\n")
	for len(text) > 0 {
		k := min(n, len(text))
		out = append(append(out, text[:k]...), '\n')
		text = text[k:]
	}
	return append(out, "-----END "+block.Type+"-----\n"...)
}

// sec1NoPublic is key in SEC 1 PEM without its optional public key [1],
// which the record cannot then keep as the scalar alone.
func sec1NoPublic(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	d := make([]byte, 32)
	key.D.FillBytes(d)
	der, err := encasn1.Marshal(struct {
		Version int
		Key     []byte
		Curve   encasn1.ObjectIdentifier `asn1:"optional,explicit,tag:0"`
	}{1, d, encasn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}})
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("EC PRIVATE KEY", der)
}

// TestParsedKeyNotKept: the private key ParseCertificate read, as its PEM
// and as the DER its fast path decoded, becomes unreachable when the
// caller drops the value ParseCertificate returned: whether it was never
// stored, encoded, or encoded after a change. Nothing else (no cache, no
// package state) holds it.
func TestParsedKeyNotKept(t *testing.T) {
	ca := newTestCA(t)
	key := newECKey(t, elliptic.P256())
	chain := concat(ca.issue(t, key, leafSpec{dnsNames: []string{"a.example.com"}}), ca.certPEM)
	keyPEM := pkcs8PEM(t, key)
	for _, tt := range []struct {
		desc string
		use  func(c *Certificate)
	}{
		{"parsed, never stored", func(*Certificate) {}},
		{"parsed and encoded", func(c *Certificate) { encodeCertificate(c) }},
		{"encoded after the key was copied", func(c *Certificate) {
			c.KeyPEM = slices.Clone(c.KeyPEM)
			encodeCertificate(c)
		}},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			held := parseAndDrop(t, chain, keyPEM, tt.use)
			// A full collection clears a weak pointer to what nothing
			// reaches; a few more, in case a cycle ran concurrently.
			for range 10 {
				runtime.GC()
			}
			for what, p := range held {
				if p.Value() != nil {
					t.Errorf("%s still reachable after the value was dropped", what)
				}
			}
		})
	}
}

// parseAndDrop parses chain and key, hands the value to use, and returns
// weak pointers to the key material the value held, dropping the value.
//
//go:noinline
func parseAndDrop(t *testing.T, chain, key []byte, use func(c *Certificate)) map[string]weak.Pointer[byte] {
	c, err := ParseCertificate(chain, key, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if c.parsed == nil || len(c.parsed.key.der) == 0 {
		t.Fatal("the fast path decoded no key")
	}
	held := map[string]weak.Pointer[byte]{
		"the key's PEM": weak.Make(&c.KeyPEM[0]),
		"the key's DER": weak.Make(&c.parsed.key.der[0]),
	}
	use(c)
	return held
}
