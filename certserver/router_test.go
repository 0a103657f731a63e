package certserver

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
)

func TestPathSegment(t *testing.T) {
	tests := []struct {
		desc, raw, want, err string
	}{
		{desc: "plain", raw: "a.example.com", want: "a.example.com"},
		{desc: "escaped letters", raw: "b%C3%BCcher.example", want: "bücher.example"},
		{desc: "plus stays", raw: "a+b", want: "a+b"},
		{desc: "empty", raw: "", want: ""},
		{desc: "three dots are a name", raw: "...", want: "..."},
		{desc: "dot", raw: ".", err: `path segment "." is a dot segment`},
		{desc: "dot dot", raw: "..", err: `path segment ".." is a dot segment`},
		{desc: "encoded dot dot", raw: "%2e%2E", err: `path segment "%2e%2E" is a dot segment`},
		{desc: "half encoded dot dot", raw: ".%2e", err: `path segment ".%2e" is a dot segment`},
		{desc: "encoded slash", raw: "a%2Fb", err: `path segment "a%2Fb" (decoded "a/b") holds a slash or a backslash`},
		{desc: "encoded slash and dots", raw: "a.example.com%2f..%2fb.example.com",
			err: `path segment "a.example.com%2f..%2fb.example.com" (decoded "a.example.com/../b.example.com") holds a slash`},
		{desc: "encoded backslash", raw: "a%5cb", err: `(decoded "a\\b") holds a slash or a backslash`},
		{desc: "backslash", raw: `a\b`, err: `holds a slash or a backslash`},
		{desc: "bad escape", raw: "a%2", err: `path segment "a%2": malformed percent-encoding`},
		{desc: "long segment is cut", raw: strings.Repeat("x", 300) + "%2f", err: strings.Repeat("x", 256) + `"…`},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := pathSegment(tc.raw)
			if tc.err == "" {
				if err != nil || got != tc.want {
					t.Fatalf("pathSegment(%q) = %q, %v; want %q", tc.raw, got, err, tc.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("pathSegment(%q) = %q, want an error", tc.raw, got)
			}
			if err.Status != 400 || !strings.Contains(err.Message, tc.err) {
				t.Fatalf("pathSegment(%q) error %d %q, want 400 with %q", tc.raw, err.Status, err.Message, tc.err)
			}
		})
	}
}

