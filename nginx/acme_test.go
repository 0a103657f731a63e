package nginx_test

import (
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/certserver/certserver/nginx/nginxtest"
)

// TestACMESnippet checks that certserver-acme.conf sends HTTP-01 challenge
// requests, with their Host, to the certserver_acme upstream and leaves
// other paths to the server.
func TestACMESnippet(t *testing.T) {
	ca := newTestCA(t)
	fbCert, fbKey := ca.issue(t, "fallback.invalid").writeFiles(t, t.TempDir(), "fallback")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type request struct{ host, path string }
	got := make(chan request, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- request{r.Host, r.URL.Path}
		io.WriteString(w, "key-authorization")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	ngx := nginxtest.Start(t, nginxtest.Options{
		Sidecar:      "unix:/nonexistent/certs.sock",
		ACME:         l.Addr().String(),
		FallbackCert: fbCert,
		FallbackKey:  fbKey,
	})

	get := func(path string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+ngx.HTTPAddr()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "shop.example.test"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}

	if code, body := get("/.well-known/acme-challenge/TOKEN123"); code != 200 || body != "key-authorization" {
		t.Errorf("challenge request: %d %q, want 200 from the upstream", code, body)
	}
	select {
	case r := <-got:
		if r.host != "shop.example.test" || r.path != "/.well-known/acme-challenge/TOKEN123" {
			t.Errorf("upstream saw Host %q path %q", r.host, r.path)
		}
	default:
		t.Error("the upstream saw no request")
	}
	if code, _ := get("/index.html"); code != 404 {
		t.Errorf("other path: %d, want the server's own 404", code)
	}
	ngx.AssertCleanErrorLog(t)
}
