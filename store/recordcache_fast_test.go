package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// lookupOnce looks name up once and reports whether the fast path
// answered; nil for no certificate.
func lookupOnce(t *testing.T, b *Badger, name string) (c *Certificate, fast bool) {
	t.Helper()
	before := b.RecordCacheStats().FastHits
	c, err := b.LookupCertificate(context.Background(), name)
	fast = b.RecordCacheStats().FastHits > before
	if errors.Is(err, ErrNotFound) {
		if fast {
			t.Fatalf("lookup %s: not found, and counted a fast hit", name)
		}
		return nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return c, fast
}

// sameCert reports whether got is want: the same ID, chain, key and
// expiry, or both nil.
func sameCert(got, want *Certificate) bool {
	if got == nil || want == nil {
		return got == want
	}
	return got.ID == want.ID && bytes.Equal(got.ChainPEM, want.ChainPEM) && bytes.Equal(got.KeyPEM, want.KeyPEM) && got.NotAfter.Equal(want.NotAfter)
}

func certID(c *Certificate) string {
	if c == nil {
		return "none"
	}
	return c.ID
}

// fastStep is one write of a fast-path test and what the names it
// changes serve after it (nil: nothing).
type fastStep struct {
	desc   string
	do     func()
	serves map[string]*Certificate
}

// checkFastSteps runs steps. Before each write, every name the step
// lists is looked up until its answer comes from the fast path (when it
// has one); after the write, its first lookup must not come from there
// (the write changed it) and must return the new answer, and its second
// must come from the fast path again.
func checkFastSteps(t *testing.T, b *Badger, steps []fastStep) {
	t.Helper()
	for _, s := range steps {
		for name := range s.serves {
			if c, _ := lookupOnce(t, b, name); c != nil {
				if _, fast := lookupOnce(t, b, name); !fast {
					t.Fatalf("before %s: %s looked up twice, the second not from the fast path", s.desc, name)
				}
			}
		}
		s.do()
		for name, want := range s.serves {
			got, fast := lookupOnce(t, b, name)
			switch {
			case fast:
				t.Errorf("%s: the first lookup of %s after it came from the fast path (%s)", s.desc, name, certID(got))
			case !sameCert(got, want):
				t.Errorf("%s: %s serves %s, want %s", s.desc, name, certID(got), certID(want))
			}
			if want == nil {
				continue
			}
			got, fast = lookupOnce(t, b, name)
			if !fast || !sameCert(got, want) {
				t.Errorf("%s: the second lookup of %s: %s, fast path %v; want %s from the fast path", s.desc, name, certID(got), fast, certID(want))
			}
		}
	}
}

// After every kind of write that changes what a name serves, the next
// lookup of the name answers as the store does now, never from what the
// fast path validated before: renewals (same ID, new ID), a delete that
// moves the older record back into the link (rehome), a record of two
// names rewritten, keys rotate, a fleet's writes (Apply), a name added
// under the wildcard that served it, its removal, the wildcard's
// removal, deletes.
func TestFastPathFollowsEveryWrite(t *testing.T) {
	clock := newTestClock()
	ctx := context.Background()
	b := openTestBadger(t, "", clock)
	certs := realCerts(t, clock, 3)
	cert := func(id string, variant int, names ...string) *Certificate {
		c := testCert(clock, names...)
		c.ID = id
		src := certs[variant%len(certs)]
		c.ChainPEM, c.KeyPEM = src.ChainPEM, src.KeyPEM
		return c
	}
	put, del := certWriters(t, b)
	apply := func(cs ...Change) {
		t.Helper()
		if err := b.Apply(ctx, cs); err != nil {
			t.Fatal(err)
		}
	}
	newKey := []byte("-----BEGIN PRIVATE KEY-----\nrotated\n-----END PRIVATE KEY-----\n")
	fleetKey := []byte("-----BEGIN PRIVATE KEY-----\nfleet\n-----END PRIVATE KEY-----\n")
	const (
		a, m, n = "a.example.com", "m.example.com", "n.example.com"
		w, x    = "*.w.example.com", "x.w.example.com"
	)
	a1, a1b, a2 := cert("a1", 0, a), cert("a1", 1, a), cert("a2", 2, a)
	m1, m1b := cert("m1", 0, m, n), cert("m1", 2, m, n)
	w1, x1 := cert("w1", 1, w), cert("x1", 0, x)
	a1c, a1d := cert("a1", 2, a), cert("a1", 0, a)
	ao := cert("ao", 1, a, "o.example.com")
	clone := func(c *Certificate, key []byte) *Certificate { d := *c; d.KeyPEM = key; return &d }
	w1r := clone(w1, newKey)

	checkFastSteps(t, b, []fastStep{{
		desc:   "stored",
		do:     func() { put(a1); put(m1); put(w1) },
		serves: map[string]*Certificate{a: a1, m: m1, n: m1, w: w1, x: w1},
	}, {
		desc:   "a renewal under the same ID",
		do:     func() { put(a1b) },
		serves: map[string]*Certificate{a: a1b},
	}, {
		desc:   "a renewal under a new ID",
		do:     func() { clock.Advance(time.Minute); put(a2) },
		serves: map[string]*Certificate{a: a2},
	}, {
		desc:   "the renewal deleted: the older record moves back into the link (rehome)",
		do:     func() { del("a2") },
		serves: map[string]*Certificate{a: a1b},
	}, {
		desc:   "a record of two names, under its ID, rewritten",
		do:     func() { put(m1b) },
		serves: map[string]*Certificate{m: m1b, n: m1b},
	}, {
		desc: "keys rotate",
		do: func() {
			if _, err := b.RewriteKeys(ctx, KeyOfCertificate, "", 100, func(string, []byte) ([]byte, error) { return newKey, nil }); err != nil {
				t.Fatal(err)
			}
		},
		serves: map[string]*Certificate{a: clone(a1b, newKey), m: clone(m1b, newKey), n: clone(m1b, newKey), w: w1r, x: w1r},
	}, {
		desc: "a fleet's writes: a renewal and a key rewritten (Apply)",
		do: func() {
			apply(putCert(1, a1c), Change{Version: 2, Kind: ChangeRewriteKey, ID: "m1", KeyPEM: fleetKey})
		},
		serves: map[string]*Certificate{a: a1c, m: clone(m1b, fleetKey), n: clone(m1b, fleetKey)},
	}, {
		desc:   "a name under the wildcard that served it gets its own certificate",
		do:     func() { put(x1) },
		serves: map[string]*Certificate{x: x1},
	}, {
		desc:   "its own certificate deleted: the wildcard serves it again",
		do:     func() { del("x1") },
		serves: map[string]*Certificate{x: w1r},
	}, {
		desc:   "the wildcard deleted",
		do:     func() { del("w1") },
		serves: map[string]*Certificate{w: nil, x: nil},
	}, {
		desc:   "a certificate of two names takes the name",
		do:     func() { clock.Advance(time.Minute); put(ao) },
		serves: map[string]*Certificate{a: ao},
	}, {
		desc:   "and the certificate of the name alone takes it back",
		do:     func() { clock.Advance(time.Minute); put(a1d) },
		serves: map[string]*Certificate{a: a1d},
	}, {
		desc:   "which is deleted: the link goes back to the other, whose record stays under its ID",
		do:     func() { del("a1") },
		serves: map[string]*Certificate{a: ao},
	}, {
		desc:   "deleted",
		do:     func() { del("ao"); del("m1") },
		serves: map[string]*Certificate{a: nil, "o.example.com": nil, m: nil, n: nil},
	}})
	if st := b.RecordCacheStats(); st.Entries != 0 {
		t.Errorf("%d records cached after every certificate was deleted, want 0", st.Entries)
	}
}

// The upgrade of a store written before formatV2 rewrites every record
// and moves it into its name's link: the fast path does not answer with
// the record it validated before, though its certificate is the same.
func TestFastPathFollowsTheUpgrade(t *testing.T) {
	clock := newTestClock()
	ctx := context.Background()
	b := openTestBadgerWith(t, "", BadgerOptions{Clock: clock.Now, noUpgrade: true, writeV1: true})
	cs := realCerts(t, clock, 2)
	cs[1].Names = []string{"m.example.com", "n.example.com"}
	checkFastSteps(t, b, []fastStep{{
		desc: "stored in formatV1",
		do: func() {
			if err := b.PutCertificates(ctx, cs); err != nil {
				t.Fatal(err)
			}
		},
		serves: map[string]*Certificate{cs[0].Names[0]: cs[0], "m.example.com": cs[1], "n.example.com": cs[1]},
	}, {
		desc: "upgraded",
		do: func() {
			b.writeV1, b.writeUnhomed = false, false
			if err := forgetUpgrade(b); err != nil {
				t.Fatal(err)
			}
			if done, err := b.upgradeRecords(ctx, 0); err != nil || !done {
				t.Fatalf("upgrade: done %v, %v", done, err)
			}
		},
		serves: map[string]*Certificate{cs[0].Names[0]: cs[0], "m.example.com": cs[1], "n.example.com": cs[1]},
	}})
}

// A name looked up before is answered from the record cache alone: the
// store's database closed, the fast path still answers each name whose
// answer it validated (its record in the name's link, under its ID, or
// the wildcard's), and counts it; a name it holds nothing for (never
// found: "not found" is not kept) needs the database.
func TestFastPathReadsNothingFromTheStore(t *testing.T) {
	clock := newTestClock()
	b := openTestBadger(t, "", clock)
	put, _ := certWriters(t, b)
	cs := realCerts(t, clock, 3)
	cs[1].Names = []string{"m.example.com", "n.example.com"}
	cs[2].Names = []string{"*.w.example.com"}
	for _, c := range cs {
		put(c)
	}
	want := map[string]*Certificate{cs[0].Names[0]: cs[0], "m.example.com": cs[1], "n.example.com": cs[1], "x.w.example.com": cs[2]}
	for name := range want {
		if _, fast := lookupOnce(t, b, name); fast {
			t.Errorf("the first lookup of %s came from the fast path", name)
		}
	}
	if _, err := b.LookupCertificate(context.Background(), "nothing.example.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup of a name without a certificate: %v", err)
	}
	before := b.RecordCacheStats()
	// The names answered from a record under another key have a fast
	// entry each, counted apart from the records.
	if before.Entries != 3 || before.FastEntries != 3 {
		t.Errorf("%d records and %d fast entries cached after looking up %d names, want 3 and 3", before.Entries, before.FastEntries, len(want))
	}
	// Badger's DB closes once: the b.Close of openTestBadger's cleanup
	// leaves it be, and closes the record cache.
	if err := b.db.Close(); err != nil {
		t.Fatal(err)
	}
	for name, w := range want {
		if got, fast := lookupOnce(t, b, name); !fast || !sameCert(got, w) {
			t.Errorf("%s with the database closed: %s, fast path %v; want %s from the fast path", name, certID(got), fast, certID(w))
		}
	}
	if st := b.RecordCacheStats(); st.FastHits != before.FastHits+uint64(len(want)) || st.Misses != before.Misses {
		t.Errorf("after %d lookups from the fast path: %+v, before %+v", len(want), st, before)
	}
	if _, err := b.LookupCertificate(context.Background(), "nothing.example.com"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("lookup of a name without a certificate, the database closed: %v; want the database's error", err)
	}
}

