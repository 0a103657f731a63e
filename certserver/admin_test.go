package certserver

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
	"github.com/certserver/certserver/store"
)

const testToken = "s3cret-token"

// call sends one request to the admin API and returns the status, the
// decoded JSON body (nil when it is not JSON) and the raw body.
func call(t *testing.T, method, url, token, contentType, body string) (*http.Response, map[string]any, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if json.Unmarshal(b, &doc) != nil {
		doc = nil
	}
	return resp, doc, string(b)
}

func importBody(t *testing.T, c testCert) string {
	b, err := json.Marshal(api.ImportRequest{ChainPEM: string(c.chain), KeyPEM: string(c.key), Source: "import", Origin: "/etc/ssl/x.pem"})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestAdminAuth(t *testing.T) {
	base := startAdmin(t, AdminConfig{Token: testToken}, newTestStore(t))
	valid := importBody(t, newTestCert(t, time.Now().Add(30*24*time.Hour), "auth.example.com"))
	tests := []struct {
		desc         string
		method, path string
		auth         string
		status       int
		want         string
	}{
		{desc: "no header", method: "POST", path: "/v1/certificates", status: 401, want: "missing bearer token"},
		{desc: "basic scheme", method: "POST", path: "/v1/certificates", auth: "Basic dXNlcjpwYXNz", status: 401, want: "Bearer scheme"},
		{desc: "bare token", method: "POST", path: "/v1/certificates", auth: testToken, status: 401, want: "Bearer scheme"},
		{desc: "wrong token", method: "POST", path: "/v1/certificates", auth: "Bearer nope", status: 401, want: "invalid token"},
		{desc: "token prefix", method: "POST", path: "/v1/certificates", auth: "Bearer " + testToken[:5], status: 401, want: "invalid token"},
		{desc: "right token", method: "POST", path: "/v1/certificates", auth: "Bearer " + testToken, status: 201, want: "imported"},
		{desc: "scheme is case-insensitive", method: "POST", path: "/v1/certificates", auth: "bearer " + testToken, status: 200, want: "unchanged"},
		{desc: "unknown route needs a token too", method: "GET", path: "/v1/secret", status: 401},
		{desc: "unknown route with token", method: "GET", path: "/v1/secret", auth: "Bearer " + testToken, status: 404, want: "no such endpoint"},
		{desc: "healthz needs no token", method: "GET", path: "/healthz", status: 200},
		{desc: "healthz with a wrong token", method: "GET", path: "/healthz", auth: "Bearer nope", status: 200},
		{desc: "readyz needs no token", method: "GET", path: "/readyz", status: 200},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			resp, doc, raw := call(t, tc.method, base+tc.path, tc.auth, "application/json", valid)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, raw)
			}
			if tc.status == 401 {
				if doc == nil || doc["error"] == nil {
					t.Errorf("401 body is not a JSON error: %q", raw)
				}
				if resp.Header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
			}
			if !strings.Contains(raw, tc.want) {
				t.Errorf("body %q does not contain %q", raw, tc.want)
			}
		})
	}
}

