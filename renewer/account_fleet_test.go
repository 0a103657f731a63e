package renewer

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/pebbletest"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
)

// TestFleetAccountRegisteredOnce: three hosts of a fleet, each with its
// own connection to one PostgreSQL database and its own issuer, asking for
// the account at the same moment register it once: Pebble sees one
// newAccount request and every host orders with the same URL. When the
// CA forgets the account, the hosts that find out at the same moment
// register it again once, and all take the new URL.
func TestFleetAccountRegisteredOnce(t *testing.T) {
	t.Parallel()
	env := newACMEEnv(t, pebbletest.Options{})
	// A cluster of the test's own: the renewer package's tests share no
	// PostgreSQL (pgtest.Main is not theirs).
	url := pgtest.Start(t).NewDatabase(t)
	const hosts = 3
	issuers := make([]*ACMEIssuer, hosts)
	var db *postgres.Store
	for i := range issuers {
		st, err := postgres.Open(t.Context(), postgres.Options{URL: url, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		db = st
		cfg := ACMEConfig{Directory: env.ca.DirectoryURL, Email: "ops@example.test", AgreeTerms: true, HTTPClient: env.ca.HTTPClient(), Timeout: time.Minute}
		if issuers[i], err = NewACMEIssuer(cfg, st, testLogger(t)); err != nil {
			t.Fatal(err)
		}
	}
	all := func(what string, f func(is *ACMEIssuer) (string, error)) []string {
		t.Helper()
		urls := make([]string, hosts)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, is := range issuers {
			wg.Go(func() {
				<-start
				u, err := f(is)
				if err != nil {
					t.Errorf("host %d, %s: %v", i+1, what, err)
				}
				urls[i] = u
			})
		}
		close(start)
		wg.Wait()
		for i, u := range urls {
			if u == "" || u != urls[0] {
				t.Fatalf("%s: host %d has account %q, host 1 %q; want one account for the fleet", what, i+1, u, urls[0])
			}
		}
		return urls
	}
	all("first use", func(is *ACMEIssuer) (string, error) {
		a, err := is.Account(t.Context())
		if err != nil {
			return "", err
		}
		return a.URL, nil
	})
	if n := env.ca.Requests("newAccount"); n != 1 {
		t.Fatalf("newAccount requests from %d hosts: %d; want 1", hosts, n)
	}

	// The CA forgets the account (its URL is lost): each host loads the
	// lost one, and all find out at the same moment.
	id := AccountID(env.ca.DirectoryURL, "ops@example.test")
	rec, err := db.GetAccount(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	lost := strings.TrimSuffix(env.ca.DirectoryURL, "/dir") + "/my-account/lost"
	rec.URL = lost
	if err := db.PutAccount(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	stale := map[*ACMEIssuer]*account{}
	for _, is := range issuers {
		is.acct = nil // a restart: load the record again
		a, err := is.account(t.Context())
		if err != nil || a.url != lost {
			t.Fatalf("loaded account %+v, %v; want the lost one", a, err)
		}
		stale[is] = a
	}
	again := all("registering again", func(is *ACMEIssuer) (string, error) {
		a, err := is.reregister(context.WithoutCancel(t.Context()), stale[is])
		if err != nil {
			return "", err
		}
		return a.url, nil
	})
	if again[0] == lost {
		t.Fatal("the hosts still use the lost account URL")
	}
	if n := env.ca.Requests("newAccount"); n != 2 {
		t.Fatalf("newAccount requests after %d hosts found the account lost: %d; want 2 (one each time)", hosts, n)
	}
}