// Writers renew and delete certificates while readers look their names
// up: a lookup never answers with a certificate older than one whose
// write had returned before it began, nor with one deleted before it
// began, through the fast path or not (run with -race). Each name has
// one writer, which numbers its certificates (in NotAfter) and publishes
// the number of the last one stored, and whether deleted, before each
// write begins and after it returns; one name is served only through its
// wildcard.
func TestFastPathRacingWriters(t *testing.T) {
	clock := newTestClock()
	ctx := context.Background()
	// Without the fsync of each commit: the writes' order is the same.
	b := openTestBadgerWith(t, "", BadgerOptions{Clock: clock.Now, NoSync: true})
	base := clock.Now()
	type target struct {
		stored, looked string // the certificate's name; the name looked up
		// gen<<1 | deleted, published before each write (started) and
		// after it (done)
		started, done atomic.Int64
	}
	targets := []*target{
		{stored: "r0.example.com", looked: "r0.example.com"},
		{stored: "r1.example.com", looked: "r1.example.com"},
		{stored: "*.w.example.com", looked: "q.w.example.com"},
	}
	const writes = 150
	gen := func(c *Certificate) int64 { return int64(c.NotAfter.Sub(base) / time.Second) }
	var writers, readers sync.WaitGroup
	stop := make(chan struct{})
	for _, tg := range targets {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for g := int64(1); g <= writes; g++ {
				// Two IDs in turn: a renewal under a new ID, the older
				// deleted after it (the link stays on the newer).
				c := testCert(clock, tg.stored)
				c.ID = fmt.Sprintf("%s-%d", tg.stored, g%2)
				c.NotAfter, c.StoredAt = base.Add(time.Duration(g)*time.Second), base.Add(time.Duration(g)*time.Second)
				c.ChainPEM = fmt.Appendf(nil, "-----BEGIN CERTIFICATE-----\n%s %d\n-----END CERTIFICATE-----\n", tg.stored, g)
				tg.started.Store(g << 1)
				if err := b.PutCertificate(ctx, c); err != nil {
					t.Error(err)
					return
				}
				tg.done.Store(g << 1)
				other := fmt.Sprintf("%s-%d", tg.stored, (g+1)%2)
				if err := b.DeleteCertificate(ctx, other); err != nil && !errors.Is(err, ErrNotFound) {
					t.Error(err)
					return
				}
				if g%7 == 0 {
					tg.started.Store(g<<1 | 1)
					if err := b.DeleteCertificate(ctx, c.ID); err != nil {
						t.Error(err)
						return
					}
					tg.done.Store(g<<1 | 1)
				}
			}
		}()
	}
	var fastAnswers atomic.Int64
	for r := range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for i := r; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				tg := targets[i%len(targets)]
				before := tg.done.Load()
				c, err := b.LookupCertificate(ctx, tg.looked)
				after := tg.started.Load()
				switch {
				case errors.Is(err, ErrNotFound):
					if before&1 == 0 && before != 0 && after == before {
						t.Errorf("lookup %s: not found while certificate %d was stored", tg.looked, before>>1)
					}
				case err != nil:
					t.Error(err)
					return
				default:
					g := gen(c)
					if g < before>>1 || (before&1 == 1 && g == before>>1) || g > after>>1 {
						t.Errorf("lookup %s: certificate %d; before the lookup %d was stored (deleted: %v), after it %d was being written", tg.looked, g, before>>1, before&1 == 1, after>>1)
					}
				}
			}
		}()
	}
	writers.Wait()
	for _, tg := range targets {
		for range 3 {
			if c, fast := lookupOnce(t, b, tg.looked); fast {
				fastAnswers.Add(1)
				if want := tg.done.Load(); want&1 == 0 && gen(c) != want>>1 {
					t.Errorf("lookup %s after the writers: %d, want %d", tg.looked, gen(c), want>>1)
				}
			}
		}
	}
	close(stop)
	readers.Wait()
	if st := b.RecordCacheStats(); st.FastHits == 0 || fastAnswers.Load() == 0 {
		t.Errorf("no lookup took the fast path: %+v", st)
	}
}

