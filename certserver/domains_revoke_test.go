package certserver

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
	"github.com/certserver/certserver/store"
)

// fakeRevoker records revocations and answers with err. The real one
// (renewer.ACMEIssuer) is tested against Pebble in renewer and cmd.
type fakeRevoker struct {
	mu      sync.Mutex
	err     error
	block   bool // wait for the context to end
	revoked []revoked
}

type revoked struct {
	serial string
	reason int
}

func (f *fakeRevoker) Revoke(ctx context.Context, c *store.Certificate, reason int) error {
	f.mu.Lock()
	err, block := f.err, f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.revoked = append(f.revoked, revoked{c.Serial, reason})
	return nil
}

func (f *fakeRevoker) set(err error, block bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err, f.block = err, block
}

func (f *fakeRevoker) calls() []revoked {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.revoked)
}

// caError is an error of the CA, classified as the renewer classifies them.
type caError struct {
	msg   string
	perm  bool
	after time.Duration
}

func (e caError) Error() string             { return e.msg }
func (e caError) Permanent() bool           { return e.perm }
func (e caError) RetryAfter() time.Duration { return e.after }

// revokeEnv is a domains environment with a revoker and names that have
// certificates.
type revokeEnv struct {
	*domainsEnv
	rv    *fakeRevoker
	certs map[string]testCert // by certificate ID
}

