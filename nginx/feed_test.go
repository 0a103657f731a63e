package nginx_test

import (
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
)

// maxSweep bounds the handshakes allServe makes to reach every worker.
// nginxtest listens with reuseport, so the kernel hands each connection to
// a worker by its (random) source port: with 3 workers, 300 handshakes
// miss one with a likelihood of about 3·(2/3)^300, never.
const maxSweep = 300

// allServe is a condition for eventually: handshakes with ngx for sni,
// until every worker has served one, all serve the serial want. Each
// handshake is followed by a request whose answer names the worker
// (nginxtest.WorkerHeader).
func allServe(ngx *nginxtest.Nginx, sni string, want *big.Int) func() error {
	return func() error {
		pids := make(map[string]bool)
		for i := range maxSweep {
			serial, pid, err := servedBy(ngx.HTTPSAddr(), sni)
			if err != nil {
				return fmt.Errorf("handshake %d: %w", i+1, err)
			}
			if serial.Cmp(want) != 0 {
				return fmt.Errorf("handshake %d: worker %s served %q serial %v, want %v", i+1, pid, sni, serial, want)
			}
			pids[pid] = true
			if len(pids) == ngx.Workers() {
				return nil
			}
		}
		return fmt.Errorf("%d handshakes for %q reached %d of %d workers", maxSweep, sni, len(pids), ngx.Workers())
	}
}

// TestLuaChangeFeed: with certificates fresh for an hour, what the
// sidecar's change feed names is dropped by every worker of nginx within
// about a second, and a feed that cannot say what changed has everything
// revalidated, served stale meanwhile.
func TestLuaChangeFeed(t *testing.T) {
	ca := newTestCA(t)
	fallback := ca.issue(t, "fallback.invalid")
	fbCert, fbKey := fallback.writeFiles(t, t.TempDir(), "fallback")
	side := startFakeSidecar(t)
	ngx := nginxtest.Start(t, nginxtest.Options{
		Sidecar: "unix:" + side.sock, FallbackCert: fbCert, FallbackKey: fbKey, Workers: 3,
	})
	addr := ngx.HTTPSAddr()
	side.feedSettled(t, addr, 3)

	// within waits until cond holds, reporting how long that took after
	// the change; 15 s is far above the feed's second and far below the
	// hour the certificates are fresh for.
	within := func(t *testing.T, what string, cond func() error) {
		t.Helper()
		start := time.Now()
		eventually(t, 15*time.Second, what, cond)
		t.Logf("%s after %v", what, time.Since(start).Round(10*time.Millisecond))
	}

	t.Run("a replaced certificate is served by every worker", func(t *testing.T) {
		old, renewed := ca.issue(t, "replaced.test"), ca.issue(t, "replaced.test")
		side.set("replaced.test", certAnswer(old, 3600))
		must(t, allServe(ngx, "replaced.test", old.serial))
		side.change("replaced.test", certAnswer(renewed, 3600))
		within(t, "every worker serves the new certificate", allServe(ngx, "replaced.test", renewed.serial))
	})

	t.Run("a removed certificate gives way to the fallback in every worker", func(t *testing.T) {
		l := ca.issue(t, "removed-feed.test")
		side.set("removed-feed.test", certAnswer(l, 3600))
		must(t, allServe(ngx, "removed-feed.test", l.serial))
		side.change("removed-feed.test", answer{status: 404, maxAge: 10})
		within(t, "every worker serves the fallback", allServe(ngx, "removed-feed.test", fallback.serial))
	})

	t.Run("a replaced wildcard reaches every subname", func(t *testing.T) {
		old, renewed := ca.issue(t, "*.wild-feed.test"), ca.issue(t, "*.wild-feed.test")
		a := certAnswer(old, 3600)
		a.record = "*.wild-feed.test"
		side.set("*.wild-feed.test", a)
		subs := []string{"a.wild-feed.test", "b.wild-feed.test", "c.wild-feed.test"}
		for _, sub := range subs {
			must(t, allServe(ngx, sub, old.serial))
		}
		a = certAnswer(renewed, 3600)
		a.record = "*.wild-feed.test"
		side.change("*.wild-feed.test", a) // the feed names the record only
		within(t, "every subname served the new wildcard", func() error {
			for _, sub := range subs {
				if err := allServe(ngx, sub, renewed.serial)(); err != nil {
					return err
				}
			}
			return nil
		})
	})

	for _, tc := range []struct {
		desc, name string
		lose       func()
	}{
		{"nginx fell behind the history", "behind.test", side.trimFeed},
		{"the sidecar runs on another store", "other-store.test", side.newStore},
	} {
		t.Run(tc.desc+": everything is revalidated, served stale meanwhile", func(t *testing.T) {
			old, renewed := ca.issue(t, tc.name), ca.issue(t, tc.name)
			side.set(tc.name, certAnswer(old, 3600))
			must(t, allServe(ngx, tc.name, old.serial))
			before := side.hitsFor(tc.name)
			side.set(tc.name, answer{status: 503, maxAge: -1})
			tc.lose()
			// Asked again though fresh for an hour; while the sidecar
			// fails, the cached certificate is served, never the fallback.
			within(t, "the name is asked about again", func() error {
				if err := expectSerial(addr, tc.name, old.serial)(); err != nil {
					t.Fatal(err)
				}
				if side.hitsFor(tc.name) == before {
					return fmt.Errorf("not asked again")
				}
				return nil
			})
			must(t, allServe(ngx, tc.name, old.serial))
			side.set(tc.name, certAnswer(renewed, 3600))
			within(t, "every worker serves the revalidated certificate", allServe(ngx, tc.name, renewed.serial))
		})
	}

	ngx.AssertCleanErrorLog(t)
	if t.Failed() {
		t.Logf("nginx error log:\n%s", ngx.ErrorLog())
	}
}

// must fails t at once when cond does not hold.
func must(t *testing.T, cond func() error) {
	t.Helper()
	if err := cond(); err != nil {
		t.Fatal(err)
	}
}
