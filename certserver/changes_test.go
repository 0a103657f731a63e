package certserver

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

func TestChangesEndpoint(t *testing.T) {
	st := newTestStore(t)
	e := startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0"}, st)
	addr := e.Addrs()[0].String()
	ask := func(since string) (cursor string, lines []string) {
		t.Helper()
		resp, body := rawRequest(t, addr, "GET", "/v1/changes?since="+since)
		if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("status %d, Cache-Control %q (body %q)", resp.StatusCode, resp.Header.Get("Cache-Control"), body)
		}
		lines = strings.Split(strings.TrimSuffix(body, "\n"), "\n")
		epoch, v, ok := strings.Cut(lines[0], " ")
		if !ok {
			t.Fatalf("first line %q is not EPOCH VERSION", lines[0])
		}
		return epoch + "." + v, lines[1:]
	}

	cur, lines := ask("")
	if len(lines) != 1 || lines[0] != "reset" {
		t.Fatalf("no cursor: %q, want reset", lines)
	}
	if _, lines := ask("nonsense"); len(lines) != 1 || lines[0] != "reset" {
		t.Fatalf("a malformed cursor: %q, want reset", lines)
	}
	wild := func(chain string) *store.Certificate {
		return &store.Certificate{ID: "*.wild.example.org", Names: []string{"*.wild.example.org", "wild.example.org"},
			ChainPEM: []byte(chain), KeyPEM: []byte("KEY wild"), NotAfter: time.Now().Add(time.Hour)}
	}
	putCert(t, st, wild("CHAIN wild"))
	next, lines := ask(cur)
	if next != cur || len(lines) != 0 {
		t.Fatalf("after a put of names nothing served: %s %q, want nothing at %s", next, lines, cur)
	}
	putCert(t, st, wild("CHAIN wild renewed"))
	next, lines = ask(cur)
	if strings.Join(lines, ",") != "*.wild.example.org,wild.example.org" {
		t.Fatalf("after a replacement: %q", lines)
	}
	if err := st.DeleteCertificate(context.Background(), "*.wild.example.org"); err != nil {
		t.Fatal(err)
	}
	if _, lines := ask(next); strings.Join(lines, ",") != "*.wild.example.org,wild.example.org" {
		t.Fatalf("after a delete: %q", lines)
	}
}