func TestAdminImportBadInput(t *testing.T) {
	now := time.Now()
	base := startAdmin(t, AdminConfig{Token: testToken, MaxBody: 64 << 10}, newTestStore(t))
	good := newTestCert(t, now.Add(30*24*time.Hour), "good.example.com")
	other := newTestCert(t, now.Add(30*24*time.Hour), "other.example.com")
	expired := newTestCert(t, now.Add(-time.Hour), "expired.example.com")
	doc := func(chain, key []byte) string {
		b, _ := json.Marshal(map[string]string{"chain_pem": string(chain), "key_pem": string(key)})
		return string(b)
	}
	tests := []struct {
		desc        string
		method      string
		path        string
		contentType string
		body        string
		status      int
		want        string // in the error message
		reason      string
	}{
		{desc: "bad JSON", body: `{"chain_pem": `, status: 400, want: "invalid JSON"},
		{desc: "syntax error", body: `{"chain_pem" "x"}`, status: 400, want: "invalid JSON at byte"},
		{desc: "not an object", body: `["x"]`, status: 400, want: "invalid JSON"},
		{desc: "unknown field", body: `{"chain_pem":"x","key_pem":"y","chain":"z"}`, status: 400, want: `unknown field "chain"`},
		{desc: "wrong type", body: `{"chain_pem":1,"key_pem":"y"}`, status: 400, want: `field "chain_pem" must be a string`},
		{desc: "trailing data", body: doc(good.chain, good.key) + `{}`, status: 400, want: "unexpected data after the object"},
		{desc: "empty body", body: ``, status: 400, want: "empty request body"},
		{desc: "wrong content type", contentType: "text/plain", body: doc(good.chain, good.key), status: 415, want: `content type "text/plain"`},
		{desc: "missing chain", body: `{"key_pem":"y"}`, status: 400, want: "chain_pem is required"},
		{desc: "missing key", body: `{"chain_pem":"x"}`, status: 400, want: "key_pem is required"},
		{desc: "bad source", body: `{"chain_pem":"x","key_pem":"y","source":"acme"}`, status: 400, want: `source "acme"`},
		{desc: "long origin", body: `{"chain_pem":"x","key_pem":"y","origin":"` + strings.Repeat("o", 5000) + `"}`, status: 400, want: "origin"},
		{desc: "body over the limit", body: `{"chain_pem":"` + strings.Repeat("x", 65<<10) + `","key_pem":"y"}`, status: 413, want: "larger than the limit of 65536 bytes"},
		{desc: "not a certificate", body: doc([]byte("hello"), good.key), status: 422, reason: api.ReasonNotCertificate},
		{desc: "key instead of chain", body: doc(good.key, good.key), status: 422, reason: api.ReasonNotCertificate},
		{desc: "bad key", body: doc(good.chain, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")), status: 422, reason: api.ReasonBadKey},
		{desc: "key does not match", body: doc(good.chain, other.key), status: 422, want: "does not match", reason: api.ReasonKeyMismatch},
		{desc: "expired", body: doc(expired.chain, expired.key), status: 422, want: "expired", reason: api.ReasonExpired},
		{desc: "GET on the import route", method: "GET", status: 405, want: "allowed: POST"},
		{desc: "unknown route", path: "/v1/certificate", status: 404, want: "no such endpoint"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			method, path, ct := tc.method, tc.path, tc.contentType
			if method == "" {
				method = "POST"
			}
			if path == "" {
				path = "/v1/certificates"
			}
			if ct == "" {
				ct = "application/json"
			}
			var resp *http.Response
			var doc map[string]any
			var raw string
			if tc.status == http.StatusRequestEntityTooLarge {
				// Declared, not sent: see postRaw.
				resp, raw = postRaw(t, strings.TrimPrefix(base, "http://"), path, tc.body, false)
				if json.Unmarshal([]byte(raw), &doc) != nil {
					doc = nil
				}
			} else {
				resp, doc, raw = call(t, method, base+path, "Bearer "+testToken, ct, tc.body)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, raw)
			}
			if doc == nil {
				t.Fatalf("body is not JSON: %q", raw)
			}
			msg, _ := doc["error"].(string)
			if msg == "" || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want it to contain %q", msg, tc.want)
			}
			if reason, _ := doc["reason"].(string); reason != tc.reason {
				t.Errorf("reason %q, want %q", reason, tc.reason)
			}
			if resp.Header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type %q", resp.Header.Get("Content-Type"))
			}
		})
	}
	// Nothing of it was stored.
	cl, err := client.New(base, testToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Health(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestAdminImport(t *testing.T) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Second)
	st := newTestStore(t)
	base := startAdmin(t, AdminConfig{Token: testToken, Now: func() time.Time { return now }}, st)
	cl, err := client.New(strings.TrimPrefix(base, "http://"), testToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := newTestCert(t, now.Add(60*24*time.Hour), "shop.example.com", "www.shop.example.com")
	older := newTestCert(t, now.Add(30*24*time.Hour), "shop.example.com")
	newer := newTestCert(t, now.Add(90*24*time.Hour), "shop.example.com", "www.shop.example.com")
	req := func(c testCert) *api.ImportRequest {
		return &api.ImportRequest{ChainPEM: string(c.chain), KeyPEM: string(c.key), Source: api.SourceCertbot, Origin: "/etc/letsencrypt/live/shop.example.com"}
	}

	steps := []struct {
		desc   string
		cert   testCert
		result string
		reason string
		stored testCert
	}{
		{desc: "new certificate", cert: first, result: api.ResultImported, stored: first},
		{desc: "same again", cert: first, result: api.ResultUnchanged, stored: first},
		{desc: "older one", cert: older, result: api.ResultSkipped, reason: api.ReasonNewerStored, stored: first},
		{desc: "newer one replaces", cert: newer, result: api.ResultImported, stored: newer},
	}
	for _, s := range steps {
		t.Run(s.desc, func(t *testing.T) {
			resp, err := cl.ImportCertificate(ctx, req(s.cert))
			if err != nil {
				t.Fatal(err)
			}
			if resp.Result != s.result || resp.Reason != s.reason {
				t.Fatalf("result %q reason %q, want %q %q", resp.Result, resp.Reason, s.result, s.reason)
			}
			if resp.ID != "shop.example.com" || resp.Serial != s.cert.serial || !resp.NotAfter.Equal(s.cert.notAfter) {
				t.Errorf("response %+v does not describe the upload", resp)
			}
			got, err := st.GetCertificate(ctx, "shop.example.com")
			if err != nil {
				t.Fatal(err)
			}
			if got.Serial != s.stored.serial {
				t.Errorf("stored serial %s, want %s", got.Serial, s.stored.serial)
			}
			if got.Source != api.SourceCertbot || got.Origin != "/etc/letsencrypt/live/shop.example.com" || got.StoredAt.IsZero() {
				t.Errorf("stored source %q origin %q stored_at %v", got.Source, got.Origin, got.StoredAt)
			}
		})
	}
	if c, err := st.LookupCertificate(ctx, "www.shop.example.com"); err != nil || c.Serial != newer.serial {
		t.Errorf("lookup www.shop.example.com = %v, %v; want the newest certificate", c, err)
	}

	// A refused upload comes back as an *api.Error with its reason.
	expired := newTestCert(t, now.Add(-time.Hour), "old.example.com")
	_, err = cl.ImportCertificate(ctx, req(expired))
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 422 || ae.Reason != api.ReasonExpired {
		t.Fatalf("expired import: %v, want a 422 api.Error with reason expired", err)
	}
}

func TestAdminHealthzStoreDown(t *testing.T) {
	st := failingStore{Store: newTestStore(t), err: errors.New("closed")}
	base := startAdmin(t, AdminConfig{Token: testToken}, st)
	resp, _, raw := call(t, "GET", base+"/healthz", "", "", "")
	if resp.StatusCode != 503 {
		t.Fatalf("status %d, want 503: %s", resp.StatusCode, raw)
	}
}

func TestAdminReadyz(t *testing.T) {
	tests := []struct {
		desc   string
		st     store.Store
		ready  func(context.Context) error
		status int
		want   string
	}{
		{desc: "store answers, no readiness hook", st: newTestStore(t), status: 200, want: "ready"},
		{desc: "hook says ready", st: newTestStore(t), ready: func(context.Context) error { return nil }, status: 200, want: "ready"},
		{desc: "certificate endpoint down", st: newTestStore(t), ready: func(context.Context) error {
			return errors.New("certificate endpoint unix:/run/certserver/certs.sock: connection refused")
		}, status: 503, want: "not ready: certificate endpoint"},
		{desc: "store down", st: failingStore{Store: newTestStore(t), err: errors.New("closed")}, status: 503, want: "not ready: closed"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			base := startAdmin(t, AdminConfig{Token: testToken, Ready: tc.ready}, tc.st)
			resp, _, raw := call(t, "GET", base+"/readyz", "", "", "")
			if resp.StatusCode != tc.status || !strings.Contains(raw, tc.want) {
				t.Fatalf("status %d %q, want %d containing %q", resp.StatusCode, raw, tc.status, tc.want)
			}
		})
	}
}

