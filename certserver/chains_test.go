package certserver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/certtest"
)

// derDigest is the lowercase hex SHA-256 of the DER in one PEM block.
func derDigest(t *testing.T, p []byte) string {
	t.Helper()
	b, _ := pem.Decode(p)
	if b == nil {
		t.Fatalf("no PEM in %q", p)
	}
	sum := sha256.Sum256(b.Bytes)
	return hex.EncodeToString(sum[:])
}

// TestCertEndpointLeafFormat: a caller that asks for LeafFormat gets the
// leaf and key with the digests of the intermediates (in chain order) and
// of the key, and each intermediate by its digest; one that does not ask
// gets the whole chain as before.
func TestCertEndpointLeafFormat(t *testing.T) {
	root := certtest.New(t, certtest.Template{CommonName: "root", IsCA: true}, nil)
	inter := certtest.New(t, certtest.Template{CommonName: "intermediate", IsCA: true}, root)
	leaf := certtest.New(t, certtest.Template{DNSNames: []string{"a.example.com"}, Serial: big.NewInt(7)}, inter)
	alone := certtest.New(t, certtest.Template{DNSNames: []string{"alone.example.com"}}, nil)
	st := newTestStore(t)
	far := time.Now().Add(60 * 24 * time.Hour)
	putCert(t, st, &store.Certificate{ID: "a.example.com", Names: []string{"a.example.com"},
		ChainPEM: leaf.ChainPEM, KeyPEM: leaf.KeyPEM, NotAfter: far})
	putCert(t, st, &store.Certificate{ID: "alone.example.com", Names: []string{"alone.example.com"},
		ChainPEM: alone.ChainPEM, KeyPEM: alone.KeyPEM, NotAfter: far})
	putCert(t, st, &store.Certificate{ID: "odd.example.com", Names: []string{"odd.example.com"},
		ChainPEM: []byte("CHAIN odd\n"), KeyPEM: []byte("KEY odd\n"), NotAfter: far})
	e := startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0"}, st)
	addr := e.Addrs()[0].String()
	accept := "Accept: " + LeafFormat

	interD, rootD := derDigest(t, inter.CertPEM), derDigest(t, root.CertPEM)
	t.Run("old format unless asked", func(t *testing.T) {
		resp, body := rawRequest(t, addr, "GET", "/v1/certs/a.example.com")
		if ct := resp.Header.Get("Content-Type"); ct != "application/x-pem-file" {
			t.Errorf("Content-Type %q", ct)
		}
		if want := string(leaf.ChainPEM) + string(leaf.KeyPEM); body != want {
			t.Errorf("body %q, want the chain and key %q", body, want)
		}
		if h := resp.Header.Values(ChainHeader); len(h) != 0 {
			t.Errorf("%s %q in the old format", ChainHeader, h)
		}
	})
	t.Run("leaf format", func(t *testing.T) {
		resp, body := rawRequest(t, addr, "GET", "/v1/certs/a.example.com", accept)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %q", resp.StatusCode, body)
		}
		if ct := resp.Header.Get("Content-Type"); ct != LeafFormat {
			t.Errorf("Content-Type %q, want %q", ct, LeafFormat)
		}
		if want := string(leaf.CertPEM) + string(leaf.KeyPEM); body != want {
			t.Errorf("body %q, want leaf and key %q", body, want)
		}
		if got, want := resp.Header.Get(ChainHeader), interD+" "+rootD; got != want {
			t.Errorf("%s %q, want %q", ChainHeader, got, want)
		}
		if got, want := resp.Header.Get(KeyHeader), derDigest(t, leaf.KeyPEM); got != want {
			t.Errorf("%s %q, want %q", KeyHeader, got, want)
		}
		if resp.Header.Get(RecordHeader) != "a.example.com" || resp.Header.Get("Cache-Control") == "" {
			t.Errorf("headers %v lack the record or max-age", resp.Header)
		}
	})
	t.Run("leaf alone", func(t *testing.T) {
		resp, body := rawRequest(t, addr, "GET", "/v1/certs/alone.example.com", accept)
		if resp.Header.Get("Content-Type") != LeafFormat || resp.Header.Get(ChainHeader) != "" ||
			body != string(alone.CertPEM)+string(alone.KeyPEM) {
			t.Errorf("answer %v %q", resp.Header, body)
		}
	})
	t.Run("not PEM: old format", func(t *testing.T) {
		resp, body := rawRequest(t, addr, "GET", "/v1/certs/odd.example.com", accept)
		if resp.Header.Get("Content-Type") != "application/x-pem-file" || body != "CHAIN odd\nKEY odd\n" {
			t.Errorf("answer %v %q", resp.Header, body)
		}
	})

	tests := []struct {
		desc   string
		method string
		path   string
		status int
		body   string // exact for 200, a substring otherwise
	}{
		{desc: "intermediate", path: ChainPathPrefix + interD, status: 200, body: string(inter.CertPEM)},
		{desc: "root after it", path: ChainPathPrefix + rootD, status: 200, body: string(root.CertPEM)},
		{desc: "HEAD", method: "HEAD", path: ChainPathPrefix + interD, status: 200},
		{desc: "unknown", path: ChainPathPrefix + strings.Repeat("ab", 32), status: 404, body: "no intermediate"},
		{desc: "the leaf is no intermediate", path: ChainPathPrefix + derDigest(t, leaf.CertPEM), status: 404},
		{desc: "uppercase", path: ChainPathPrefix + strings.ToUpper(interD), status: 400, body: "not a certificate digest"},
		{desc: "short", path: ChainPathPrefix + interD[:63], status: 400, body: "not a certificate digest"},
		{desc: "long", path: ChainPathPrefix + interD + "0", status: 400, body: "not a certificate digest"},
		{desc: "not hex", path: ChainPathPrefix + "g" + interD[1:], status: 400, body: "not a certificate digest"},
		{desc: "encoded slash", path: ChainPathPrefix + interD[:32] + "%2f" + interD[32:], status: 400, body: "holds a slash"},
		{desc: "dot segments", path: ChainPathPrefix + "../certs/a.example.com", status: 400, body: "is a dot segment"},
		{desc: "encoded dot segment", path: ChainPathPrefix + "%2E%2e", status: 400, body: "is a dot segment"},
		{desc: "extra segment", path: ChainPathPrefix + interD + "/x", status: 404},
		{desc: "no digest", path: ChainPathPrefix, status: 404},
		{desc: "POST", method: "POST", path: ChainPathPrefix + interD, status: 405},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "GET"
			}
			resp, body := rawRequest(t, addr, method, tc.path)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tc.status, body)
			}
			switch {
			case tc.status == 200 && method == "GET" && body != tc.body:
				t.Errorf("body %q, want %q", body, tc.body)
			case tc.status != 200 && !strings.Contains(body, tc.body):
				t.Errorf("body %q does not contain %q", body, tc.body)
			}
			if tc.status == 200 && resp.Header.Get("Cache-Control") != "max-age=86400" {
				t.Errorf("Cache-Control %q", resp.Header.Get("Cache-Control"))
			}
		})
	}
}

// BenchmarkLeafFormat times the splitting of a chain of two intermediates
// once they are known: the map lookups by PEM text, no decoding, no hash.
func BenchmarkLeafFormat(b *testing.B) {
	root := certtest.New(b, certtest.Template{CommonName: "root", IsCA: true}, nil)
	inter := certtest.New(b, certtest.Template{CommonName: "intermediate", IsCA: true}, root)
	leaf := certtest.New(b, certtest.Template{DNSNames: []string{"a.example.com"}}, inter)
	var c intermediates
	var buf [4]*intermediate
	for b.Loop() {
		if _, ch, ok := c.splitChain(leaf.ChainPEM, buf[:0]); !ok || len(ch) != 2 {
			b.Fatal("split failed")
		}
		if keyDigest(leaf.KeyPEM) == "" {
			b.Fatal("no key digest")
		}
	}
}
