package store

import (
	"errors"
	"reflect"
	"testing"
	"time"
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
			var c Certificate
			if err := decodeCertificate(encodeCertificate(tt.cert), &c); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&c, tt.cert) {
				t.Errorf("certificate\n got %+v\nwant %+v", c, *tt.cert)
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
	cert := encodeCertificate(&Certificate{ID: "a.example", Names: []string{"a.example"}, ChainPEM: []byte("chain"), KeyPEM: []byte("key")})
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
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			var c Certificate
			if err := decodeCertificate(tt.cert, &c); !errors.Is(err, errCorrupt) {
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
	f.Add(encodeCertificate(&Certificate{ID: "a.example", Names: []string{"a.example"}, ChainPEM: []byte("c"), KeyPEM: []byte("k")}))
	f.Add(appendDomain(nil, &Domain{Name: "a.example", State: StateValid, Failures: 3}))
	f.Add([]byte{formatV1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Certificate
		if decodeCertificate(b, &c) == nil {
			var again Certificate
			if err := decodeCertificate(encodeCertificate(&c), &again); err != nil || !reflect.DeepEqual(again, c) {
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
