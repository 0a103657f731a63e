package nginx_test

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/renewer/pebbletest"
)

// TestACMEOnDemandOneOrderPerName: issue #10 item 1. Handshakes keep
// asking for names that are being issued on demand, from several nginx
// workers at once, and every name is still ordered exactly once, as
// counted by Pebble's front.
//
// Each handshake that finds no certificate makes nginx ask the sidecar
// again once the Lua module's cached 404 has expired: after negative_ttl
// (5 s), capped by the sidecar's not_found_max_age, which the test
// sidecar sets to 1 s. So the 1,000 handshakes of the one-name case,
// spread over 24 s, re-ask the sidecar as often as 1,000 handshakes over
// 2 minutes would with the default negative_ttl; so does the 50-name
// case, asking for every name at once in rounds over the same time. The
// second case asks for the name while the renewer's one worker is busy
// with 12 names added just before, so that it waits its turn.
func TestACMEOnDemandOneOrderPerName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		desc   string
		names  int
		rounds int // handshakes for each name, spread over the time below
		busy   int // names added (not on demand) just before, to keep the renewer's workers busy
	}{
		{desc: "one name, 1000 handshakes", names: 1, rounds: 1000},
		{desc: "one name while the workers are busy", names: 1, rounds: 1000, busy: 12},
		{desc: "50 names at once", names: 50, rounds: 24},
	}
	const span = 24 * time.Second // 24 expiries of the cached 404
	for i, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			workers := 4
			if tc.busy > 0 {
				workers = 1
			}
			env := startACMEEnv(t, acmeEnvOptions{NginxWorkers: 4, Workers: workers, Extra: func(ca *pebbletest.Server) string {
				return fmt.Sprintf(`
[on_demand]
allow = ["*.allowed.test"]
targets = ["127.0.0.1"]
resolvers = [%q]
`, ca.DNS.Addr())
			}})
			names := make([]string, tc.names)
			for j := range names {
				names[j] = fmt.Sprintf("n%d-%d.allowed.test", j, i)
			}
			env.pointHere(names...)
			var others []string
			for j := range tc.busy {
				others = append(others, fmt.Sprintf("busy%d-%d.managed.test", j, i))
			}
			if len(others) > 0 {
				env.pointHere(others...)
				env.side.addDomains(t, others...)
			}

			// Handshakes for every name, tc.rounds each, from 8 clients,
			// evenly over span whatever the certificates' progress.
			var served, fallback atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			gap := span / time.Duration(tc.rounds)
			for c := range 8 {
				wg.Go(func() {
					for r := c; r < tc.rounds; r += 8 {
						if d := time.Until(start.Add(time.Duration(r) * gap)); d > 0 {
							time.Sleep(d)
						}
						for _, n := range names {
							certs, err := env.served(n)
							switch {
							case err != nil:
								t.Errorf("%s: %v", n, err)
								return
							case env.isFallback(certs):
								fallback.Add(1)
							default:
								served.Add(1)
							}
						}
					}
				})
			}
			wg.Wait()
			t.Logf("%d handshakes over %v: %d got the fallback, %d a certificate",
				fallback.Load()+served.Load(), time.Since(start).Round(time.Millisecond), fallback.Load(), served.Load())
			for _, n := range append(names, others...) {
				eventually(t, 60*time.Second, n+" served", env.issued(t, n, nil))
			}
			// Whatever the renewer still had queued has run (or, when it
			// keeps ordering, the orders are counted anyway).
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				err := env.side.idle()
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("the renewer not idle 30 s after the handshakes: %v", err)
					break
				}
			}

			for _, n := range names {
				if c := env.ca.OrdersFor(n); c != 1 {
					t.Errorf("%s: %d orders at Pebble, want 1", n, c)
				}
			}
			if n := env.ca.OrderCount(); n != len(names)+tc.busy {
				t.Errorf("%d orders at Pebble for %d names, want one each", n, len(names)+tc.busy)
			}
			if n := env.issuedCount(); n != len(names)+tc.busy {
				t.Errorf("Pebble issued %d certificates for %d names, want one each", n, len(names)+tc.busy)
			}
		})
	}
}

// idle is a condition for eventually: the sidecar's renewer has no order
// under way and no name due.
func (s *sidecar) idle() error {
	out, err := s.cli("queue", "--json")
	if err != nil {
		return fmt.Errorf("certserver queue: %v", err)
	}
	var q api.Queue
	if err := json.Unmarshal(out, &q); err != nil {
		return fmt.Errorf("certserver queue --json: %v", err)
	}
	if q.InFlight != 0 || q.DueNow.N != 0 {
		return fmt.Errorf("%d orders in flight, %d names due", q.InFlight, q.DueNow.N)
	}
	return nil
}