// certVersion names c by its ID and the hash of its chain.
func certVersion(c *Certificate) string {
	if c == nil {
		return "none"
	}
	sum := sha256.Sum256(c.ChainPEM)
	return fmt.Sprintf("%s (chain %x)", c.ID, sum[:4])
}

// oddEpochs returns how many of b's epochs are odd: a write of their
// names under way.
func oddEpochs(b *Badger) int {
	n := 0
	for i := range b.epochs.slots {
		n += int(b.epochs.slots[i].Load() & 1)
	}
	return n
}

// A write is visible to the change feed from its commit, before update
// returns: a lookup made in between, after the feed has listed the name,
// answers with the new certificate, not from the fast path with the one
// it replaced (for a name whose record is in its link, and for one whose
// record is under its certificate's ID), nor with one deleted.
func TestFastPathAfterTheCommit(t *testing.T) {
	clock := newTestClock()
	ctx := context.Background()
	b := openTestBadger(t, "", clock)
	put, del := certWriters(t, b)
	cs := realCerts(t, clock, 4)
	cs[2].Names = []string{"m.example.com", "n.example.com"}
	cs[1].ID, cs[1].Names = cs[0].ID, cs[0].Names
	cs[3].ID, cs[3].Names = cs[2].ID, cs[2].Names
	for _, tc := range []struct {
		desc   string
		before *Certificate // stored first, when not nil
		name   string
		write  func()
		want   *Certificate
	}{
		{"replaced in its link", cs[0], cs[0].Names[0], func() { put(cs[1]) }, cs[1]},
		{"replaced under its ID", cs[2], "n.example.com", func() { put(cs[3]) }, cs[3]},
		{"deleted", nil, "n.example.com", func() { del(cs[3].ID) }, nil},
	} {
		if tc.before != nil {
			put(tc.before)
		}
		cur, err := b.CertChanges(ctx, Cursor{})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; ; i++ {
			if _, fast := lookupOnce(t, b, tc.name); fast {
				break
			} else if i == 3 {
				t.Fatalf("%s: %s never answered from the fast path", tc.desc, tc.name)
			}
		}
		var listed []string
		var got *Certificate
		b.afterCommit = func() {
			b.afterCommit = nil
			ch, err := b.CertChanges(ctx, cur.Next)
			if err != nil {
				t.Fatal(err)
			}
			listed = ch.Names
			got, _ = lookupOnce(t, b, tc.name)
		}
		tc.write()
		if !slices.Contains(listed, tc.name) {
			t.Fatalf("%s: the change feed listed %v after the commit, not %s", tc.desc, listed, tc.name)
		}
		if !sameCert(got, tc.want) {
			t.Errorf("%s: after the feed listed %s, a lookup answered %s; want %s", tc.desc, tc.name, certVersion(got), certVersion(tc.want))
		}
		if n := oddEpochs(b); n != 0 {
			t.Errorf("%s: %d epochs odd after the write", tc.desc, n)
		}
	}
}

