package certserver

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// rawRequest sends one request with path exactly as given, and header
// lines ("Name: value") if any, and returns the answer with its body read.
func rawRequest(t *testing.T, addr, method, path string, header ...string) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	head := method + " " + path + " HTTP/1.1\r\nHost: certs\r\nConnection: close\r\n"
	for _, h := range header {
		head += h + "\r\n"
	}
	if _, err := io.WriteString(c, head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, "http://certs/", nil)
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp, string(b)
}

func TestCertEndpoint(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	st := newTestStore(t)
	far := now.Add(60 * 24 * time.Hour)
	putCert(t, st, &store.Certificate{ID: "example.com", Names: []string{"example.com", "www.example.com"},
		ChainPEM: []byte("CHAIN example.com\n"), KeyPEM: []byte("KEY example.com\n"), NotAfter: far, RenewAt: far.Add(-30 * 24 * time.Hour)})
	putCert(t, st, &store.Certificate{ID: "*.wild.example.org", Names: []string{"*.wild.example.org"},
		ChainPEM: []byte("CHAIN wild"), KeyPEM: []byte("KEY wild"), NotAfter: far})
	putCert(t, st, &store.Certificate{ID: "apex.example.org", Names: []string{"apex.example.org", "*.apex.example.org"},
		ChainPEM: []byte("CHAIN apex\n"), KeyPEM: []byte("KEY apex\n"), NotAfter: far})
	putCert(t, st, &store.Certificate{ID: "due.example.net", Names: []string{"due.example.net"},
		ChainPEM: []byte("CHAIN due\n"), KeyPEM: []byte("KEY due\n"), NotAfter: now.Add(10 * 24 * time.Hour), RenewAt: now.Add(-time.Hour)})
	putCert(t, st, &store.Certificate{ID: "soon.example.net", Names: []string{"soon.example.net"},
		ChainPEM: []byte("CHAIN soon\n"), KeyPEM: []byte("KEY soon\n"), NotAfter: far, RenewAt: now.Add(3 * time.Minute)})
	putCert(t, st, &store.Certificate{ID: "expired.example.net", Names: []string{"expired.example.net"},
		ChainPEM: []byte("CHAIN expired\n"), KeyPEM: []byte("KEY expired\n"), NotAfter: now.Add(-time.Hour)})
	putCert(t, st, &store.Certificate{ID: "xn--bcher-kva.example", Names: []string{"xn--bcher-kva.example"},
		ChainPEM: []byte("CHAIN idn\n"), KeyPEM: []byte("KEY idn\n"), NotAfter: far})

	e := startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0", Now: func() time.Time { return now }}, st)
	addr := e.Addrs()[0].String()

	const pemType = "application/x-pem-file"
	tests := []struct {
		desc         string
		method, path string
		status       int
		body         string // exact for 200, a substring otherwise
		cacheControl string
		contentType  string
		record       string // X-Certserver-Record of a 200
		match        string // X-Certserver-Match of a 200
	}{
		{desc: "found exact", path: "/v1/certs/example.com", status: 200,
			body: "CHAIN example.com\nKEY example.com\n", cacheControl: "max-age=600", contentType: pemType, record: "example.com", match: "example.com"},
		{desc: "found by another SAN", path: "/v1/certs/www.example.com", status: 200,
			body: "CHAIN example.com\nKEY example.com\n", cacheControl: "max-age=600", contentType: pemType, record: "example.com", match: "www.example.com"},
		{desc: "name is normalized", path: "/v1/certs/WWW.Example.COM.", status: 200,
			body: "CHAIN example.com\nKEY example.com\n", cacheControl: "max-age=600", contentType: pemType},
		{desc: "found via wildcard, newlines added", path: "/v1/certs/a.wild.example.org", status: 200,
			body: "CHAIN wild\nKEY wild\n", cacheControl: "max-age=600", contentType: pemType, record: "*.wild.example.org", match: "*.wild.example.org"},
		{desc: "found via the wildcard of an apex-first record", path: "/v1/certs/a.apex.example.org", status: 200,
			body: "CHAIN apex\nKEY apex\n", cacheControl: "max-age=600", contentType: pemType, record: "apex.example.org", match: "*.apex.example.org"},
		{desc: "internationalized name", path: "/v1/certs/b%C3%BCcher.example", status: 200,
			body: "CHAIN idn\nKEY idn\n", cacheControl: "max-age=600", contentType: pemType},
		{desc: "renewal due: short max-age", path: "/v1/certs/due.example.net", status: 200,
			body: "CHAIN due\nKEY due\n", cacheControl: "max-age=10", contentType: pemType},
		{desc: "renewal in 3m: until then", path: "/v1/certs/soon.example.net", status: 200,
			body: "CHAIN soon\nKEY soon\n", cacheControl: "max-age=180", contentType: pemType},
		{desc: "expired: still served, short max-age", path: "/v1/certs/expired.example.net", status: 200,
			body: "CHAIN expired\nKEY expired\n", cacheControl: "max-age=10", contentType: pemType},
		{desc: "HEAD", method: "HEAD", path: "/v1/certs/example.com", status: 200, cacheControl: "max-age=600", contentType: pemType},
		{desc: "wildcard covers one label only", path: "/v1/certs/b.a.wild.example.org", status: 404, body: "no certificate", cacheControl: "max-age=10"},
		{desc: "not found", path: "/v1/certs/unknown.example.com", status: 404, body: "no certificate for unknown.example.com", cacheControl: "max-age=10"},
		{desc: "IPv4 literal", path: "/v1/certs/1.2.3.4", status: 400, body: "ip address"},
		{desc: "IPv6 literal", path: "/v1/certs/[::1]", status: 400, body: "ip address"},
		{desc: "wildcard", path: "/v1/certs/*.example.com", status: 400, body: "wildcard"},
		{desc: "escaped wildcard", path: "/v1/certs/%2A.example.com", status: 400, body: "wildcard"},
		{desc: "empty label", path: "/v1/certs/bad..name", status: 400, body: `invalid name "bad..name"`},
		{desc: "underscore", path: "/v1/certs/a_b.example.com", status: 400, body: "invalid name"},
		{desc: "one label", path: "/v1/certs/localhost", status: 400, body: "invalid name"},
		{desc: "POST", method: "POST", path: "/v1/certs/example.com", status: 405},
		{desc: "DELETE", method: "DELETE", path: "/v1/certs/example.com", status: 405},
		{desc: "no name", path: "/v1/certs/", status: 404},
		{desc: "extra segment", path: "/v1/certs/example.com/key", status: 404},
		// The name is the segment as sent: no decoding into a path, no dot
		// segments resolved (which would serve example.com).
		{desc: "encoded slashes and dot segment", path: "/v1/certs/x.example.net%2f..%2fexample.com", status: 400,
			body: `path segment "x.example.net%2f..%2fexample.com" (decoded "x.example.net/../example.com") holds a slash`},
		{desc: "dot segment", path: "/v1/certs/x.example.net/../example.com", status: 400, body: `path segment ".." is a dot segment`},
		{desc: "dot segment before the prefix", path: "/v1/../v1/certs/example.com", status: 400, body: `path segment ".." is a dot segment`},
		{desc: "encoded dot segment", path: "/v1/certs/%2e%2E", status: 400, body: `path segment "%2e%2E" is a dot segment`},
		{desc: "single dot", path: "/v1/certs/.", status: 400, body: `path segment "." is a dot segment`},
		{desc: "encoded backslash", path: "/v1/certs/x%5cexample.com", status: 400, body: `path segment "x%5cexample.com"`},
		{desc: "bad escape", path: "/v1/certs/example.com%zz", status: 400, body: "malformed percent-encoding"},
		{desc: "root", path: "/", status: 404},
		{desc: "other path", path: "/v1/certificates/example.com", status: 404},
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
			case tc.status == 200 && body != tc.body:
				t.Errorf("body %q, want %q", body, tc.body)
			case tc.status != 200 && !strings.Contains(body, tc.body):
				t.Errorf("body %q does not contain %q", body, tc.body)
			}
			if tc.cacheControl != "" {
				if got := resp.Header.Get("Cache-Control"); got != tc.cacheControl {
					t.Errorf("Cache-Control %q, want %q", got, tc.cacheControl)
				}
			}
			if tc.contentType != "" {
				if got := resp.Header.Get("Content-Type"); got != tc.contentType {
					t.Errorf("Content-Type %q, want %q", got, tc.contentType)
				}
			}
			if tc.record != "" {
				if got := resp.Header.Get("X-Certserver-Record"); got != tc.record {
					t.Errorf("X-Certserver-Record %q, want %q", got, tc.record)
				}
			}
			if tc.match != "" {
				if got := resp.Header.Get("X-Certserver-Match"); got != tc.match {
					t.Errorf("X-Certserver-Match %q, want %q", got, tc.match)
				}
			}
			if tc.status == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow %q, want GET, HEAD", resp.Header.Get("Allow"))
			}
		})
	}
}

