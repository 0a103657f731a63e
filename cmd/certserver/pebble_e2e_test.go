package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/renewer/pebbletest"
	"github.com/certserver/certserver/store"
)

// TestServeWithPebble runs the real sidecar against a real Pebble: the
// challenge listener is where Pebble validates HTTP-01, Pebble's HTTPS is
// trusted through acme.ca_roots, and a name added with `certserver domains
// add` becomes valid and is served by the certificate endpoint with a
// chain that verifies against Pebble's root.
func TestServeWithPebble(t *testing.T) {
	start := time.Now()
	ca := pebbletest.Start(t, pebbletest.Options{})
	const name = "shop.e2e.test"
	ca.DNS.SetA(name, netip.MustParseAddr("127.0.0.1"))

	s, sock := servePebble(t, ca, "email = \"ops@e2e.test\"\nprofile = \"default\"\n", "[log]\nlevel = \"debug\"\n")
	if code, out, errOut := runCLI(t, s.admin, "", "domains", "add", name); code != exitOK || !strings.Contains(out, "1 added") {
		t.Fatalf("domains add: exit code %d\n%s%s", code, out, errOut)
	}

	var doc api.Domain
	waitFor(t, name+" to become valid", func() bool {
		code, out, _ := runCLI(t, s.admin, "", "domains", "show", "--json", name)
		if code != exitOK || json.Unmarshal([]byte(out), &doc) != nil {
			return false
		}
		if doc.State == "failing" {
			t.Fatalf("the order failed: %s", doc.LastError)
		}
		return doc.State == "valid"
	})
	c := doc.Certificate
	if c == nil || c.Source != string(store.SourceACME) || c.Origin != ca.DirectoryURL || c.KeyType != "ecdsa-p256" || c.RenewAt.IsZero() ||
		c.NotAfter.Sub(c.NotBefore) < 80*24*time.Hour || doc.NextAttempt.IsZero() {
		t.Errorf("valid record %+v, certificate %+v: want a 90-day ACME certificate with a renewal time", doc, c)
	}
	if n := ca.OrdersFor(name); n != 1 {
		t.Errorf("%d orders for %s, want 1", n, name)
	}

	hc := unixHTTPClient(sock)
	resp, err := hc.Get("http://certs/v1/certs/" + name)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("certificate endpoint: %d %q", resp.StatusCode, body)
	}
	var chain []byte
	keys := 0
	for rest := body; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			chain = append(chain, pem.EncodeToMemory(b)...)
		} else if strings.HasSuffix(b.Type, "PRIVATE KEY") {
			keys++
		}
	}
	if keys != 1 {
		t.Errorf("%d private keys served, want 1", keys)
	}
	if err := ca.VerifyChain(t, chain, name); err != nil {
		t.Errorf("served chain does not verify against Pebble's root for %s: %v", name, err)
	}
	if strings.Contains(s.log.String(), "PRIVATE KEY") || strings.Contains(s.log.String(), testToken) {
		t.Error("the log holds a key or the admin token")
	}
	t.Logf("Pebble start to verified certificate: %s", time.Since(start).Round(time.Millisecond))
}

// writeListenerRoot writes the root of the certificate Pebble serves its
// directory with to path, as PEM: it is what pebbletest's CertPool trusts,
// read from a verified handshake.
// servePebble starts the real sidecar against ca with what every Pebble
// test of the sidecar needs: its store and certificate socket in a
// directory of the test's, the challenge listener on the port Pebble
// validates HTTP-01 on, Pebble's HTTPS trusted through acme.ca_roots, the
// pre-flight asking ca's DNS server (never the system's). acme is more
// lines for [acme], more further tables. It returns the sidecar and the
// path of its certificate socket.
func servePebble(t *testing.T, ca *pebbletest.Server, acme, more string) (s *served, sock string) {
	t.Helper()
	return servePebbleRenewer(t, ca, acme, "", more)
}

// servePebbleRenewer is servePebble with more lines for [renewer].
func servePebbleRenewer(t testing.TB, ca *pebbletest.Server, acme, renewer, more string) (s *served, sock string) {
	t.Helper()
	dir := t.TempDir()
	roots := filepath.Join(dir, "pebble-listener-root.pem")
	writeListenerRoot(t, ca, roots)
	sock = filepath.Join(dir, "certs.sock")
	s = startServe(t, `
[store]
path = "`+filepath.Join(dir, "store")+`"
[certs]
socket = "`+sock+`"
[challenge]
listen = "127.0.0.1:`+strconv.Itoa(ca.HTTPPort)+`"
[admin]
listen = "127.0.0.1:0"
[acme]
directory = "`+ca.DirectoryURL+`"
agree_terms = true
ca_roots = "`+roots+`"
timeout = "30s"
`+acme+`
[renewer]
idle_wait = "1s"
`+renewer+`
[preflight]
resolvers = ["`+ca.DNSAddr()+`"]
`+more)
	return s, sock
}

func writeListenerRoot(t testing.TB, ca *pebbletest.Server, path string) {
	t.Helper()
	u, err := url.Parse(ca.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: ca.CertPool(), ServerName: u.Hostname()})
	if err != nil {
		t.Fatalf("handshake with Pebble: %v", err)
	}
	defer conn.Close()
	chains := conn.ConnectionState().VerifiedChains
	if len(chains) == 0 {
		t.Fatal("no verified chain from Pebble")
	}
	root := chains[0][len(chains[0])-1]
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// unixHTTPClient returns an HTTP client whose every request goes to the
// unix socket at path.
func unixHTTPClient(path string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: unixDialer(path)}}
}

func unixDialer(path string) func(ctx context.Context, _, _ string) (net.Conn, error) {
	return func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
}
