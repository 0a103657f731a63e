package certserver

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
	"github.com/certserver/certserver/store"
)

// listAll follows the pages of a listing to the end and returns the names
// in the order listed and the number of pages.
func listAll(t *testing.T, cl *client.Client, opts client.ListOptions) ([]string, int) {
	t.Helper()
	var names []string
	pages := 0
	for {
		l, err := cl.Domains(context.Background(), opts)
		if err != nil {
			t.Fatalf("list %+v: %v", opts, err)
		}
		pages++
		for _, d := range l.Domains {
			names = append(names, d.Name)
		}
		if l.Next == "" {
			return names, pages
		}
		if l.Next <= opts.After {
			t.Fatalf("cursor went back: next %q after %q", l.Next, opts.After)
		}
		opts.After = l.Next
	}
}

func TestAdminListDomainsFilters(t *testing.T) {
	env := newDomainsEnv(t, AdminConfig{})
	ctx := context.Background()
	env.post(t, "text/plain", strings.Join([]string{
		"soon.example.com", "later.example.com", "expired.example.com", "none.example.com",
		"fail.example.com", "retry.example.com", "gone.example.com", "shop.other.net", "xn--bcher-kva.example",
	}, "\n"))
	for name, notAfter := range map[string]time.Duration{
		"soon.example.com":    3 * 24 * time.Hour,
		"later.example.com":   30 * 24 * time.Hour,
		"expired.example.com": -time.Hour,
		"gone.example.com":    2 * 24 * time.Hour,
	} {
		c := newTestCert(t, env.now.Add(notAfter), name)
		putCert(t, env.st, &store.Certificate{ID: name, Names: []string{name}, ChainPEM: c.chain, KeyPEM: c.key,
			NotAfter: c.notAfter, Serial: c.serial})
	}
	set := func(name string, change func(*store.Domain)) {
		if err := env.st.UpdateDomain(ctx, name, func(d *store.Domain) error { change(d); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	set("soon.example.com", func(d *store.Domain) { d.State = store.StateValid })
	set("later.example.com", func(d *store.Domain) { d.State = store.StateValid })
	set("fail.example.com", func(d *store.Domain) { d.State, d.Failures, d.LastError = store.StateFailing, 2, "acme dns: NXDOMAIN" })
	set("retry.example.com", func(d *store.Domain) { d.State, d.Failures = store.StateIssuing, 1 })
	set("gone.example.com", func(d *store.Domain) { d.State, d.Failures = store.StateRemoved, 3 })

	tests := []struct {
		desc  string
		opts  client.ListOptions
		query string // raw query instead of opts
		want  []string
	}{
		{desc: "state", opts: client.ListOptions{States: []string{"valid"}}, want: []string{"later.example.com", "soon.example.com"}},
		{desc: "states", opts: client.ListOptions{States: []string{"Removed", "failing"}}, want: []string{"fail.example.com", "gone.example.com"}},
		{desc: "state repeated", query: "state=valid&state=issuing", want: []string{"later.example.com", "retry.example.com", "soon.example.com"}},
		{desc: "expiring in days", opts: client.ListOptions{Expiring: "7d"}, want: []string{"expired.example.com", "gone.example.com", "soon.example.com"}},
		{desc: "expiring in hours", opts: client.ListOptions{Expiring: "72h"}, want: []string{"expired.example.com", "gone.example.com"}},
		{desc: "failing", opts: client.ListOptions{Failing: "true"}, want: []string{"fail.example.com", "retry.example.com"}},
		{desc: "not failing", opts: client.ListOptions{Failing: "false", Query: "example.com"},
			want: []string{"expired.example.com", "gone.example.com", "later.example.com", "none.example.com", "soon.example.com"}},
		{desc: "substring", opts: client.ListOptions{Query: "OTHER"}, want: []string{"shop.other.net"}},
		{desc: "substring of an IDN", opts: client.ListOptions{Query: "xn--bcher"}, want: []string{"xn--bcher-kva.example"}},
		{desc: "all together", opts: client.ListOptions{States: []string{"valid", "removed"}, Expiring: "7d", Query: "o"},
			want: []string{"gone.example.com", "soon.example.com"}},
		{desc: "nothing matches", opts: client.ListOptions{Query: "nomatch"}, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			var got []string
			if tc.query != "" {
				resp, doc, raw := call(t, "GET", env.base+"/v1/domains?"+tc.query, "Bearer "+testToken, "", "")
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: %s", resp.StatusCode, raw)
				}
				for _, d := range doc["domains"].([]any) {
					got = append(got, d.(map[string]any)["name"].(string))
				}
			} else {
				// One name a page, to cross page ends inside the filter.
				tc.opts.Limit = 1
				got, _ = listAll(t, env.cl, tc.opts)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}

	// A filtered page still carries the certificate summary.
	l, err := env.cl.Domains(ctx, client.ListOptions{Expiring: "4d", States: []string{"valid"}})
	if err != nil || len(l.Domains) != 1 || l.Domains[0].Certificate == nil || l.Scanned != 9 {
		t.Fatalf("%+v %v", l, err)
	}
	if c := l.Domains[0].Certificate; c.ID != "soon.example.com" || !c.NotAfter.Equal(env.now.Add(3*24*time.Hour)) {
		t.Errorf("certificate summary %+v", c)
	}
}

func TestAdminListDomainsBadQuery(t *testing.T) {
	env := newDomainsEnv(t, AdminConfig{})
	tests := []struct{ query, want string }{
		{"state=bogus", `state "bogus": want one of pending, issuing, valid, renewing, failing, given_up, removed`},
		{"state=valid,", `state "": want one of`},
		{"expiring=7x", `expiring "7x": want a whole number of days (7d) or a duration (72h, 90m)`},
		{"expiring=d", `expiring "d"`},
		{"expiring=-1h", `expiring "-1h": must be positive`},
		{"expiring=0d", `expiring "0d": must be positive`},
		{"failing=maybe", `failing "maybe": want true or false`},
		{"q=", "q: want 1 to 253 bytes"},
		{"q=" + strings.Repeat("a", 254), "q: want 1 to 253 bytes"},
		{"after=a&after=b", `query parameter "after" given twice`},
		{"limit=5&limit=6", `query parameter "limit" given twice`},
		{"after=" + strings.Repeat("a", 1025), "after is longer than 1024 bytes"},
		{"order=desc", `unknown query parameter "order" (parameters: after, limit, state, expiring, failing, q)`},
	}
	for _, tc := range tests {
		t.Run(tc.query[:min(len(tc.query), 30)], func(t *testing.T) {
			resp, doc, raw := call(t, "GET", env.base+"/v1/domains?"+tc.query, "Bearer "+testToken, "", "")
			if msg, _ := doc["error"].(string); resp.StatusCode != 400 || !strings.Contains(msg, tc.want) {
				t.Errorf("status %d %s, want 400 naming %q", resp.StatusCode, raw, tc.want)
			}
		})
	}
}

// A filtered page stops scanning after listScan records and says where to
// go on; following the cursor still finds every match exactly once.
func TestAdminListDomainsScanLimit(t *testing.T) {
	st := newTestStore(t)
	a, err := NewAdminAPI(AdminConfig{Listen: "127.0.0.1:0", Token: testToken}, st, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	a.listScan = 100
	if err := a.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	serving(t, a.Serve)
	cl, err := client.New("http://"+a.Addrs()[0].String(), testToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range 2500 {
		names = append(names, fmt.Sprintf("n%05d.example.com", i))
	}
	if _, err := cl.AddDomains(context.Background(), &api.AddDomainsRequest{Names: names}); err != nil {
		t.Fatal(err)
	}

	l, err := cl.Domains(context.Background(), client.ListOptions{Query: "n0249"})
	if err != nil {
		t.Fatal(err)
	}
	// The first batch reads limit+1 records, past the budget of 100.
	if len(l.Domains) != 0 || l.Scanned != 101 || l.Next != names[100] {
		t.Errorf("first page: %d names, scanned %d, next %q; want none, 101, %q", len(l.Domains), l.Scanned, l.Next, names[100])
	}
	got, pages := listAll(t, cl, client.ListOptions{Query: "n0249"})
	if want := names[2490:2500]; !slices.Equal(got, want) || pages != 25 {
		t.Errorf("%d pages of %q, want 25 pages of %q", pages, got, want)
	}
	// Unfiltered listings read only what they list.
	l, err = cl.Domains(context.Background(), client.ListOptions{Limit: 10})
	if err != nil || len(l.Domains) != 10 || l.Scanned != 10 || l.Next != names[9] {
		t.Errorf("unfiltered: %d names, scanned %d, next %q, %v", len(l.Domains), l.Scanned, l.Next, err)
	}
}

// Paging through the names while another client adds names: every name
// present at the start is listed exactly once, no name twice, and the
// pages are in name order, filtered or not.
func TestAdminListDomainsStableUnderAdds(t *testing.T) {
	for _, filtered := range []bool{false, true} {
		t.Run(fmt.Sprintf("filtered=%v", filtered), func(t *testing.T) {
			env := newDomainsEnv(t, AdminConfig{})
			var initial []string
			for i := range 1000 {
				initial = append(initial, fmt.Sprintf("host-%05d.example.com", i*10))
			}
			if _, err := env.cl.AddDomains(context.Background(), &api.AddDomainsRequest{Names: initial}); err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var added atomic.Int64
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(1, 2))
				for ctx.Err() == nil {
					// Names between, before and after the initial ones.
					batch := make([]string, 10)
					for i := range batch {
						batch[i] = fmt.Sprintf("host-%05d.example.com", rng.IntN(11000))
					}
					r, err := env.cl.AddDomains(ctx, &api.AddDomainsRequest{Names: batch})
					if err != nil {
						if ctx.Err() == nil {
							t.Error(err)
						}
						return
					}
					added.Add(int64(r.Added))
				}
			})

			opts := client.ListOptions{Limit: 23}
			if filtered {
				opts.States = []string{"pending"}
				opts.Query = "host-"
			}
			seen := map[string]int{}
			var order []string
			for {
				l, err := env.cl.Domains(context.Background(), opts)
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range l.Domains {
					seen[d.Name]++
					order = append(order, d.Name)
				}
				if l.Next == "" {
					break
				}
				opts.After = l.Next
				time.Sleep(time.Millisecond) // let the adder in between pages
			}
			cancel()
			wg.Wait()

			for n, c := range seen {
				if c > 1 {
					t.Errorf("%s listed %d times", n, c)
				}
			}
			for _, n := range initial {
				if seen[n] != 1 {
					t.Errorf("%s, present from the start, listed %d times", n, seen[n])
				}
			}
			if !slices.IsSorted(order) {
				t.Error("the names are not in name order")
			}
			if added.Load() == 0 || len(seen) == len(initial) {
				t.Errorf("%d names added while paging, %d listed beyond the initial ones: the test did not race", added.Load(), len(seen)-len(initial))
			}
			t.Logf("%d initial names, %d added while paging, %d listed", len(initial), added.Load(), len(seen))
		})
	}
}