func TestCertEndpointStoreFailure(t *testing.T) {
	st := failingStore{Store: newTestStore(t), err: errors.New("disk on fire: /secret/path")}
	e := startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0"}, st)
	resp, body := rawRequest(t, e.Addrs()[0].String(), "GET", "/v1/certs/example.com")
	if resp.StatusCode != 500 {
		t.Fatalf("status %d, want 500", resp.StatusCode)
	}
	if strings.Contains(body, "disk") {
		t.Errorf("body %q reveals the cause", body)
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", got)
	}
}

func TestNewCertEndpointConfig(t *testing.T) {
	st := newTestStore(t)
	tests := []struct {
		desc string
		cfg  CertEndpointConfig
		want string
	}{
		{desc: "nowhere to listen", cfg: CertEndpointConfig{}, want: "neither Socket nor Listen"},
		{desc: "min above max", cfg: CertEndpointConfig{Listen: "127.0.0.1:0", MinAge: time.Hour, MaxAge: time.Minute}, want: "MinAge"},
		{desc: "negative max age", cfg: CertEndpointConfig{Listen: "127.0.0.1:0", MaxAge: -time.Second}, want: "MaxAge"},
		{desc: "mode with type bits", cfg: CertEndpointConfig{Socket: "/x", SocketMode: 0o4660}, want: "SocketMode"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := NewCertEndpoint(tc.cfg, st, testLogger(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to name %q", err, tc.want)
			}
		})
	}
	if _, err := NewCertEndpoint(CertEndpointConfig{Listen: "127.0.0.1:0"}, nil, testLogger(t)); err == nil {
		t.Error("nil store accepted")
	}
	if _, err := NewCertEndpoint(CertEndpointConfig{Listen: "127.0.0.1:0"}, st, nil); err == nil {
		t.Error("nil logger accepted")
	}
}