// A write that fails or panics leaves no epoch odd (the fast path would
// be shut for its names) and writeMu unlocked; its names are answered
// as before, from the fast path again once validated.
func TestFastPathWriteFailsOrPanics(t *testing.T) {
	clock := newTestClock()
	ctx := context.Background()
	b := openTestBadger(t, "", clock)
	put, _ := certWriters(t, b)
	c := realCerts(t, clock, 1)[0]
	put(c)
	name := c.Names[0]
	failed := errors.New("failed on purpose")
	write := func(fail func()) error {
		return b.update(ctx, func(txn *badger.Txn) error {
			b.touch(name)
			b.touch("other.example.com")
			if err := txn.Delete(key(prefixLink, name)); err != nil {
				return err
			}
			fail()
			return failed
		})
	}
	if err := write(func() {}); !errors.Is(err, failed) {
		t.Fatalf("the failing write returned %v", err)
	}
	if n := oddEpochs(b); n != 0 {
		t.Errorf("%d epochs odd after a failed write", n)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the write did not panic")
			}
		}()
		write(func() { panic("on purpose") })
	}()
	if n := oddEpochs(b); n != 0 {
		t.Errorf("%d epochs odd after a write panicked", n)
	}
	if !b.writeMu.TryLock() {
		t.Fatal("writeMu still locked after a write panicked")
	}
	b.writeMu.Unlock()
	for i := 0; ; i++ {
		got, fast := lookupOnce(t, b, name)
		if !sameCert(got, c) {
			t.Fatalf("%s after the failed writes: %s; want %s", name, certID(got), certID(c))
		}
		if fast {
			break
		} else if i == 3 {
			t.Fatalf("%s never answered from the fast path after the failed writes", name)
		}
	}
}

