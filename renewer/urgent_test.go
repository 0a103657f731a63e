package renewer

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestExpediteOrdersOnce: however often handshakes ask for a name on
// demand (Expedite) while it waits for a worker and while it is being
// ordered, and from however many goroutines, it is ordered once; asking
// again once it has a certificate that is not due orders nothing.
func TestExpediteOrdersOnce(t *testing.T) {
	st := openStore(t)
	release := make(chan struct{})
	var once sync.Once
	asked := make(chan struct{})
	iss := &scriptedIssuer{life: 90 * 24 * time.Hour, notAfter: func() time.Time { return time.Now().Add(90 * 24 * time.Hour) }}
	r, err := New(Config{Workers: 4, IdleWait: time.Hour, CAs: []CA{{Issuer: iss}}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	const name = "od.example.test"
	addPending(t, st, time.Now(), name)
	iss.during = func(Order) {
		once.Do(func() { close(asked) })
		<-release
	}
	expedite := func(n int) {
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range n {
					if !r.Expedite(name) {
						t.Error("Expedite answered false")
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	expedite(100) // queued before Run: 800 requests, one entry
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	<-asked
	expedite(100) // while the order runs
	close(release)
	waitFor(t, 10*time.Second, "the name valid and released", func() bool {
		return getDomain(t, st, name).State == "valid" && r.InFlight() == 0
	})
	expedite(25) // with a current certificate that is not due
	waitFor(t, 10*time.Second, "the queue drained", func() bool {
		return len(r.urgent) == 0 && r.InFlight() == 0
	})
	if n := iss.orderCount(); n != 1 {
		t.Fatalf("%d orders for %s after 2,000 on-demand requests, want 1", n, name)
	}
}

// TestPrioritizeReordersOnce: an operator's renew now (Prioritize) orders
// a name whose certificate is not due, once however often it is asked
// while queued; one asked for while an order for the name runs does not
// order it again once that order has stored a certificate, and does when
// the worker stored none.
func TestPrioritizeReordersOnce(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	iss := &scriptedIssuer{life: 90 * 24 * time.Hour, notAfter: func() time.Time { return time.Now().Add(90 * 24 * time.Hour) }}
	r, err := New(Config{Workers: 1, IdleWait: time.Hour, CAs: []CA{{Issuer: iss}}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	const name = "op.example.test"
	addPending(t, st, time.Now(), name)
	r.process(ctx, name, false)
	if n := iss.orderCount(); n != 1 {
		t.Fatalf("%d orders, want 1", n)
	}

	// Queued three times, taken once: one re-order.
	for range 3 {
		r.Prioritize(name)
	}
	forced, ok := r.claimQueued(<-r.urgent)
	if !forced || !ok || len(r.urgent) != 0 {
		t.Fatalf("claimQueued = %v, %v with %d more queued; want forced, claimed, none", forced, ok, len(r.urgent))
	}
	r.process(ctx, name, forced)
	if n := iss.orderCount(); n != 2 {
		t.Fatalf("%d orders after renew now, want 2", n)
	}
	r.Expedite(name) // on demand while in flight: nothing more
	r.release(name)
	if len(r.urgent) != 0 {
		t.Fatalf("%d names queued after an order that stored a certificate, want none", len(r.urgent))
	}

	// Asked for while the worker only rescheduled the name: queued again.
	if !r.claim(name) {
		t.Fatal("claim failed")
	}
	r.process(ctx, name, false) // not due: kept
	r.Prioritize(name)
	r.release(name)
	if len(r.urgent) != 1 {
		t.Fatalf("%d names queued after renew now during a pass that ordered nothing, want 1", len(r.urgent))
	}
	forced, ok = r.claimQueued(<-r.urgent)
	r.process(ctx, name, forced)
	r.release(name)
	if n := iss.orderCount(); !forced || !ok || n != 3 {
		t.Fatalf("forced %v, claimed %v, %d orders; want the renew now to order a third certificate", forced, ok, n)
	}
}
