package renewer

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// TestCADownNamesWait: issue #10 item 7, on a fake clock. A CA that cannot
// be reached fails the first three orders and then rests (30 s, then a
// minute); while it rests nothing is sent to it, and the names due meanwhile
// wait for it without a failure counted: no name goes into its own
// backoff. When a rest ends one order probes the CA; once a probe finds it
// back, every waiting name is ordered the moment it comes due, within
// caDownSpread of the rest's end, and each is ordered once.
func TestCADownNamesWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newMultiEnv(t, Config{}, nil)
	down := acmeErr(KindTransient, "", "dial tcp 127.0.0.1:14000: connect: connection refused")
	e.cas[0].fail(down, down, down, down) // three, then the first probe
	var names []string
	for i := range 20 {
		names = append(names, fmt.Sprintf("n%02d.example.test", i))
	}
	addPending(t, e.st, e.clock.Now(), names...)

	// pass works on every name that is due, as the dispatcher would, and
	// checks that none has a failure counted.
	pass := func(step string) {
		t.Helper()
		due, err := e.st.Due(ctx, e.clock.Now(), 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range due {
			e.r.process(ctx, d.Name, false)
		}
		for _, n := range names {
			if d := getDomain(t, e.st, n); d.Failures != 0 {
				t.Fatalf("%s: %s has %d failures counted, want none: the CA's failures are not the name's", step, n, d.Failures)
			}
		}
	}
	orders := func() int { return len(e.cas[0].orderList()) }
	start := e.clock.Now()

	pass("down")
	if n := orders(); n != 3 {
		t.Fatalf("down: %d orders sent, want 3 (then the CA rests)", n)
	}
	st := e.r.CAStatus()[0]
	if !st.Resting || st.RestingUntil != start.Add(30*time.Second) {
		t.Fatalf("down: CA status %+v, want resting 30 s", st)
	}
	for _, n := range names {
		d := getDomain(t, e.st, n)
		// The three sent are failing; the others were never sent and
		// are still pending.
		want := store.StatePending
		if n < names[3] {
			want = store.StateFailing
		}
		if wait := d.NextAttempt.Sub(start); d.State != want || wait < 30*time.Second || wait > 30*time.Second+caDownSpread {
			t.Fatalf("down: %s %s, next attempt in %v; want %s, waiting 30 s for the CA", n, d.State, wait, want)
		}
	}

	// The rest ends: the CA counts as resting until a probe finds it back
	// (the certserver_ca_resting gauge does not drop while a probe waits
	// for a CA that does not answer). One probe, still down; a minute's
	// rest.
	e.clock.Advance(30*time.Second + caDownSpread)
	if st := e.r.CAStatus()[0]; !st.Resting || !st.RestingUntil.Equal(e.clock.Now()) {
		t.Fatalf("rest over, not probed yet: CA status %+v, want resting until now", st)
	}
	pass("first probe")
	if n := orders(); n != 4 {
		t.Fatalf("first probe: %d orders sent in all, want 4 (one probe)", n)
	}
	if st := e.r.CAStatus()[0]; st.RestingUntil != e.clock.Now().Add(time.Minute) {
		t.Fatalf("first probe: CA status %+v, want resting a minute", st)
	}
	for _, n := range names {
		if d := getDomain(t, e.st, n); d.NextAttempt.Before(e.clock.Now().Add(time.Minute)) {
			t.Fatalf("first probe: %s due at %v, want after the rest", n, d.NextAttempt)
		}
	}
	// Nothing is sent while it rests, however often names are looked at.
	e.clock.Advance(30 * time.Second)
	for _, n := range names {
		e.r.process(ctx, n, false)
	}
	if n := orders(); n != 4 {
		t.Fatalf("resting: %d orders sent in all, want still 4", n)
	}

	// The CA is back: the next probe finds it, and every name is ordered
	// as soon as it is due, once.
	e.clock.Advance(30*time.Second + caDownSpread)
	pass("back")
	if n := orders(); n != 4+20 {
		t.Fatalf("back: %d orders sent in all, want 24 (3, a probe, then each name once)", n)
	}
	if st := e.r.CAStatus()[0]; st.Resting || st.FailureStreak != 0 {
		t.Fatalf("back: CA status %+v, want the streak over", st)
	}
	for _, n := range names {
		if d := getDomain(t, e.st, n); d.State != store.StateValid {
			t.Fatalf("back: %s %s, want valid", n, d.State)
		}
	}
}

// TestCAProbe: the probe of a CA that is down, one order at a time.
func TestCAProbe(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	ca := &caState{}
	for range caTripAfter {
		ca.ended(caDown, now)
	}
	if until, wait, probe := ca.admit(now.Add(caRestMin - time.Nanosecond)); !until.Equal(now.Add(caRestMin)) || wait != nil || probe != nil {
		t.Fatalf("resting: admit = %v, %v, %v; want held until the rest ends", until, wait, probe)
	}
	now = now.Add(caRestMin)
	_, _, probe := ca.admit(now)
	if probe == nil {
		t.Fatal("after the rest: the first order is not the probe")
	}
	_, wait, second := ca.admit(now)
	if wait != probe || second != nil {
		t.Fatal("after the rest: a second order does not wait for the probe")
	}
	// The probe is refused before it is sent: the next order probes.
	ca.endProbe(probe)
	select {
	case <-wait:
	default:
		t.Fatal("a probe given up does not release the orders waiting for it")
	}
	_, _, probe = ca.admit(now)
	if probe == nil {
		t.Fatal("after a probe was given up: the next order is not the probe")
	}
	ca.ended(caIssued, now)
	if until, wait, p := ca.admit(now); !until.IsZero() || wait != nil || p != nil {
		t.Fatalf("after the probe got an answer: admit = %v, %v, %v; want every order to go", until, wait, p)
	}
	ca.endProbe(probe) // too late: changes nothing
	// A CA that refuses names by its policy rests, but is not down: its
	// orders are not held.
	for range caTripAfter {
		ca.ended(caFailedCA, now)
	}
	if until, wait, p := ca.admit(now); !until.IsZero() || wait != nil || p != nil || !ca.resting(now) {
		t.Fatalf("refusing: admit = %v, %v, %v; want resting and every order to go", until, wait, p)
	}
}

// TestProbeDoesNotHoldFailover: while the first CA, down, is being probed,
// a name goes to the second CA instead of waiting for the probe's answer.
func TestProbeDoesNotHoldFailover(t *testing.T) {
	t.Parallel()
	e := newMultiEnv(t, Config{}, nil, nil)
	a := e.r.cas[0]
	for range caTripAfter {
		a.ended(caDown, e.clock.Now())
	}
	e.clock.Advance(caRestMin)
	if _, _, probe := a.admit(e.clock.Now()); probe == nil {
		t.Fatal("no probe after the rest")
	}
	addPending(t, e.st, e.clock.Now(), "x.example.test")
	e.r.process(context.Background(), "x.example.test", false) // would block if it waited for the probe
	if got := e.servedBy(t, "x.example.test"); got != e.cas[1].dir {
		t.Fatalf("served by %q, want b while a is being probed", got)
	}
}