// A record the fast path finds but cannot decode (its intermediate no
// longer in the store's memory) sends the lookup the old way, which
// answers; the fast path takes back the fast hit it counted, so only
// the old way's reads count (two hits: it reads the record again once
// it has loaded the intermediate, decodeRecord).
func TestFastPathCountsALookupOnce(t *testing.T) {
	clock := newTestClock()
	b := openTestBadger(t, "", clock)
	put, _ := certWriters(t, b)
	c := realCerts(t, clock, 1)[0]
	put(c)
	name := c.Names[0]
	for i := 0; ; i++ {
		if _, fast := lookupOnce(t, b, name); fast {
			break
		} else if i == 3 {
			t.Fatalf("%s never answered from the fast path", name)
		}
	}
	b.inters.mu.Lock()
	b.inters.pem = nil
	b.inters.mu.Unlock()
	before := b.RecordCacheStats()
	got, err := b.LookupCertificate(context.Background(), name)
	if err != nil || !sameCert(got, c) {
		t.Fatalf("lookup of %s without its intermediate in memory: %s, %v", name, certVersion(got), err)
	}
	st := b.RecordCacheStats()
	if n := st.Hits + st.Misses - before.Hits - before.Misses; n != 2 || st.FastHits != before.FastHits {
		t.Errorf("one lookup counted %d times, %d of them fast; want 2 hits of the old way, none fast", n, st.FastHits-before.FastHits)
	}
}