// recordingOnDemand records the names it is asked for.
type recordingOnDemand struct {
	mu    sync.Mutex
	names []string
}

func (r *recordingOnDemand) Request(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.names = append(r.names, name)
}

func (r *recordingOnDemand) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.names
	r.names = nil
	return n
}

func TestCertEndpointOnDemand(t *testing.T) {
	st := newTestStore(t)
	far := time.Now().Add(60 * 24 * time.Hour)
	putCert(t, st, &store.Certificate{ID: "have.example.com", Names: []string{"have.example.com"},
		ChainPEM: []byte("CHAIN\n"), KeyPEM: []byte("KEY\n"), NotAfter: far})
	putCert(t, st, &store.Certificate{ID: "*.wild.example.com", Names: []string{"*.wild.example.com"},
		ChainPEM: []byte("CHAIN\n"), KeyPEM: []byte("KEY\n"), NotAfter: far})
	// U+2603 is DISALLOWED in IDNA2008: no CA issues for it any more, but
	// a certificate issued before is served.
	putCert(t, st, &store.Certificate{ID: "xn--n3h.example.com", Names: []string{"xn--n3h.example.com"},
		ChainPEM: []byte("CHAIN\n"), KeyPEM: []byte("KEY\n"), NotAfter: far})
	od := &recordingOnDemand{}
	e := startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0", OnDemand: od}, st)
	addr := e.Addrs()[0].String()

	tests := []struct {
		desc   string
		method string
		name   string
		status int
		want   []string // names OnDemand was asked for
	}{
		{desc: "unknown name", method: "GET", name: "new.example.com", status: 404, want: []string{"new.example.com"}},
		{desc: "unknown name is normalized", method: "GET", name: "NEW.Example.COM.", status: 404, want: []string{"new.example.com"}},
		{desc: "internationalized name", method: "GET", name: "b%C3%BCcher.example", status: 404, want: []string{"xn--bcher-kva.example"}},
		{desc: "HEAD of an unknown name", method: "HEAD", name: "head.example.com", status: 404, want: []string{"head.example.com"}},
		{desc: "found name", method: "GET", name: "have.example.com", status: 200},
		{desc: "name found through a wildcard", method: "GET", name: "a.wild.example.com", status: 200},
		{desc: "name outside IDNA2008 found", method: "GET", name: "xn--n3h.example.com", status: 200},
		{desc: "name outside IDNA2008 not ordered", method: "GET", name: "xn--i-7iq.example", status: 404},
		{desc: "IP address", method: "GET", name: "192.0.2.1", status: 400},
		{desc: "wildcard", method: "GET", name: "*.example.com", status: 400},
		{desc: "one label", method: "GET", name: "localhost", status: 400},
		{desc: "underscore", method: "GET", name: "a_b.example.com", status: 400},
		{desc: "POST of an unknown name", method: "POST", name: "post.example.com", status: 405},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			resp, body := rawRequest(t, addr, tc.method, CertPathPrefix+tc.name)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %q", resp.StatusCode, tc.status, body)
			}
			if got := od.take(); !slices.Equal(got, tc.want) {
				t.Errorf("on-demand requests %q, want %q", got, tc.want)
			}
		})
	}
}

// Without an OnDemand a miss is a plain 404.
func TestCertEndpointWithoutOnDemand(t *testing.T) {
	e := startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0"}, newTestStore(t))
	resp, _ := rawRequest(t, e.Addrs()[0].String(), "GET", CertPathPrefix+"new.example.com")
	if resp.StatusCode != 404 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}
