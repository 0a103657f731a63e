package nginx_test

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
)

// TestACMEIssueThroughTLSALPN: with nginx's stream snippet
// (certserver-stream.conf) in front of its https server, and nothing
// listening where Pebble would validate HTTP-01, a name added with
// `certserver domains add` is issued over TLS-ALPN-01 (Pebble -> nginx's
// stream server, which sends the acme-tls/1 connection to the sidecar's
// responder), and then served through the same stream front to an
// ordinary https client, a chain that verifies against Pebble's roots.
// The https server behind the front sees the client's own address and
// port (PROXY protocol), not nginx's.
func TestACMEIssueThroughTLSALPN(t *testing.T) {
	t.Parallel()
	const name = "www.alpn.test"
	env := startACMEEnv(t, acmeEnvOptions{TLSALPN: true})
	env.pointHere(name)

	if certs, err := env.served(name); err != nil || !env.isFallback(certs) {
		t.Fatalf("before issuance, through the stream front: %v, want the fallback", err)
	}
	env.side.addDomains(t, name)
	var leaf *x509.Certificate
	eventually(t, 60*time.Second, name+" served through the stream front", env.issued(t, name, &leaf))
	eventually(t, 5*time.Second, name+" valid", env.side.domainState(name, "valid", nil))
	if n := env.ca.OrdersFor(name); n != 1 {
		t.Errorf("%d ACME orders for %s, want 1", n, name)
	}
	// Pebble validated over TLS-ALPN-01: nothing else could answer.
	eventually(t, 10*time.Second, "the sidecar's log line of the tls-alpn-01 challenge answered", func() error {
		if !strings.Contains(env.side.log(), `msg="tls-alpn-01 challenge answered" subsystem=tls_alpn name=`+name) {
			return fmt.Errorf("not in the sidecar's log")
		}
		return nil
	})

	// An ordinary client from another loopback address: its address and
	// port reach the https server through the front.
	const clientIP = "127.0.0.5"
	d := &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIP)}}
	conn, err := tls.DialWithDialer(d, "tcp", env.ngx.HTTPSAddr(), &tls.Config{
		ServerName: name, RootCAs: env.ca.Roots(t), NextProtos: []string{"http/1.1"},
	})
	if err != nil {
		t.Fatalf("https through the stream front, verified against Pebble's roots: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", name)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.Header.Get(nginxtest.RemoteAddrHeader), conn.LocalAddr().String(); resp.StatusCode != 200 || got != want {
		t.Errorf("https server saw the client as %q (status %d), want %s", got, resp.StatusCode, want)
	}

	// The front still sends acme-tls/1 to the responder, which refuses a
	// name it holds no challenge for: nobody gets a certificate that way.
	raw, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", env.ngx.HTTPSAddr(), &tls.Config{
		ServerName: "other.alpn.test", NextProtos: []string{"acme-tls/1"}, InsecureSkipVerify: true,
	})
	if err == nil {
		raw.Close()
		t.Errorf("acme-tls/1 handshake for a name without a challenge succeeded")
	} else if !strings.Contains(err.Error(), "unrecognized name") {
		t.Errorf("acme-tls/1 handshake for a name without a challenge: %v, want unrecognized_name", err)
	}
	env.ngx.AssertCleanErrorLog(t)
}