func TestAdminStoreFailure(t *testing.T) {
	st := failingStore{Store: newTestStore(t), err: errors.New("disk on fire")}
	base := startAdmin(t, AdminConfig{Token: testToken}, st)
	body := importBody(t, newTestCert(t, time.Now().Add(24*time.Hour), "fire.example.com"))
	resp, doc, raw := call(t, "POST", base+"/v1/certificates", "Bearer "+testToken, "application/json", body)
	if resp.StatusCode != 500 || doc == nil || strings.Contains(raw, "fire") {
		t.Fatalf("status %d body %q, want a generic 500", resp.StatusCode, raw)
	}
}

func TestNewAdminAPIConfig(t *testing.T) {
	st := newTestStore(t)
	if _, err := NewAdminAPI(AdminConfig{}, st, testLogger(t)); err == nil || !strings.Contains(err.Error(), "no token") {
		t.Errorf("empty token: %v, want refused", err)
	}
	if _, err := NewAdminAPI(AdminConfig{Token: "t"}, nil, testLogger(t)); err == nil {
		t.Error("nil store accepted")
	}
	if _, err := NewAdminAPI(AdminConfig{Token: "t"}, st, nil); err == nil {
		t.Error("nil logger accepted")
	}
	if _, err := NewAdminAPI(AdminConfig{Token: "t", MaxDomainsBody: -1}, st, testLogger(t)); err == nil || !strings.Contains(err.Error(), "MaxDomainsBody") {
		t.Errorf("negative MaxDomainsBody: %v", err)
	}
	a, err := NewAdminAPI(AdminConfig{Token: "t"}, st, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if a.cfg.Listen != DefaultAdminListen || a.cfg.MaxBody != DefaultAdminMaxBody || a.cfg.MaxDomainsBody != 64<<20 {
		t.Errorf("defaults not filled: %+v", a.cfg)
	}
}

func TestClientUnreachable(t *testing.T) {
	// A port that was just free: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cl, err := client.New(addr, testToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Health(context.Background()); !errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("Health = %v, want ErrUnreachable", err)
	}
}

// A request in absolute form gets its route's body limit too.
func TestAdminAbsoluteFormBodyLimit(t *testing.T) {
	base := startAdmin(t, AdminConfig{Token: testToken}, newTestStore(t))
	body := importBody(t, newTestCert(t, time.Now().Add(24*time.Hour), "absolute.example.com"))
	body = body[:len(body)-1] + `,"origin":"` + strings.Repeat("o", 4000) + `"}`
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST %s/v1/certificates HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		base, testToken, len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("status %d, want 201", resp.StatusCode)
	}
}
