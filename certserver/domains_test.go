package certserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
	"github.com/certserver/certserver/store"
)

// recordingScheduler records the calls of the admin API.
type recordingScheduler struct {
	mu          sync.Mutex
	wakes       int
	prioritized []string
	full        bool // Prioritize answers false
}

func (s *recordingScheduler) Wake() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wakes++
}

func (s *recordingScheduler) Prioritize(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prioritized = append(s.prioritized, name)
	return !s.full
}

func (s *recordingScheduler) calls() (int, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wakes, slices.Clone(s.prioritized)
}

// domainsEnv is an admin API over a real store with a recording scheduler
// and a fixed clock.
type domainsEnv struct {
	base  string
	st    store.Store
	sched *recordingScheduler
	cl    *client.Client
	now   time.Time
}

func newDomainsEnv(t *testing.T, cfg AdminConfig) *domainsEnv {
	t.Helper()
	env := &domainsEnv{st: newTestStore(t), sched: &recordingScheduler{}, now: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	cfg.Token = testToken
	cfg.Now = func() time.Time { return env.now }
	if cfg.Scheduler == nil {
		cfg.Scheduler = env.sched
	}
	env.base = startAdmin(t, cfg, env.st)
	cl, err := client.New(env.base, testToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	env.cl = cl
	return env
}

// post sends a POST /v1/domains body and decodes a 200 answer.
func (env *domainsEnv) post(t *testing.T, contentType, body string) api.AddDomainsResponse {
	t.Helper()
	resp, _, raw := call(t, "POST", env.base+"/v1/domains", "Bearer "+testToken, contentType, body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, raw)
	}
	var r api.AddDomainsResponse
	if err := json.Unmarshal([]byte(raw), &r); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(raw, `"invalid":[`) {
		t.Errorf("invalid is not an array: %s", raw)
	}
	return r
}

func TestAdminDomainsAuth(t *testing.T) {
	env := newDomainsEnv(t, AdminConfig{})
	for _, rt := range []struct{ method, path string }{
		{"POST", "/v1/domains"}, {"GET", "/v1/domains"}, {"GET", "/v1/domains/a.example.com"},
		{"POST", "/v1/domains/a.example.com/renew"}, {"DELETE", "/v1/domains/a.example.com"},
		{"DELETE", "/v1/domains/a.example.com?revoke=keyCompromise"}, {"POST", "/v1/domains/a.example.com/revoke"},
		{"GET", "/v1/queue"}, {"GET", "/v1/domains?state=valid&expiring=7d"},
	} {
		t.Run(rt.method+" "+rt.path, func(t *testing.T) {
			for _, auth := range []string{"", "Bearer wrong"} {
				resp, doc, raw := call(t, rt.method, env.base+rt.path, auth, "text/plain", "a.example.com\n")
				if resp.StatusCode != 401 || doc == nil {
					t.Fatalf("auth %q: status %d %s, want a JSON 401", auth, resp.StatusCode, raw)
				}
			}
		})
	}
	if _, err := env.st.GetDomain(context.Background(), "a.example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an unauthorized request wrote: %v", err)
	}
}

func TestAdminAddDomains(t *testing.T) {
	tests := []struct {
		desc        string
		contentType string
		body        string
		added       int
		existing    int
		invalid     []api.InvalidName
		profile     string // of every added name
	}{
		{
			desc:        "JSON array",
			contentType: "application/json",
			body:        `["a.example.com", "B.Example.COM.", "*.co.uk", "bad_name.example.com", "a.example.com", "", "b%C3.example", "*.Example.com"]`,
			added:       3, existing: 1,
			invalid: []api.InvalidName{
				{Line: 3, Name: "*.co.uk", Error: "wildcard over a public suffix (co.uk): a CA issues wildcards only below a registrable domain"},
				{Line: 4, Name: "bad_name.example.com", Error: "underscore not allowed"},
				{Line: 6, Name: "", Error: "empty name"},
				{Line: 7, Name: "b%C3.example", Error: "invalid character '%'"},
			},
		},
		{
			desc:    "JSON array without a content type",
			body:    "\n  [\"c.example.com\"]\n",
			added:   1,
			invalid: nil,
		},
		{
			desc:        "JSON object with a profile",
			contentType: "application/json; charset=utf-8",
			body:        `{"profile": "shortlived", "names": ["short.example.com", "localhost"]}`,
			added:       1,
			invalid:     []api.InvalidName{{Line: 2, Name: "localhost", Error: "fewer than two labels"}},
			profile:     "shortlived",
		},
		{
			desc:        "text with comments and invalid lines",
			contentType: "text/plain",
			body:        "# customers\n\nd.example.com\n  e.example.com  # shop\n192.0.2.1\r\na.*.wild.example.com\nf.example.com\n#last.example.com\nd.example.com",
			added:       3, existing: 1,
			invalid: []api.InvalidName{
				{Line: 5, Name: "192.0.2.1", Error: "ip address, not a host name"},
				{Line: 6, Name: "a.*.wild.example.com", Error: `wildcard "*" must be the whole first label`},
			},
		},
		{
			desc:  "text sniffed from a form content type",
			body:  "g.example.com\nh.example.com\n",
			added: 2, contentType: "application/x-www-form-urlencoded",
		},
		{
			desc:  "internationalized name in text",
			body:  "bücher.example\n",
			added: 1, contentType: "text/plain; charset=utf-8",
		},
		{
			desc:  "byte order mark",
			body:  "\ufeffi.example.com\n",
			added: 1, contentType: "text/plain",
		},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			env := newDomainsEnv(t, AdminConfig{})
			r := env.post(t, tc.contentType, tc.body)
			if r.Added != tc.added || r.Existing != tc.existing {
				t.Errorf("added %d existing %d, want %d %d", r.Added, r.Existing, tc.added, tc.existing)
			}
			if r.InvalidCount != len(tc.invalid) {
				t.Errorf("invalid_count %d, want %d", r.InvalidCount, len(tc.invalid))
			}
			if len(r.Invalid) != len(tc.invalid) {
				t.Fatalf("invalid %+v, want %+v", r.Invalid, tc.invalid)
			}
			for i, want := range tc.invalid {
				got := r.Invalid[i]
				if got.Line != want.Line || got.Name != want.Name || !strings.Contains(got.Error, want.Error) {
					t.Errorf("invalid[%d] = %+v, want %+v", i, got, want)
				}
			}
			ds, err := env.st.ListDomains(context.Background(), "", 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) != tc.added {
				t.Fatalf("%d records stored, want %d", len(ds), tc.added)
			}
			for _, d := range ds {
				if d.State != store.StatePending || d.Source != "api" || d.Profile != tc.profile ||
					!d.NextAttempt.Equal(env.now) || !d.AddedAt.Equal(env.now) {
					t.Errorf("stored %+v, want pending, source api, profile %q, due now", d, tc.profile)
				}
			}
			due, err := env.st.Due(context.Background(), env.now, 100)
			if err != nil || len(due) != tc.added {
				t.Errorf("due index holds %d entries (%v), want %d", len(due), err, tc.added)
			}
			if wakes, _ := env.sched.calls(); wakes != 1 {
				t.Errorf("scheduler woken %d times, want once", wakes)
			}
		})
	}
}