func newRevokeEnv(t *testing.T) *revokeEnv {
	t.Helper()
	rv := &fakeRevoker{}
	env := &revokeEnv{domainsEnv: newDomainsEnv(t, AdminConfig{Revoker: rv, RequestTimeout: time.Second}), rv: rv, certs: map[string]testCert{}}
	env.post(t, "text/plain", "shop.example.com\nwww.shop.example.com\nsub.wild.example.com\nbare.example.com\ngone.example.com\n")
	env.addCert(t, "shop.example.com", "www.shop.example.com", "unmanaged.example.com")
	env.addCert(t, "*.wild.example.com")
	env.addCert(t, "gone.example.com")
	for _, n := range []string{"shop.example.com", "www.shop.example.com", "gone.example.com"} {
		id := n
		if n == "www.shop.example.com" {
			id = "shop.example.com"
		}
		if err := env.st.UpdateDomain(context.Background(), n, func(d *store.Domain) error {
			d.State, d.CertID, d.NextAttempt = store.StateValid, id, env.now.Add(40*24*time.Hour)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return env
}

func (env *revokeEnv) addCert(t *testing.T, names ...string) {
	c := newTestCert(t, env.now.Add(60*24*time.Hour), names...)
	putCert(t, env.st, &store.Certificate{ID: names[0], Names: names, ChainPEM: c.chain, KeyPEM: c.key,
		NotAfter: c.notAfter, Serial: c.serial, Source: store.SourceACME})
	env.certs[names[0]] = c
}

func TestAdminRevokeDomain(t *testing.T) {
	env := newRevokeEnv(t)
	ctx := context.Background()
	shop := env.certs["shop.example.com"]

	rev, err := env.cl.RevokeDomain(ctx, "WWW.shop.example.com", "keyCompromise")
	if err != nil {
		t.Fatal(err)
	}
	if rev.Name != "www.shop.example.com" || rev.CertificateID != "shop.example.com" || rev.Serial != shop.serial ||
		rev.Reason != "keyCompromise" || rev.ReasonCode != 1 || len(rev.Names) != 3 || !rev.Queued ||
		!slices.Equal(rev.Reordered, []string{"shop.example.com", "www.shop.example.com"}) {
		t.Errorf("answer %+v", rev)
	}
	for _, w := range []string{"revoked (keyCompromise)", "served 3 names", "a new certificate is being ordered for shop.example.com, www.shop.example.com", "served until the new one is stored"} {
		if !strings.Contains(rev.Message, w) {
			t.Errorf("message %q lacks %q", rev.Message, w)
		}
	}
	if got := env.rv.calls(); !slices.Equal(got, []revoked{{shop.serial, 1}}) {
		t.Errorf("revoker calls %+v", got)
	}
	// Both managed names of the certificate are due now, and so is the
	// certificate's renewal: the renewer replaces it however it comes to
	// the names. The revoked certificate is still served meanwhile.
	for _, n := range rev.Reordered {
		d, err := env.st.GetDomain(ctx, n)
		if err != nil || d.CertID != "shop.example.com" || d.State != store.StateValid || !d.NextAttempt.Equal(env.now) {
			t.Errorf("%s: %+v %v, want valid, due now", n, d, err)
		}
	}
	if _, prio := env.sched.calls(); !slices.Equal(prio, rev.Reordered) {
		t.Errorf("prioritized %q", prio)
	}
	if c, err := env.st.LookupCertificate(ctx, "shop.example.com"); err != nil || c.Serial != shop.serial || !c.RenewAt.Equal(env.now) {
		t.Errorf("served: %+v %v, want the revoked certificate, due for renewal now", c, err)
	}

	// A name served by a wildcard certificate; the reason as a number,
	// and in digits.
	for _, body := range []string{`{"reason": 4}`, `{"reason": "4"}`, `{"reason": "SUPERSEDED"}`} {
		resp, doc, raw := call(t, "POST", env.base+"/v1/domains/sub.wild.example.com/revoke", "Bearer "+testToken, "application/json", body)
		if resp.StatusCode != 200 || doc["reason"] != "superseded" || doc["certificate_id"] != "*.wild.example.com" {
			t.Errorf("%s: %d %s", body, resp.StatusCode, raw)
		}
		if r, _ := doc["reordered"].([]any); len(r) != 1 || r[0] != "sub.wild.example.com" {
			t.Errorf("%s: reordered %v", body, doc["reordered"])
		}
	}

	// Without a scheduler the name is only due.
	st := newTestStore(t)
	rv := &fakeRevoker{}
	base := startAdmin(t, AdminConfig{Token: testToken, Revoker: rv}, st)
	cl, _ := client.New(base, testToken, nil)
	if _, err := cl.AddDomains(ctx, &api.AddDomainsRequest{Names: []string{"alone.example.com"}}); err != nil {
		t.Fatal(err)
	}
	c := newTestCert(t, time.Now().Add(time.Hour), "alone.example.com")
	putCert(t, st, &store.Certificate{ID: "alone.example.com", Names: []string{"alone.example.com"}, ChainPEM: c.chain, KeyPEM: c.key, NotAfter: c.notAfter, Serial: c.serial})
	rev, err = cl.RevokeDomain(ctx, "alone.example.com", "0")
	if err != nil || rev.Queued || rev.Reason != "unspecified" || !strings.Contains(rev.Message, "issuance is off") {
		t.Errorf("without a scheduler: %+v %v", rev, err)
	}
}

// A name of the revoked certificate that another certificate serves
// meanwhile keeps its certificate, and the revoked record is not written
// again (that would point the name back at it).
func TestAdminRevokeDomainNameTaken(t *testing.T) {
	env := newRevokeEnv(t)
	ctx := context.Background()
	env.addCert(t, "www.shop.example.com")
	before, err := env.st.GetCertificate(ctx, "shop.example.com")
	if err != nil {
		t.Fatal(err)
	}
	rev, err := env.cl.RevokeDomain(ctx, "shop.example.com", "superseded")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rev.Reordered, []string{"shop.example.com"}) {
		t.Errorf("reordered %q, want only shop.example.com", rev.Reordered)
	}
	if c, err := env.st.LookupCertificate(ctx, "www.shop.example.com"); err != nil || c.ID != "www.shop.example.com" {
		t.Errorf("www.shop.example.com is served by %+v (%v), want its own certificate", c, err)
	}
	if c, _ := env.st.GetCertificate(ctx, "shop.example.com"); !c.RenewAt.Equal(before.RenewAt) || !c.StoredAt.Equal(before.StoredAt) {
		t.Errorf("the revoked record was written again: %+v", c)
	}
	if d, _ := env.st.GetDomain(ctx, "www.shop.example.com"); d.NextAttempt.Equal(env.now) {
		t.Errorf("www.shop.example.com made due: %+v", d)
	}
}

func TestAdminRevokeDomainBadInput(t *testing.T) {
	env := newRevokeEnv(t)
	if _, err := env.cl.RemoveDomain(context.Background(), "gone.example.com", ""); err != nil {
		t.Fatal(err)
	}
	url := env.base + "/v1/domains/shop.example.com/revoke"
	tests := []struct {
		desc        string
		method, url string
		contentType string
		body        string
		status      int
		want        string
	}{
		{desc: "no body", status: 400, want: "empty request body"},
		{desc: "no reason", body: `{}`, status: 400, want: `field "reason" is required: one of unspecified, keyCompromise, cACompromise`},
		{desc: "null reason", body: `{"reason": null}`, status: 400, want: `field "reason" is required`},
		{desc: "unknown reason", body: `{"reason": "stolen"}`, status: 400, want: `unknown revocation reason "stolen": want one of unspecified, keyCompromise`},
		{desc: "code 7", body: `{"reason": 7}`, status: 400, want: `unknown revocation reason "7"`},
		{desc: "code 11", body: `{"reason": "11"}`, status: 400, want: `unknown revocation reason "11"`},
		{desc: "negative code", body: `{"reason": -1}`, status: 400, want: `unknown revocation reason "-1"`},
		{desc: "boolean reason", body: `{"reason": true}`, status: 400, want: `unknown revocation reason "true"`},
		{desc: "unknown field", body: `{"reason": "superseded", "force": true}`, status: 400, want: `unknown field "force"`},
		{desc: "bad JSON", body: `{"reason": `, status: 400, want: "invalid JSON"},
		{desc: "trailing data", body: `{"reason": "superseded"} {}`, status: 400, want: "unexpected data after the object"},
		{desc: "not JSON", contentType: "text/plain", body: "superseded", status: 415, want: "is not application/json"},
		{desc: "over the limit", body: `{"reason": "` + strings.Repeat("x", 5000) + `"}`, status: 413, want: "larger than the limit of 4096 bytes"},
		{desc: "GET", method: "GET", status: 405, want: "allowed: POST"},
		{desc: "invalid name", url: env.base + "/v1/domains/bad_name.example.com/revoke", body: `{"reason": 1}`, status: 400, want: "underscore"},
		{desc: "not managed", url: env.base + "/v1/domains/other.example.com/revoke", body: `{"reason": 1}`, status: 404, want: "other.example.com is not managed"},
		{desc: "removed", url: env.base + "/v1/domains/gone.example.com/revoke", body: `{"reason": 1}`, status: 404, want: "gone.example.com was removed"},
		{desc: "no certificate", url: env.base + "/v1/domains/bare.example.com/revoke", body: `{"reason": 1}`, status: 409, want: "no certificate serves bare.example.com: nothing to revoke"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			method, u, ct := "POST", url, "application/json"
			if tc.method != "" {
				method = tc.method
			}
			if tc.url != "" {
				u = tc.url
			}
			if tc.contentType != "" {
				ct = tc.contentType
			}
			resp, doc, raw := call(t, method, u, "Bearer "+testToken, ct, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, raw)
			}
			if msg, _ := doc["error"].(string); !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want it to contain %q", msg, tc.want)
			}
		})
	}
	if got := env.rv.calls(); len(got) != 0 {
		t.Errorf("revoked %+v", got)
	}

	// Without a revoker.
	base := startAdmin(t, AdminConfig{Token: testToken}, env.st)
	resp, doc, raw := call(t, "POST", base+"/v1/domains/shop.example.com/revoke", "Bearer "+testToken, "application/json", `{"reason": 1}`)
	if msg, _ := doc["error"].(string); resp.StatusCode != 503 || !strings.Contains(msg, "revocation is off") {
		t.Errorf("without a revoker: %d %s", resp.StatusCode, raw)
	}
}

