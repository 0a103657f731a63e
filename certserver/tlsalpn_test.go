package certserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// startTLSALPN starts a responder over st on a loopback port and returns
// it with the registry holding its metric.
func startTLSALPN(t *testing.T, st store.Store) (*TLSALPNResponder, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	r, err := NewTLSALPNResponder(TLSALPNConfig{Listen: "127.0.0.1:0", Registerer: reg}, st, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	serving(t, r.Serve)
	return r, reg
}

// alpnDial connects to addr, sends header (a PROXY protocol header, or
// nothing) and makes a TLS handshake as a CA validating sni would, offering
// protos. It returns the connection state.
func alpnDial(t *testing.T, addr, header, sni string, protos ...string) (tls.ConnectionState, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := raw.Write([]byte(header)); err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, &tls.Config{ServerName: sni, NextProtos: protos, InsecureSkipVerify: true})
	err = c.Handshake()
	return c.ConnectionState(), err
}

// TestTLSALPNResponder: a CA's connection, PROXY header first, offering
// only acme-tls/1 for a name with a stored challenge is served that name's
// challenge certificate (RFC 8737 section 3); everything else is refused
// with the alert the responder documents, and counted.
func TestTLSALPNResponder(t *testing.T) {
	st := newTestStore(t)
	ctx := context.Background()
	const name = "www.alpn.test"
	const keyAuth = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
	if err := st.PutChallenge(ctx, store.TLSALPN01Token(name), keyAuth, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// An HTTP-01 token that happens to be a name: never answered here.
	if err := st.PutChallenge(ctx, "http01.alpn.test", "x.y", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	r, reg := startTLSALPN(t, st)
	addr := r.Addr().String()
	const hdr = "PROXY TCP4 192.0.2.7 127.0.0.1 51234 443\r\n"

	t.Run("challenge answered", func(t *testing.T) {
		for _, sni := range []string{name, "WWW.Alpn.Test"} {
			cs, err := alpnDial(t, addr, hdr, sni, ACMETLS1)
			if err != nil {
				t.Fatalf("%s: %v", sni, err)
			}
			if cs.NegotiatedProtocol != ACMETLS1 {
				t.Errorf("negotiated %q, want %q", cs.NegotiatedProtocol, ACMETLS1)
			}
			checkChallengeCert(t, cs.PeerCertificates, name, keyAuth)
		}
	})
	refusals := []struct {
		desc   string
		header string
		sni    string
		protos []string
		alert  string // in the client's error
	}{
		{desc: "unknown name", header: hdr, sni: "other.alpn.test", protos: []string{ACMETLS1}, alert: "unrecognized name"},
		{desc: "an HTTP-01 token's key", header: hdr, sni: "http01.alpn.test", protos: []string{ACMETLS1}, alert: "unrecognized name"},
		{desc: "no SNI", header: hdr, sni: "", protos: []string{ACMETLS1}, alert: "unrecognized name"},
		{desc: "IP literal SNI", header: hdr, sni: "127.0.0.1", protos: []string{ACMETLS1}, alert: "unrecognized name"},
		{desc: "h2 only", header: hdr, sni: name, protos: []string{"h2", "http/1.1"}, alert: "no application protocol"},
		{desc: "no ALPN", header: hdr, sni: name, protos: nil, alert: "unrecognized name"},
		{desc: "acme-tls/1 among others", header: hdr, sni: name, protos: []string{"h2", ACMETLS1}, alert: "unrecognized name"},
		{desc: "no PROXY header", header: "", sni: name, protos: []string{ACMETLS1}, alert: ""},
	}
	for _, tc := range refusals {
		t.Run(tc.desc, func(t *testing.T) {
			cs, err := alpnDial(t, addr, tc.header, tc.sni, tc.protos...)
			if err == nil {
				t.Fatalf("handshake succeeded, served %q; want it refused", cs.PeerCertificates[0].DNSNames)
			}
			if !strings.Contains(err.Error(), tc.alert) {
				t.Errorf("handshake error %q, want the alert %q", err, tc.alert)
			}
		})
	}
	waitCounts(t, r, map[string]float64{alpnAnswered: 2, alpnUnknown: 4, alpnNoACME: 3, alpnBadProxy: 1})
	if n, err := testutil.GatherAndCount(reg, "certserver_tls_alpn_connections_total"); err != nil || n != len(alpnResults) {
		t.Errorf("registry holds %d series (%v), want %d", n, err, len(alpnResults))
	}
}

// TestTLSALPNResponderStoreFailure: a store that fails is an internal
// error alert, counted as such, never a certificate.
func TestTLSALPNResponderStoreFailure(t *testing.T) {
	r, _ := startTLSALPN(t, failingStore{Store: newTestStore(t), err: errors.New("disk on fire")})
	_, err := alpnDial(t, r.Addr().String(), "PROXY UNKNOWN\r\n", "www.alpn.test", ACMETLS1)
	if err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Fatalf("handshake error %v, want an internal error alert", err)
	}
	waitCounts(t, r, map[string]float64{alpnStoreError: 1})
}

// waitCounts waits until the responder has counted each result of want as
// often as it says, and every other result never. The client sees the
// alert before the server counts it, so this polls, for up to a minute.
func waitCounts(t *testing.T, r *TLSALPNResponder, want map[string]float64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var diff []string
		for _, res := range alpnResults {
			if got := testutil.ToFloat64(r.results[res]); got != want[res] {
				diff = append(diff, fmt.Sprintf("%s counted %v times, want %v", res, got, want[res]))
			}
		}
		if len(diff) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a minute: %s", strings.Join(diff, "; "))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkChallengeCert checks certs is one self-signed certificate for name
// alone, with the critical acmeIdentifier extension holding the DER
// OCTET STRING of SHA-256(keyAuth) (RFC 8737 section 3).
func checkChallengeCert(t *testing.T, certs []*x509.Certificate, name, keyAuth string) {
	t.Helper()
	if len(certs) != 1 {
		t.Fatalf("%d certificates, want 1", len(certs))
	}
	c := certs[0]
	if len(c.DNSNames) != 1 || c.DNSNames[0] != name || len(c.IPAddresses)+len(c.EmailAddresses)+len(c.URIs) != 0 {
		t.Errorf("subjectAltName %v %v %v %v, want only dNSName %s", c.DNSNames, c.IPAddresses, c.EmailAddresses, c.URIs, name)
	}
	if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	want := sha256.Sum256([]byte(keyAuth))
	found := 0
	for _, e := range c.Extensions {
		if !e.Id.Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}) {
			continue
		}
		found++
		if !e.Critical {
			t.Errorf("acmeIdentifier is not critical")
		}
		var got []byte
		rest, err := asn1.Unmarshal(e.Value, &got)
		if err != nil || len(rest) != 0 || !bytes.Equal(got, want[:]) || e.Value[0] != 0x04 {
			t.Errorf("acmeIdentifier value %x (%v), want the OCTET STRING of %x", e.Value, err, want)
		}
	}
	if found != 1 {
		t.Errorf("%d acmeIdentifier extensions, want 1", found)
	}
}