func TestAdminAddDomainsExisting(t *testing.T) {
	env := newDomainsEnv(t, AdminConfig{})
	r := env.post(t, "application/json", `{"names": ["a.example.com", "b.example.com"], "profile": "default"}`)
	if r.Added != 2 || r.Existing != 0 {
		t.Fatalf("first add: %+v", r)
	}
	// A name the renewer has taken on keeps its state and profile.
	d, err := env.st.GetDomain(context.Background(), "a.example.com")
	if err != nil {
		t.Fatal(err)
	}
	d.State = store.StateValid
	if err := env.st.PutDomain(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	r = env.post(t, "text/plain", "a.example.com\nb.example.com\nc.example.com\n")
	if r.Added != 1 || r.Existing != 2 {
		t.Fatalf("second add: %+v, want 1 added, 2 existing", r)
	}
	d, err = env.st.GetDomain(context.Background(), "a.example.com")
	if err != nil || d.State != store.StateValid || d.Profile != "default" {
		t.Errorf("existing record changed: %+v %v", d, err)
	}
	ds, _ := env.st.ListDomains(context.Background(), "", 10)
	if len(ds) != 3 {
		t.Errorf("%d records, want 3", len(ds))
	}
	// Nothing new: no wake-up.
	env.post(t, "application/json", `["a.example.com"]`)
	if wakes, _ := env.sched.calls(); wakes != 2 {
		t.Errorf("scheduler woken %d times, want 2", wakes)
	}
}

func TestAdminAddDomainsBadInput(t *testing.T) {
	env := newDomainsEnv(t, AdminConfig{MaxDomainsBody: 4096})
	tests := []struct {
		desc        string
		contentType string
		body        string
		status      int
		want        string
	}{
		{desc: "empty body", status: 400, want: "no names"},
		{desc: "blank body", body: " \n\t\n", contentType: "text/plain", status: 400, want: "no names"},
		{desc: "only comments", body: "# nothing\n\n# here\n", contentType: "text/plain", status: 400, want: "no names"},
		{desc: "empty array", body: "[]", status: 400, want: "no names"},
		{desc: "empty names", body: `{"names": []}`, status: 400, want: "no names"},
		{desc: "truncated array", body: `["a.example.com", `, status: 400, want: "invalid JSON"},
		{desc: "syntax error", body: `["a.example.com" "b.example.com"]`, status: 400, want: "invalid JSON at byte"},
		{desc: "number in the array", body: `["a.example.com", 7]`, status: 400, want: "name 2 is not a string"},
		{desc: "nested array", body: `[["a.example.com"]]`, status: 400, want: "name 1 is not a string"},
		{desc: "trailing data", body: `["a.example.com"] ["b.example.com"]`, status: 400, want: "unexpected data after the names"},
		{desc: "unknown field", body: `{"names": ["a.example.com"], "source": "cli"}`, status: 400, want: `unknown field "source"`},
		{desc: "names not an array", body: `{"names": "a.example.com"}`, status: 400, want: `"names" must be an array`},
		{desc: "names missing", body: `{"profile": "default"}`, status: 400, want: `"names" is required`},
		{desc: "names twice", body: `{"names": ["a.example.com"], "names": ["b.example.com"]}`, status: 400, want: "given twice"},
		{desc: "profile not a string", body: `{"names": ["a.example.com"], "profile": 5}`, status: 400, want: `"profile" must be a string`},
		{desc: "bad profile", body: `{"names": ["a.example.com"], "profile": "two words"}`, status: 400, want: `profile "two words"`},
		{desc: "JSON scalar", contentType: "application/json", body: `"a.example.com"`, status: 400, want: "expected an array of names"},
		{desc: "bad content type", contentType: "text/", body: "a.example.com", status: 415, want: "content type"},
		{desc: "over the limit", contentType: "text/plain", body: strings.Repeat("a.example.com\n", 400), status: 413, want: "larger than the limit of 4096 bytes"},
		{desc: "PUT", body: "a.example.com", status: 405, want: "allowed: POST, GET"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			method := "POST"
			if tc.desc == "PUT" {
				method = "PUT"
			}
			resp, doc, raw := call(t, method, env.base+"/v1/domains", "Bearer "+testToken, tc.contentType, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, raw)
			}
			msg, _ := doc["error"].(string)
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want it to contain %q", msg, tc.want)
			}
		})
	}
	if ds, _ := env.st.ListDomains(context.Background(), "", 10); len(ds) != 0 {
		t.Errorf("a refused request stored %d names", len(ds))
	}
	if wakes, _ := env.sched.calls(); wakes != 0 {
		t.Errorf("scheduler woken %d times", wakes)
	}
}