func TestAdminRevokeDomainCAFailures(t *testing.T) {
	env := newRevokeEnv(t)
	ctx := context.Background()
	tests := []struct {
		desc       string
		err        error
		block      bool
		status     int
		want       string
		retryAfter string
	}{
		{desc: "refused", err: caError{msg: "acme unauthorized: not your certificate", perm: true}, status: 422,
			want: "the CA refused to revoke: acme unauthorized: not your certificate"},
		{desc: "rate limited", err: caError{msg: "acme rateLimited: slow down", after: 90 * time.Second}, status: 429,
			want: "rate-limited the revocation, retry in 90s", retryAfter: "90"},
		{desc: "CA down", err: errors.New("connection refused"), status: 502, want: "revocation failed, try again: connection refused"},
		{desc: "too slow", block: true, status: 504, want: "the CA did not answer in time; certificate shop.example.com serial"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			env.rv.set(tc.err, tc.block)
			resp, doc, raw := call(t, "POST", env.base+"/v1/domains/shop.example.com/revoke", "Bearer "+testToken, "application/json", `{"reason": "keyCompromise"}`)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, raw)
			}
			if msg, _ := doc["error"].(string); !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want it to contain %q", msg, tc.want)
			}
			if got := resp.Header.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
			}
			// Nothing changed.
			if d, _ := env.st.GetDomain(ctx, "shop.example.com"); d.CertID != "shop.example.com" || d.State != store.StateValid {
				t.Errorf("record changed: %+v", d)
			}
			// Nor does a removal that asks for the revocation.
			resp, _, raw = call(t, "DELETE", env.base+"/v1/domains/shop.example.com?revoke=keyCompromise", "Bearer "+testToken, "", "")
			if resp.StatusCode != tc.status {
				t.Errorf("DELETE ?revoke: status %d, want %d: %s", resp.StatusCode, tc.status, raw)
			}
			if d, _ := env.st.GetDomain(ctx, "shop.example.com"); d.State == store.StateRemoved {
				t.Error("removed although the revocation failed")
			}
		})
	}
	var ae *api.Error
	env.rv.set(caError{msg: "wait", after: 5 * time.Second}, false)
	if _, err := env.cl.RevokeDomain(ctx, "shop.example.com", "1"); !errors.As(err, &ae) || ae.Status != 429 || ae.RetryAfter != 5 {
		t.Errorf("client: %v, want a 429 with retry_after 5", err)
	}
}