// A route acts on the name in its path as sent: a segment that would
// reach another name once decoded and resolved is refused, on every route
// with a name, and touches nothing.
func TestAdminPathSegmentsRefused(t *testing.T) {
	env := newDomainsEnv(t, AdminConfig{Revoker: &fakeRevoker{}})
	env.post(t, "text/plain", "a.example.com\nb.example.com\n")
	addr := strings.TrimPrefix(env.base, "http://")
	auth := "Authorization: Bearer " + testToken
	segs := []struct{ raw, want string }{
		{"a.example.com%2f..%2fb.example.com", `path segment "a.example.com%2f..%2fb.example.com" (decoded "a.example.com/../b.example.com") holds a slash`},
		{"a.example.com%2F..%2Fb.example.com", `(decoded "a.example.com/../b.example.com")`},
		{"a.example.com%5c..%5cb.example.com", `(decoded "a.example.com\\..\\b.example.com")`},
		{"%2e%2e", `path segment "%2e%2e" is a dot segment`},
		{"..", `path segment ".." is a dot segment`},
		{".", `path segment "." is a dot segment`},
		{"b.example.com%zz", `path segment "b.example.com%zz": malformed percent-encoding`},
	}
	routes := []struct{ method, path string }{
		{"GET", "/v1/domains/%s"},
		{"DELETE", "/v1/domains/%s"},
		{"DELETE", "/v1/domains/%s?revoke=keyCompromise"},
		{"POST", "/v1/domains/%s/renew"},
		{"POST", "/v1/domains/%s/revoke"},
	}
	for _, rt := range routes {
		for _, seg := range segs {
			path := fmt.Sprintf(rt.path, seg.raw)
			t.Run(rt.method+" "+path, func(t *testing.T) {
				resp, body := rawRequest(t, addr, rt.method, path, auth)
				if resp.StatusCode != 400 || !strings.Contains(errorMessage(body), seg.want) {
					t.Fatalf("status %d %s, want 400 with %q", resp.StatusCode, body, seg.want)
				}
				// Without a token the answer is 401, whatever the path.
				if resp, body := rawRequest(t, addr, rt.method, path); resp.StatusCode != 401 {
					t.Fatalf("without a token: status %d %s, want 401", resp.StatusCode, body)
				}
			})
		}
	}
	// A dot segment elsewhere in the path is refused too.
	if resp, body := rawRequest(t, addr, "DELETE", "/v1/x/../domains/b.example.com", auth); resp.StatusCode != 400 || !strings.Contains(errorMessage(body), `path segment ".."`) {
		t.Fatalf("dot segment in the route: status %d %s", resp.StatusCode, body)
	}
	for _, name := range []string{"a.example.com", "b.example.com"} {
		d, err := env.st.GetDomain(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if d.State != store.StatePending || !d.NextAttempt.Equal(env.now) {
			t.Errorf("%s was touched: state %s, next attempt %v", name, d.State, d.NextAttempt)
		}
	}
	if _, names := env.sched.calls(); len(names) != 0 {
		t.Errorf("prioritized %v", names)
	}
	// An escaped name that is one segment is still served.
	if resp, body := rawRequest(t, addr, "GET", "/v1/domains/b%2Eexample%2ecom", auth); resp.StatusCode != 200 || !strings.Contains(body, `"name":"b.example.com"`) {
		t.Fatalf("escaped name: status %d %s", resp.StatusCode, body)
	}
}

// A body over its route's limit is refused with 413 naming that limit,
// whether it comes with a Content-Length or chunked.
func TestAdminBodyLimitNamed(t *testing.T) {
	base := startAdmin(t, AdminConfig{Token: testToken, MaxBody: 64 << 10, MaxDomainsBody: 96 << 10}, newTestStore(t))
	addr := strings.TrimPrefix(base, "http://")
	tests := []struct {
		path  string
		limit int
	}{
		{"/v1/certificates", 64 << 10},
		{"/v1/domains", 96 << 10},
		{"/v1/domains/a.example.com/revoke", 4 << 10},
		{"/v1/domains/a.example.com/renew", 64 << 10},
	}
	for _, tc := range tests {
		for _, chunked := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s chunked=%v", tc.path, chunked), func(t *testing.T) {
				body := `{"x":"` + strings.Repeat("x", tc.limit) + `"}`
				resp, got := postRaw(t, addr, tc.path, body, chunked)
				want := fmt.Sprintf("request body is larger than the limit of %d bytes", tc.limit)
				if resp.StatusCode != 413 || errorMessage(got) != want {
					t.Fatalf("status %d %s, want 413 with %q", resp.StatusCode, got, want)
				}
			})
		}
	}
}

// postRaw declares a POST of body, in one chunk or with a Content-Length,
// and reads the answer. Only the head and the chunk's size line are sent:
// the server refuses a body over its limit from the declared size, and a
// body it left unread would turn its close into a reset that can destroy
// the answer before it is read (a flake seen under load).
func postRaw(t *testing.T, addr, path, body string, chunked bool) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	head := "POST " + path + " HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer " + testToken + "\r\nContent-Type: application/json\r\n"
	msg := head + fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body))
	if chunked {
		msg = head + fmt.Sprintf("Transfer-Encoding: chunked\r\n\r\n%x\r\n", len(body))
	}
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// errorMessage returns the message of a JSON error answer, or the body
// when it is not one.
func errorMessage(body string) string {
	var e api.Error
	if json.Unmarshal([]byte(body), &e) != nil || e.Message == "" {
		return body
	}
	return e.Message
}