// Many names in one request: batched writes, the right counts, and a list
// of invalid names capped at api.MaxInvalidListed.
func TestAdminAddDomainsMany(t *testing.T) {
	env := newDomainsEnv(t, AdminConfig{})
	const n = 20000
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "host-%06d.example.com\n", i)
	}
	for i := range api.MaxInvalidListed + 5 {
		fmt.Fprintf(&b, "bad_%d.example.com\n", i)
	}
	start := time.Now()
	r := env.post(t, "text/plain", b.String())
	t.Logf("%d names (%d bytes) in %s", n+api.MaxInvalidListed+5, b.Len(), time.Since(start))
	if r.Added != n || r.Existing != 0 || r.InvalidCount != api.MaxInvalidListed+5 || len(r.Invalid) != api.MaxInvalidListed {
		t.Fatalf("added %d existing %d invalid_count %d listed %d", r.Added, r.Existing, r.InvalidCount, len(r.Invalid))
	}
	if r.Invalid[0].Line != n+1 {
		t.Errorf("first invalid line %d, want %d", r.Invalid[0].Line, n+1)
	}
	r = env.post(t, "text/plain", b.String())
	if r.Added != 0 || r.Existing != n {
		t.Fatalf("again: added %d existing %d", r.Added, r.Existing)
	}
}