func TestAdminRemoveDomainRevoke(t *testing.T) {
	env := newRevokeEnv(t)
	ctx := context.Background()
	shop := env.certs["shop.example.com"]

	doc, err := env.cl.RemoveDomain(ctx, "shop.example.com", "superseded")
	if err != nil {
		t.Fatal(err)
	}
	if doc.State != "removed" || doc.Revoked == nil || doc.Revoked.Serial != shop.serial || doc.Revoked.ReasonCode != 4 {
		t.Fatalf("answer %+v, revoked %+v", doc, doc.Revoked)
	}
	// The removed name is not reordered; the other managed name of the
	// certificate is.
	if !slices.Equal(doc.Revoked.Reordered, []string{"www.shop.example.com"}) {
		t.Errorf("reordered %q", doc.Revoked.Reordered)
	}
	if d, _ := env.st.GetDomain(ctx, "shop.example.com"); d.State != store.StateRemoved || !d.NextAttempt.IsZero() {
		t.Errorf("removed record %+v", d)
	}
	if got := env.rv.calls(); !slices.Equal(got, []revoked{{shop.serial, 4}}) {
		t.Errorf("revoker calls %+v", got)
	}
	// A removed name's certificate can still be revoked on the way out.
	if doc, err := env.cl.RemoveDomain(ctx, "shop.example.com", "keyCompromise"); err != nil || doc.Revoked == nil {
		t.Errorf("again: %+v %v", doc, err)
	}

	for _, tc := range []struct {
		query  string
		status int
		want   string
	}{
		{"revoke=bogus", 400, `unknown revocation reason "bogus"`},
		{"revoke=", 400, `unknown revocation reason ""`},
		{"revoke=1&revoke=4", 400, `"revoke" given twice`},
		{"force=1", 400, `unknown query parameter "force" (parameters: revoke)`},
	} {
		resp, doc, raw := call(t, "DELETE", env.base+"/v1/domains/gone.example.com?"+tc.query, "Bearer "+testToken, "", "")
		if msg, _ := doc["error"].(string); resp.StatusCode != tc.status || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %d %s, want %d naming %q", tc.query, resp.StatusCode, raw, tc.status, tc.want)
		}
	}
	if d, _ := env.st.GetDomain(ctx, "gone.example.com"); d.State == store.StateRemoved {
		t.Error("a refused request removed the name")
	}
	var ae *api.Error
	if _, err := env.cl.RemoveDomain(ctx, "bare.example.com", "1"); !errors.As(err, &ae) || ae.Status != 409 {
		t.Errorf("nothing to revoke: %v, want 409", err)
	}
	if d, _ := env.st.GetDomain(ctx, "bare.example.com"); d.State == store.StateRemoved {
		t.Error("removed although there was nothing to revoke")
	}
}
