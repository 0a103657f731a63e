package certserver

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"testing"

	"github.com/certserver/certserver/certserver/api"
)

// TestDecodeImportFast: whatever line the fast path accepts, encoding/json
// (as decodeImportLine used it before) decodes to the same request; the
// line the client sends takes the fast path.
func TestDecodeImportFast(t *testing.T) {
	client, err := json.Marshal(api.ImportRequest{
		ChainPEM: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
		KeyPEM:   "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n",
		Source:   api.SourceCertbot, Origin: "/etc/letsencrypt/live/a.example.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := []struct {
		line string
		fast bool // the fast path must take it
	}{
		{string(client), true},
		{`{}`, true},
		{` { "chain_pem" : "a\nb\"c\\d\/e\tf\rg\bh\fi" , "key_pem":"k" } `, true},
		{`{"source":"import","origin":"","chain_pem":"","key_pem":""}`, true},
		{`{"Chain_PEM":"a"}`, false},                 // encoding/json matches names regardless of case
		{`{"chain_pem":"a","chain_pem":"b"}`, false}, // the last one wins there
		{`{"chain_pem":null}`, false},
		{`{"chain_pem":"\u0041"}`, false},
		{`{"origin":"/srv/caf` + "\xc3\xa9" + `"}`, false},
		{`{"origin":"` + "\xff" + `"}`, false},    // invalid UTF-8: replaced there
		{`{"chain_pem":"a` + "\n" + `b"}`, false}, // a raw control character: refused there
		{`{"chain_pem":"a"}{}`, false},
		{`{"chain_pem":"a",}`, false},
		{`{"chain_pem":"a"`, false},
		{`{"chain_pem":"a\`, false},
		{`{"chain_pem":1}`, false},
		{`{"other":"a"}`, false},
		{`["chain_pem"]`, false},
		{``, false},
	}
	for _, tc := range lines {
		var fast importInput
		ok := decodeImportFast([]byte(tc.line), &fast)
		if tc.fast && !ok {
			t.Errorf("%q: declined by the fast path", tc.line)
		}
		if !ok {
			continue
		}
		var want api.ImportRequest
		if err := decodeImportSlow([]byte(tc.line), &want); err != nil {
			t.Errorf("%q: the fast path accepted what encoding/json refuses: %v", tc.line, err)
			continue
		}
		if !sameInput(&fast, inputOf(&want)) {
			t.Errorf("%q: fast path %+v, encoding/json %+v", tc.line, fast, want)
		}
	}
}

// FuzzDecodeImportFast: the fast path never accepts a line encoding/json
// refuses, nor decodes one differently.
func FuzzDecodeImportFast(f *testing.F) {
	f.Add(`{"chain_pem":"a\nb","key_pem":"k","source":"certbot","origin":"/x"}`)
	f.Add(`{"chain_pem":"a\"","key_pem":""}`)
	f.Fuzz(func(t *testing.T, line string) {
		var fast importInput
		if !decodeImportFast([]byte(line), &fast) {
			return
		}
		var want api.ImportRequest
		if err := decodeImportSlow([]byte(line), &want); err != nil {
			t.Fatalf("%q: accepted by the fast path, refused by encoding/json: %v", line, err)
		}
		if !sameInput(&fast, inputOf(&want)) {
			t.Fatalf("%q: fast path %+v, encoding/json %+v", line, fast, want)
		}
	})
}

// sameInput reports whether a and b hold the same certificate, source and
// origin (an empty chain or key the same whether nil or not).
func sameInput(a, b *importInput) bool {
	return bytes.Equal(a.chain, b.chain) && bytes.Equal(a.key, b.key) && a.source == b.source && a.origin == b.origin
}

// TestPlain8: plain8 is true exactly when each of the eight bytes is one
// str copies as it is, whatever byte sits where.
func TestPlain8(t *testing.T) {
	for c := range 256 {
		want := c >= 0x20 && c < 0x80 && c != '"' && c != '\\'
		for pos := range 8 {
			for _, fill := range []byte{'A', ' ', '~', '!', '#', '[', ']'} {
				b := bytes.Repeat([]byte{fill}, 8)
				b[pos] = byte(c)
				if got := plain8(binary.LittleEndian.Uint64(b)); got != want {
					t.Fatalf("plain8(%q) = %v, want %v", b, got, want)
				}
			}
		}
	}
}