func TestAdminShowDomain(t *testing.T) {
	env := newDomainsEnv(t, AdminConfig{})
	ctx := context.Background()
	env.post(t, "text/plain", "shop.example.com\nsub.wild.example.com\nbücher.example\n")

	doc, err := env.cl.Domain(ctx, "shop.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if doc.Name != "shop.example.com" || doc.State != "pending" || doc.Source != "api" || !doc.NextAttempt.Equal(env.now) ||
		!doc.AddedAt.Equal(env.now) || doc.Certificate != nil {
		t.Errorf("pending name: %+v", doc)
	}
	// Every key is there, certificate as null.
	_, raw, _ := call(t, "GET", env.base+"/v1/domains/shop.example.com", "Bearer "+testToken, "", "")
	for _, k := range []string{"name", "state", "profile", "source", "next_attempt", "failures", "last_error", "added_at", "updated_at", "certificate", "recent_attempts"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("key %q missing from %v", k, raw)
		}
	}
	if raw["certificate"] != nil {
		t.Errorf("certificate %v, want null", raw["certificate"])
	}

	// With a certificate of its own, and through a wildcard.
	c := newTestCert(t, env.now.Add(60*24*time.Hour), "shop.example.com", "www.shop.example.com")
	putCert(t, env.st, &store.Certificate{ID: "shop.example.com", Names: []string{"shop.example.com", "www.shop.example.com"},
		ChainPEM: c.chain, KeyPEM: c.key, NotBefore: env.now, NotAfter: c.notAfter, RenewAt: c.notAfter.Add(-30 * 24 * time.Hour),
		Serial: c.serial, Issuer: "CN=test", KeyType: "ecdsa-p256", Source: store.SourceACME, Origin: "https://ca.example/dir"})
	w := newTestCert(t, env.now.Add(30*24*time.Hour), "*.wild.example.com")
	putCert(t, env.st, &store.Certificate{ID: "*.wild.example.com", Names: []string{"*.wild.example.com"},
		ChainPEM: w.chain, KeyPEM: w.key, NotAfter: w.notAfter, Serial: w.serial, Source: "import"})

	resp, raw, body := call(t, "GET", env.base+"/v1/domains/SHOP.example.com.", "Bearer "+testToken, "", "")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if strings.Contains(body, "PRIVATE KEY") || strings.Contains(body, "BEGIN") || strings.Contains(body, "key_pem") {
		t.Fatalf("the answer holds PEM: %s", body)
	}
	cert, _ := raw["certificate"].(map[string]any)
	for _, k := range []string{"id", "names", "serial", "issuer", "not_before", "not_after", "renew_at", "key_type", "source", "origin"} {
		if _, ok := cert[k]; !ok {
			t.Errorf("certificate key %q missing from %v", k, cert)
		}
	}
	doc, err = env.cl.Domain(ctx, "shop.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if ci := doc.Certificate; ci == nil || ci.ID != "shop.example.com" || ci.Serial != c.serial || !ci.NotAfter.Equal(c.notAfter) ||
		len(ci.Names) != 2 || ci.Source != string(store.SourceACME) || ci.Origin != "https://ca.example/dir" || ci.KeyType != "ecdsa-p256" {
		t.Errorf("certificate %+v", doc.Certificate)
	}
	if len(doc.RecentAttempts) != 0 {
		t.Errorf("recent attempts %+v before any order, want none", doc.RecentAttempts)
	}

	// Recent attempts, newest first, as the renewer records them.
	err = env.st.UpdateDomain(ctx, "shop.example.com", func(d *store.Domain) error {
		d.AddAttempt(store.Attempt{At: env.now.Add(-time.Hour), Outcome: "failed", Error: "acme dns: NXDOMAIN", Took: 1200 * time.Millisecond})
		d.AddAttempt(store.Attempt{At: env.now, Outcome: "issued", Serial: c.serial, Took: 900 * time.Millisecond})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	doc, err = env.cl.Domain(ctx, "shop.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if ra := doc.RecentAttempts; len(ra) != 2 || ra[0].Outcome != "issued" || ra[0].Serial != c.serial || ra[0].TookMS != 900 ||
		ra[1].Outcome != "failed" || ra[1].Error != "acme dns: NXDOMAIN" || !ra[1].At.Equal(env.now.Add(-time.Hour)) {
		t.Errorf("recent attempts %+v, want issued then failed with their details", ra)
	}
	doc, err = env.cl.Domain(ctx, "sub.wild.example.com")
	if err != nil || doc.Certificate == nil || doc.Certificate.ID != "*.wild.example.com" {
		t.Errorf("name served by a wildcard: %+v %v", doc, err)
	}
	doc, err = env.cl.Domain(ctx, "bücher.example")
	if err != nil || doc.Name != "xn--bcher-kva.example" {
		t.Errorf("internationalized name: %+v %v", doc, err)
	}

	tests := []struct {
		desc   string
		path   string
		status int
		want   string
	}{
		{desc: "not managed", path: "/v1/domains/other.example.com", status: 404, want: "other.example.com is not managed"},
		{desc: "invalid name", path: "/v1/domains/under_score.example.com", status: 400, want: `invalid name "under_score.example.com"`},
		{desc: "IP address", path: "/v1/domains/192.0.2.1", status: 400, want: "ip address"},
		{desc: "wildcard not managed", path: "/v1/domains/*.example.com", status: 404, want: "not managed"},
		{desc: "sub path", path: "/v1/domains/shop.example.com/x", status: 404, want: "no such endpoint"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			resp, doc, raw := call(t, "GET", env.base+tc.path, "Bearer "+testToken, "", "")
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, raw)
			}
			if msg, _ := doc["error"].(string); !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want it to contain %q", msg, tc.want)
			}
		})
	}
	_, err = env.cl.Domain(ctx, "other.example.com")
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 404 {
		t.Errorf("client: %v, want a 404 api.Error", err)
	}
}

func TestAdminListDomains(t *testing.T) {
	env := newDomainsEnv(t, AdminConfig{})
	ctx := context.Background()
	var names []string
	for i := range 25 {
		names = append(names, fmt.Sprintf("n%02d.example.com", i))
	}
	env.post(t, "application/json", `["`+strings.Join(names, `","`)+`"]`)
	c := newTestCert(t, env.now.Add(60*24*time.Hour), "n03.example.com")
	putCert(t, env.st, &store.Certificate{ID: "n03.example.com", Names: []string{"n03.example.com"},
		ChainPEM: c.chain, KeyPEM: c.key, NotAfter: c.notAfter, Serial: c.serial})

	var got []string
	after, pages := "", 0
	for {
		l, err := env.cl.Domains(ctx, client.ListOptions{After: after, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, d := range l.Domains {
			got = append(got, d.Name)
			if d.State != "pending" {
				t.Errorf("%s: state %q", d.Name, d.State)
			}
			if (d.Certificate != nil) != (d.Name == "n03.example.com") {
				t.Errorf("%s: certificate %+v", d.Name, d.Certificate)
			}
		}
		if l.Next == "" {
			break
		}
		if l.Next != got[len(got)-1] {
			t.Errorf("next %q, want the last name of the page %q", l.Next, got[len(got)-1])
		}
		after = l.Next
	}
	if !slices.Equal(got, names) || pages != 3 {
		t.Errorf("%d pages of %q, want 3 pages of %q", pages, got, names)
	}
	// A page that ends exactly at the last name has no next.
	l, err := env.cl.Domains(ctx, client.ListOptions{After: "n14.example.com", Limit: 10})
	if err != nil || len(l.Domains) != 10 || l.Next != "" {
		t.Errorf("last full page: %d names, next %q, %v", len(l.Domains), l.Next, err)
	}
	l, err = env.cl.Domains(ctx, client.ListOptions{})
	if err != nil || len(l.Domains) != 25 || l.Next != "" {
		t.Errorf("default limit: %d names, next %q, %v", len(l.Domains), l.Next, err)
	}
	_, raw, _ := call(t, "GET", env.base+"/v1/domains?after=zzz", "Bearer "+testToken, "", "")
	if ds, ok := raw["domains"].([]any); !ok || len(ds) != 0 {
		t.Errorf("past the end: %v, want an empty array", raw)
	}

	for _, tc := range []struct{ query, want string }{
		{"limit=0", "limit"}, {"limit=1001", "from 1 to 1000"}, {"limit=ten", "limit"}, {"sort=name", `unknown query parameter "sort"`},
	} {
		resp, doc, raw := call(t, "GET", env.base+"/v1/domains?"+tc.query, "Bearer "+testToken, "", "")
		if msg, _ := doc["error"].(string); resp.StatusCode != 400 || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: status %d %s, want 400 naming %q", tc.query, resp.StatusCode, raw, tc.want)
		}
	}
}

func TestAdminRenewDomain(t *testing.T) {
	env := newDomainsEnv(t, AdminConfig{})
	ctx := context.Background()
	env.post(t, "text/plain", "renew.example.com\n")
	d, _ := env.st.GetDomain(ctx, "renew.example.com")
	d.State, d.NextAttempt = store.StateValid, env.now.Add(40*24*time.Hour)
	if err := env.st.PutDomain(ctx, d); err != nil {
		t.Fatal(err)
	}

	resp, err := env.cl.RenewDomain(ctx, "Renew.Example.com")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Name != "renew.example.com" || !resp.Queued {
		t.Errorf("answer %+v", resp)
	}
	if _, prio := env.sched.calls(); !slices.Equal(prio, []string{"renew.example.com"}) {
		t.Errorf("prioritized %q", prio)
	}
	d, _ = env.st.GetDomain(ctx, "renew.example.com")
	if !d.NextAttempt.Equal(env.now) || d.State != store.StateValid {
		t.Errorf("record %+v, want due now", d)
	}
	if due, _ := env.st.Due(ctx, env.now, 10); len(due) != 1 || due[0].Name != "renew.example.com" {
		t.Errorf("due index %v", due)
	}
	r, _, raw := call(t, "POST", env.base+"/v1/domains/renew.example.com/renew", "Bearer "+testToken, "", "")
	if r.StatusCode != 202 {
		t.Errorf("status %d: %s", r.StatusCode, raw)
	}

	env.sched.mu.Lock()
	env.sched.full = true
	env.sched.mu.Unlock()
	if resp, err := env.cl.RenewDomain(ctx, "renew.example.com"); err != nil || resp.Queued {
		t.Errorf("full queue: %+v %v, want queued false", resp, err)
	}

	var ae *api.Error
	if _, err := env.cl.RenewDomain(ctx, "other.example.com"); !errors.As(err, &ae) || ae.Status != 404 {
		t.Errorf("unmanaged: %v, want 404", err)
	}
	if _, err := env.cl.RenewDomain(ctx, "not a name"); !errors.As(err, &ae) || ae.Status != 400 {
		t.Errorf("invalid: %v, want 400", err)
	}
	if _, prio := env.sched.calls(); len(prio) != 3 {
		t.Errorf("prioritized %q, want 3 calls", prio)
	}
}

// Without a renewer the API still records names; they wait.
func TestAdminDomainsWithoutScheduler(t *testing.T) {
	st := newTestStore(t)
	base := startAdmin(t, AdminConfig{Token: testToken}, st)
	cl, _ := client.New(base, testToken, nil)
	ctx := context.Background()
	r, err := cl.AddDomains(ctx, &api.AddDomainsRequest{Names: []string{"wait.example.com", "*.com"}})
	if err != nil || r.Added != 1 || r.InvalidCount != 1 || r.Invalid[0].Line != 2 {
		t.Fatalf("add: %+v %v", r, err)
	}
	resp, err := cl.RenewDomain(ctx, "wait.example.com")
	if err != nil || resp.Queued {
		t.Errorf("renew: %+v %v, want accepted, not queued", resp, err)
	}
}

func TestAdminRemoveDomain(t *testing.T) {
	env := newDomainsEnv(t, AdminConfig{})
	ctx := context.Background()
	env.post(t, "text/plain", "rm.example.com\nkeep.example.com\n")
	c := newTestCert(t, env.now.Add(60*24*time.Hour), "rm.example.com")
	putCert(t, env.st, &store.Certificate{ID: "rm.example.com", Names: []string{"rm.example.com"},
		ChainPEM: c.chain, KeyPEM: c.key, NotAfter: c.notAfter, Serial: c.serial})

	doc, err := env.cl.RemoveDomain(ctx, "rm.example.com", "")
	if err != nil {
		t.Fatal(err)
	}
	if doc.State != "removed" || !doc.NextAttempt.IsZero() || doc.Certificate == nil {
		t.Errorf("answer %+v, want removed, no next attempt, certificate still there", doc)
	}
	due, _ := env.st.Due(ctx, env.now.Add(time.Hour), 10)
	if len(due) != 1 || due[0].Name != "keep.example.com" {
		t.Errorf("due index %v, want only keep.example.com", due)
	}
	if _, err := env.st.LookupCertificate(ctx, "rm.example.com"); err != nil {
		t.Errorf("certificate no longer served: %v", err)
	}
	// Removing again is harmless; show still shows it.
	if doc, err := env.cl.RemoveDomain(ctx, "rm.example.com", ""); err != nil || doc.State != "removed" {
		t.Errorf("second removal: %+v %v", doc, err)
	}
	if doc, err := env.cl.Domain(ctx, "rm.example.com"); err != nil || doc.State != "removed" {
		t.Errorf("show: %+v %v", doc, err)
	}
	var ae *api.Error
	if _, err := env.cl.RenewDomain(ctx, "rm.example.com"); !errors.As(err, &ae) || ae.Status != 404 || !strings.Contains(ae.Message, "removed") {
		t.Errorf("renew of a removed name: %v, want 404", err)
	}
	if _, err := env.cl.RemoveDomain(ctx, "other.example.com", ""); !errors.As(err, &ae) || ae.Status != 404 {
		t.Errorf("unmanaged: %v, want 404", err)
	}

	// Adding it again manages it again.
	r, err := env.cl.AddDomains(ctx, &api.AddDomainsRequest{Names: []string{"rm.example.com", "keep.example.com"}, Profile: "shortlived"})
	if err != nil || r.Added != 1 || r.Existing != 1 {
		t.Fatalf("add again: %+v %v, want 1 added 1 existing", r, err)
	}
	d, _ := env.st.GetDomain(ctx, "rm.example.com")
	if d.State != store.StatePending || !d.NextAttempt.Equal(env.now) || d.Profile != "shortlived" {
		t.Errorf("re-added record %+v", d)
	}
	d, _ = env.st.GetDomain(ctx, "keep.example.com")
	if d.Profile != "" {
		t.Errorf("existing record took the new profile: %+v", d)
	}
}

// TestAdminDomainSet: a managed name carrying extra names (a certbot
// lineage) and the names managed with it. show tells each side; renewing
// an extra name renews the primary; removing an extra name takes it out of
// the set (the certificate still serves it until the next order);
// removing the primary removes the names managed with it; adding a
// removed extra name again manages it on its own.
func TestAdminDomainSet(t *testing.T) {
	env := newDomainsEnv(t, AdminConfig{})
	ctx := context.Background()
	set := []string{"shop.example.com", "www.shop.example.com", "api.shop.example.com"}
	c := newTestCert(t, env.now.Add(60*24*time.Hour), set[0])
	putCert(t, env.st, &store.Certificate{ID: set[0], Names: set, ChainPEM: c.chain, KeyPEM: c.key,
		NotAfter: c.notAfter, Serial: c.serial, Source: "certbot"})
	later := env.now.Add(40 * 24 * time.Hour)
	for _, d := range []*store.Domain{
		{Name: set[0], State: store.StateValid, CertID: set[0], ExtraNames: set[1:], NextAttempt: later},
		{Name: set[1], State: store.StateValid, CertID: set[0], ManagedWith: set[0]},
		{Name: set[2], State: store.StateValid, CertID: set[0], ManagedWith: set[0]},
	} {
		if err := env.st.PutDomain(ctx, d); err != nil {
			t.Fatal(err)
		}
	}

	if doc, err := env.cl.Domain(ctx, set[0]); err != nil || !slices.Equal(doc.ExtraNames, set[1:]) || doc.ManagedWith != "" {
		t.Errorf("show %s: %+v %v", set[0], doc, err)
	}
	doc, err := env.cl.Domain(ctx, set[1])
	if err != nil || doc.ManagedWith != set[0] || len(doc.ExtraNames) != 0 || doc.Certificate == nil || doc.Certificate.ID != set[0] {
		t.Errorf("show %s: %+v %v, want managed with %s and served by its certificate", set[1], doc, err, set[0])
	}

	resp, err := env.cl.RenewDomain(ctx, set[1])
	if err != nil || resp.Name != set[0] || !resp.Queued {
		t.Errorf("renew %s: %+v %v, want the renewal of %s", set[1], resp, err, set[0])
	}
	if _, prio := env.sched.calls(); !slices.Equal(prio, []string{set[0]}) {
		t.Errorf("prioritized %q, want %s", prio, set[0])
	}
	if d, _ := env.st.GetDomain(ctx, set[1]); !d.NextAttempt.IsZero() {
		t.Errorf("%s became due on its own: %+v", set[1], d)
	}

	if _, err := env.cl.RemoveDomain(ctx, set[2], ""); err != nil {
		t.Fatal(err)
	}
	if d, _ := env.st.GetDomain(ctx, set[0]); !slices.Equal(d.ExtraNames, set[1:2]) || d.State != store.StateValid {
		t.Errorf("after removing %s, %s is %+v; want it to carry %s only", set[2], set[0], d, set[1])
	}
	if d, _ := env.st.GetDomain(ctx, set[2]); d.State != store.StateRemoved || d.ManagedWith != "" {
		t.Errorf("removed %s: %+v", set[2], *d)
	}
	if _, err := env.st.LookupCertificate(ctx, set[2]); err != nil {
		t.Errorf("%s no longer served before the next order: %v", set[2], err)
	}

	if _, err := env.cl.RemoveDomain(ctx, set[0], ""); err != nil {
		t.Fatal(err)
	}
	if d, _ := env.st.GetDomain(ctx, set[1]); d.State != store.StateRemoved || d.ManagedWith != "" {
		t.Errorf("after removing %s, %s is %+v; want removed with it", set[0], set[1], d)
	}
	if due, _ := env.st.Due(ctx, env.now.Add(100*24*time.Hour), 10); len(due) != 0 {
		t.Errorf("due index %v, want empty", due)
	}

	r, err := env.cl.AddDomains(ctx, &api.AddDomainsRequest{Names: []string{set[1]}})
	if err != nil || r.Added != 1 {
		t.Fatalf("add %s again: %+v %v", set[1], r, err)
	}
	if d, _ := env.st.GetDomain(ctx, set[1]); d.State != store.StatePending || d.ManagedWith != "" || !d.NextAttempt.Equal(env.now) {
		t.Errorf("%s added again: %+v, want pending on its own, due now", set[1], d)
	}
}

// Added names are checked as a CA checks them (IDNA2008): a DISALLOWED
// code point is refused naming it. A name the UTS #46 mapping would
// change is refused, in a bulk add and in a route's path alike, naming the
// change and the name to send, never stored as another name.
func TestAdminDomainsIDNA2008(t *testing.T) {
	env := newDomainsEnv(t, AdminConfig{})
	r := env.post(t, "application/json", `["xn--n3h.example.com", "☃.example.com", "ex\u200bample.com", "ｅｘａｍｐｌｅ.com", "bücher.example"]`)
	if r.Added != 1 || r.InvalidCount != 4 {
		t.Fatalf("added %d, invalid %d: %+v", r.Added, r.InvalidCount, r)
	}
	want := []string{
		`label "xn--n3h" ("☃"): U+2603 '☃' is DISALLOWED in IDNA2008 (RFC 5892)`,
		`label "xn--n3h" ("☃"): U+2603 '☃' is DISALLOWED in IDNA2008 (RFC 5892)`,
		`character U+200B '\u200b' is removed by UTS #46 mapping: send "example.com", the name that would be stored`,
		`character U+FF45 'ｅ' is mapped to "e" by UTS #46: send "example.com", the name that would be stored`,
	}
	for i, w := range want {
		if r.Invalid[i].Line != i+1 || r.Invalid[i].Error != w {
			t.Errorf("invalid[%d] = %+v, want line %d, error %q", i, r.Invalid[i], i+1, w)
		}
	}
	for _, n := range []string{"xn--n3h.example.com", "example.com"} {
		if _, err := env.st.GetDomain(context.Background(), n); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: %v, want not stored", n, err)
		}
	}
	// A path only looks a name up: IDNA2008 is an order's rule, so a name
	// outside it is simply not managed.
	resp, _, raw := call(t, "GET", env.base+"/v1/domains/xn--n3h.example.com", "Bearer "+testToken, "", "")
	if resp.StatusCode != 404 || !strings.Contains(raw, "not managed") {
		t.Errorf("GET of a DISALLOWED name: %d %s", resp.StatusCode, raw)
	}
	resp, _, raw = call(t, "DELETE", env.base+"/v1/domains/ex%E2%80%8Bample.com", "Bearer "+testToken, "", "")
	if resp.StatusCode != 400 || !strings.Contains(raw, `U+200B`) {
		t.Errorf("DELETE of a mapped name: %d %s", resp.StatusCode, raw)
	}
}

// failUpdateStore fails the next update of one domain record.
type failUpdateStore struct {
	store.Store
	mu   sync.Mutex
	fail string // the name whose next UpdateDomain fails; "" for none
}

func (s *failUpdateStore) UpdateDomain(ctx context.Context, name string, fn func(*store.Domain) error) error {
	s.mu.Lock()
	fail := s.fail == name
	if fail {
		s.fail = ""
	}
	s.mu.Unlock()
	if fail {
		return errors.New("disk on fire")
	}
	return s.Store.UpdateDomain(ctx, name, fn)
}

// A DELETE of a primary name that failed after marking it removed leaves
// nothing behind once retried: the names managed with it are removed too,
// not left managed with a removed name that nothing renews.
func TestAdminRemoveDomainRetried(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	st := &failUpdateStore{Store: newTestStore(t)}
	base := startAdmin(t, AdminConfig{Token: testToken, Now: func() time.Time { return now }, Scheduler: &recordingScheduler{}}, st)
	set := []string{"shop.example.com", "www.shop.example.com"}
	for _, d := range []*store.Domain{
		{Name: set[0], State: store.StateValid, CertID: set[0], ExtraNames: set[1:], NextAttempt: now.Add(time.Hour)},
		{Name: set[1], State: store.StateValid, CertID: set[0], ManagedWith: set[0]},
	} {
		if err := st.PutDomain(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	st.mu.Lock()
	st.fail = set[1]
	st.mu.Unlock()
	if resp, _, raw := call(t, "DELETE", base+"/v1/domains/"+set[0], "Bearer "+testToken, "", ""); resp.StatusCode != 500 {
		t.Fatalf("DELETE with a failing store: %d %s", resp.StatusCode, raw)
	}
	if resp, _, raw := call(t, "DELETE", base+"/v1/domains/"+set[0], "Bearer "+testToken, "", ""); resp.StatusCode != 200 {
		t.Fatalf("DELETE retried: %d %s", resp.StatusCode, raw)
	}
	if d, err := st.GetDomain(ctx, set[1]); err != nil || d.State != store.StateRemoved || d.ManagedWith != "" {
		t.Errorf("after the retried removal of %s, %s is %+v %v; want removed with it", set[0], set[1], d, err)
	}
}

// TestAdminAddSetAndChallenge: one name with extra_names is one
// certificate (a wildcard and its apex), with the challenge given; adding
// a managed name again with another challenge changes it; bad extra names
// and challenges are refused naming the input and the rule.
func TestAdminAddSetAndChallenge(t *testing.T) {
	st := newTestStore(t)
	base := startAdmin(t, AdminConfig{Token: testToken}, st)
	cl, _ := client.New(base, testToken, nil)
	ctx := context.Background()
	r, err := cl.AddDomains(ctx, &api.AddDomainsRequest{Names: []string{"*.Shop.example"}, ExtraNames: []string{"shop.example."}, Challenge: "dns-01"})
	if err != nil || r.Added != 1 {
		t.Fatalf("add: %+v %v", r, err)
	}
	d, err := st.GetDomain(ctx, "*.shop.example")
	if err != nil || !slices.Equal(d.ExtraNames, []string{"shop.example"}) || d.Challenge != store.ChallengeDNS01 {
		t.Fatalf("record %+v %v, want *.shop.example with shop.example, dns-01", d, err)
	}
	r, err = cl.AddDomains(ctx, &api.AddDomainsRequest{Names: []string{"*.shop.example"}, Challenge: "auto"})
	if err != nil || r.Existing != 1 || r.Updated != 1 {
		t.Fatalf("add again: %+v %v, want existing and updated", r, err)
	}
	if d, _ := st.GetDomain(ctx, "*.shop.example"); d.Challenge != store.ChallengeAuto || len(d.ExtraNames) != 1 {
		t.Errorf("record %+v, want challenge auto and its extra name kept", d)
	}
	doc, err := cl.Domain(ctx, "*.shop.example")
	if err != nil || doc.Challenge != "auto" || !slices.Equal(doc.ExtraNames, []string{"shop.example"}) {
		t.Errorf("GET: %+v %v", doc, err)
	}

	// The same extra names in another order are the same set: nothing
	// changes and no new order is due.
	r, err = cl.AddDomains(ctx, &api.AddDomainsRequest{Names: []string{"set.example"}, ExtraNames: []string{"a.set.example", "b.set.example"}})
	if err != nil || r.Added != 1 {
		t.Fatalf("add set.example: %+v %v", r, err)
	}
	if err := st.UpdateDomain(ctx, "set.example", func(d *store.Domain) error {
		d.State, d.NextAttempt = store.StateValid, time.Time{}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r, err = cl.AddDomains(ctx, &api.AddDomainsRequest{Names: []string{"set.example"}, ExtraNames: []string{"b.set.example", "a.set.example"}})
	if err != nil || r.Existing != 1 || r.Updated != 0 {
		t.Errorf("add set.example again, extra names reordered: %+v %v; want existing, not updated", r, err)
	}
	if d, _ := st.GetDomain(ctx, "set.example"); !d.NextAttempt.IsZero() || !slices.Equal(d.ExtraNames, []string{"a.set.example", "b.set.example"}) {
		t.Errorf("after re-adding with the extra names reordered: %+v; want unchanged, not due", d)
	}
	for _, tc := range []struct {
		desc string
		req  api.AddDomainsRequest
		want string
	}{
		{"extra names with two names", api.AddDomainsRequest{Names: []string{"a.example", "b.example"}, ExtraNames: []string{"c.example"}}, "extra_names go with exactly one valid name"},
		{"extra name over a public suffix", api.AddDomainsRequest{Names: []string{"a.example"}, ExtraNames: []string{"*.co.uk"}}, "wildcard over a public suffix (co.uk)"},
		{"extra name deeper wildcard", api.AddDomainsRequest{Names: []string{"a.example"}, ExtraNames: []string{"a.*.example"}}, `wildcard "*" must be the whole first label`},
		{"the name itself as an extra name", api.AddDomainsRequest{Names: []string{"a.example"}, ExtraNames: []string{"A.example"}}, "a.example is the managed name itself"},
		{"invalid managed name", api.AddDomainsRequest{Names: []string{"*"}, ExtraNames: []string{"a.example"}}, `invalid name "*": wildcard without a name`},
		{"unknown challenge", api.AddDomainsRequest{Names: []string{"a.example"}, Challenge: "dns-02"}, `challenge "dns-02" is not one of http-01, dns-01, tls-alpn-01, auto`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := cl.AddDomains(ctx, &tc.req)
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Status != 400 || !strings.Contains(ae.Message, tc.want) {
				t.Errorf("error %v, want 400 saying %q", err, tc.want)
			}
		})
	}
}
