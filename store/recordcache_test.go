package store

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// lookupCached looks name up twice and returns the second answer, which
// must come from the record cache: the first fills it (or finds it
// filled), the second hits it. "" stands for no certificate.
func lookupCached(t *testing.T, b *Badger, name string) *Certificate {
	t.Helper()
	ctx := context.Background()
	first, err := b.LookupCertificate(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	hits := b.RecordCacheStats().Hits
	c, err := b.LookupCertificate(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.RecordCacheStats().Hits; got <= hits {
		t.Fatalf("lookup %s again: no cache hit (%d before and after)", name, got)
	}
	if c.ID != first.ID || !bytes.Equal(c.ChainPEM, first.ChainPEM) || !bytes.Equal(c.KeyPEM, first.KeyPEM) || !c.NotAfter.Equal(first.NotAfter) || !slicesEqual(c.Names, first.Names) {
		t.Fatalf("lookup %s from the cache: %s with %q, from the store: %s with %q", name, c.ID, c.ChainPEM, first.ID, first.ChainPEM)
	}
	return c
}

func slicesEqual(a, b []string) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// A lookup reads its record from the cache once it has read it from the
// store, and returns the same certificate. A record the store rewrites
// or deletes afterwards is never served from what the cache holds:
// every step looks its names up before it changes them and after.
func TestRecordCacheNeverServesStaleRecords(t *testing.T) {
	clock := newTestClock()
	ctx := context.Background()
	b := openTestBadger(t, "", clock)
	certs := realCerts(t, clock, 3)
	// cert returns a real certificate of names under id; variant picks
	// another leaf and key.
	cert := func(id string, variant int, names ...string) *Certificate {
		c := testCert(clock, names...)
		c.ID = id
		src := certs[variant%len(certs)]
		c.ChainPEM, c.KeyPEM = src.ChainPEM, src.KeyPEM
		return c
	}
	put, del := certWriters(t, b)
	newKey := []byte("-----BEGIN PRIVATE KEY-----\nrewritten\n-----END PRIVATE KEY-----\n")
	a1, a2 := cert("a1", 0, "a.example.com"), cert("a2", 1, "a.example.com")
	a1b := cert("a1", 2, "a.example.com")
	m1, m1b := cert("m1", 0, "m.example.com", "n.example.com"), cert("m1", 1, "m.example.com", "n.example.com")
	put(a1)
	put(m1)

	steps := []struct {
		desc   string
		do     func()
		serves map[string]*Certificate // nil: no certificate
	}{
		{
			desc:   "stored",
			do:     func() {},
			serves: map[string]*Certificate{"a.example.com": a1, "m.example.com": m1, "n.example.com": m1},
		},
		{
			desc:   "a renewal under a new ID",
			do:     func() { clock.Advance(time.Minute); put(a2) },
			serves: map[string]*Certificate{"a.example.com": a2},
		},
		{
			desc:   "the renewal deleted: the old record moves back into the link (rehome)",
			do:     func() { del("a2") },
			serves: map[string]*Certificate{"a.example.com": a1},
		},
		{
			desc:   "the same ID put again with another certificate and key",
			do:     func() { put(a1b) },
			serves: map[string]*Certificate{"a.example.com": a1b},
		},
		{
			desc:   "a record of two names, under its ID, put again",
			do:     func() { put(m1b) },
			serves: map[string]*Certificate{"m.example.com": m1b, "n.example.com": m1b},
		},
		{
			desc: "keys rewritten (keys rotate)",
			do: func() {
				_, err := b.RewriteKeys(ctx, KeyOfCertificate, "", 100, func(string, []byte) ([]byte, error) { return newKey, nil })
				if err != nil {
					t.Fatal(err)
				}
				a1b.KeyPEM, m1b.KeyPEM = newKey, newKey
			},
			serves: map[string]*Certificate{"a.example.com": a1b, "m.example.com": m1b},
		},
		{
			desc:   "deleted",
			do:     func() { del("a1"); del("m1") },
			serves: map[string]*Certificate{"a.example.com": nil, "m.example.com": nil, "n.example.com": nil},
		},
	}
	for _, s := range steps {
		s.do()
		for name, want := range s.serves {
			got := lookupCached(t, b, name)
			switch {
			case want == nil && got != nil:
				t.Errorf("%s: %s serves %s, want none", s.desc, name, got.ID)
			case want == nil:
			case got == nil:
				t.Errorf("%s: %s serves none, want %s", s.desc, name, want.ID)
			case got.ID != want.ID || !bytes.Equal(got.ChainPEM, want.ChainPEM) || !bytes.Equal(got.KeyPEM, want.KeyPEM):
				t.Errorf("%s: %s serves %s with\n%s%s\nwant %s with\n%s%s", s.desc, name, got.ID, got.ChainPEM, got.KeyPEM, want.ID, want.ChainPEM, want.KeyPEM)
			}
		}
	}
	if st := b.RecordCacheStats(); st.Entries != 0 {
		t.Errorf("%d records cached after every certificate was deleted, want 0", st.Entries)
	}
}

// Only lookups fill the cache: listing, getting by ID and exporting every
// record leave it as it was.
func TestRecordCacheIgnoresScans(t *testing.T) {
	clock := newTestClock()
	ctx := context.Background()
	b := openTestBadger(t, "", clock)
	cs := realCerts(t, clock, 50)
	if err := b.PutCertificates(ctx, cs); err != nil {
		t.Fatal(err)
	}
	lookupCached(t, b, cs[0].Names[0])
	if all, err := b.ListCertificates(ctx, "", 100); err != nil || len(all) != len(cs) {
		t.Fatalf("ListCertificates = %d, %v", len(all), err)
	}
	for _, c := range cs {
		if _, err := b.GetCertificate(ctx, c.ID); err != nil {
			t.Fatal(err)
		}
	}
	if st := b.RecordCacheStats(); st.Entries != 1 || st.Misses != 1 {
		t.Errorf("after one name looked up twice and every record listed and read: %+v, want 1 entry and 1 miss", st)
	}
}

// The cache's memory stays within its size, its index's share included,
// however many records are looked up; RecordCacheSize below the minimum
// or above the maximum is refused with an error naming it, and a
// negative size turns the cache off.
func TestRecordCacheSize(t *testing.T) {
	clock := newTestClock()
	ctx := context.Background()
	b := openTestBadgerWith(t, "", BadgerOptions{Clock: clock.Now, RecordCacheSize: MinRecordCacheSize})
	cs := realCerts(t, clock, 1500) // about 1.3 MB of records
	for i := 0; i < len(cs); i += 500 {
		if err := b.PutCertificates(ctx, cs[i:i+500]); err != nil {
			t.Fatal(err)
		}
	}
	checkServes(t, b, cs)
	st := b.RecordCacheStats()
	if st.Misses != uint64(len(cs)) || st.Size != MinRecordCacheSize {
		t.Fatalf("after %d lookups: %+v", len(cs), st)
	}
	if mem := st.Used + st.Entries*cacheIndexCost; mem > st.Size || st.Used > st.Size-st.Size/cacheIndexShare {
		t.Errorf("the cache holds %d records in %d bytes (%d with their index), over its size %d", st.Entries, st.Used, mem, st.Size)
	}
	if st.Entries < 500 || st.Entries >= int64(len(cs)) {
		t.Errorf("the cache holds %d of %d records of about 900 bytes in %d bytes", st.Entries, len(cs), st.Size)
	}

	for _, size := range []int64{1, MinRecordCacheSize - 1, MaxRecordCacheSize + 1, 1 << 40} {
		b, err := OpenBadger(t.TempDir(), BadgerOptions{Logger: testLogger(t), RecordCacheSize: size})
		if err == nil {
			b.Close()
			t.Errorf("OpenBadger with RecordCacheSize %d succeeded", size)
		} else if !strings.Contains(err.Error(), fmt.Sprint(size)) {
			t.Errorf("OpenBadger with RecordCacheSize %d: %v; want an error naming the size", size, err)
		}
	}
	off := openTestBadgerWith(t, "", BadgerOptions{Clock: clock.Now, RecordCacheSize: -1})
	if err := off.PutCertificate(ctx, cs[0]); err != nil {
		t.Fatal(err)
	}
	checkServes(t, off, cs[:1])
	checkServes(t, off, cs[:1])
	if st := off.RecordCacheStats(); st != (RecordCacheStats{}) {
		t.Errorf("a cache turned off: %+v", st)
	}
}

// A shard's ring keeps the entries looked up while others stream through
// it (CLOCK's second chance), never holds more than it may, and serves
// each entry's own bytes.
func TestRecordCacheKeepsHotEntries(t *testing.T) {
	c, err := newRecordCache(MinRecordCacheSize)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	val := func(i int) []byte { return bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 300+i%200) }
	put := func(k string, version uint64, i int) {
		h := maphash.String(c.seed, k)
		c.shard(h).put(h, []byte(k), version, val(i))
	}
	get := func(k string, version uint64) ([]byte, bool) {
		h := maphash.String(c.seed, k)
		return c.shard(h).get(h, []byte(k), version, nil)
	}
	const hot = 200 // about 130 KB of the ring's 960 KB
	for i := range hot {
		put(fmt.Sprintf("hot%d", i), 1, i)
	}
	for i := range 20_000 { // 16 MB: 16 turns of the ring
		put(fmt.Sprintf("cold%d", i), 1, i)
		if i%100 == 0 {
			for j := range hot {
				v, ok := get(fmt.Sprintf("hot%d", j), 1)
				if !ok {
					t.Fatalf("hot entry %d evicted after %d cold ones", j, i)
				}
				if !bytes.Equal(v, val(j)) {
					t.Fatalf("hot entry %d: %d bytes, not its own", j, len(v))
				}
			}
		}
		if st := c.stats(); st.Used > int64(len(c.shards[0].ring)) || st.Entries*cacheIndexCost > st.Size/cacheIndexShare {
			t.Fatalf("after %d cold entries: %+v, ring %d", i, st, len(c.shards[0].ring))
		}
	}
	if _, ok := get("cold0", 1); ok {
		t.Error("the first cold entry is still cached")
	}
	if v, ok := get("cold19999", 1); !ok || !bytes.Equal(v, val(19999)) {
		t.Error("the last cold entry is not cached")
	}
	// Another version of a key is a miss, and replaces the entry.
	if _, ok := get("hot0", 2); ok {
		t.Error("hot0 served at version 2")
	}
	put("hot0", 2, 7)
	if v, ok := get("hot0", 2); !ok || !bytes.Equal(v, val(7)) {
		t.Error("hot0 at version 2 not served after its put")
	}
	put("hot0", 1, 0) // an older transaction's read keeps the newer entry
	if _, ok := get("hot0", 1); ok {
		t.Error("an older version replaced a newer one")
	}
}

// TestRecordCacheRingModel drives one shard with random puts, gets and
// drops of values of random sizes and checks it against a map of what
// was put last: a get returns that value or misses, never another's
// bytes, and after every step the index points only at entries of its
// own keys, inside the ring's live part [tail, head), none overlapping
// another, and the counts agree.
func TestRecordCacheRingModel(t *testing.T) {
	for _, tt := range []struct {
		desc           string
		keys, steps    int
		maxVal         int
		quarters       bool // one put in 50 of a quarter of the ring
		minHits, atCap int  // at least
	}{{
		desc: "values up to a quarter of the ring: the head wraps at every turn, referenced entries move across the wrap",
		keys: 400, steps: 100_000, maxVal: 2000, quarters: true, minHits: 10_000,
	}, {
		desc: "3,000 keys of 1 to 1,000 bytes: the entry cap evicts while the ring has room, and referenced entries move to a head not right behind the tail",
		keys: 3000, steps: 40_000, maxVal: 1000, minHits: 3_000, atCap: 5_000,
	}} {
		t.Run(fmt.Sprintf("%d keys", tt.keys), func(t *testing.T) {
			t.Log(tt.desc)
			c, err := newRecordCache(MinRecordCacheSize)
			if err != nil {
				t.Fatal(err)
			}
			defer c.close()
			rng := rand.New(rand.NewPCG(1, 2))
			type want struct {
				version uint64
				val     []byte
			}
			model := map[string]want{}
			hits, atCap := 0, 0
			for step := range tt.steps {
				k := fmt.Sprintf("k%d", rng.IntN(tt.keys))
				h := maphash.String(c.seed, k)
				s := c.shard(h)
				switch op := rng.IntN(10); {
				case op < 4:
					if s.entries >= s.maxEntries {
						atCap++
					}
					n := 1 + rng.IntN(tt.maxVal)
					if tt.quarters && rng.IntN(50) == 0 {
						n = len(s.ring)/4 - cacheHeader - len(k) - rng.IntN(64)
					}
					v := make([]byte, n)
					for i := range v {
						v[i] = byte(rng.Uint32())
					}
					version := model[k].version + 1
					s.put(h, []byte(k), version, v)
					model[k] = want{version, v}
				case op < 9:
					w, ok := model[k]
					if !ok {
						continue
					}
					got, hit := s.get(h, []byte(k), w.version, nil)
					if hit {
						hits++
						if !bytes.Equal(got, w.val) {
							t.Fatalf("step %d: %s at version %d: %d bytes that are not the %d put", step, k, w.version, len(got), len(w.val))
						}
					}
				default:
					c.drop([]byte(k))
				}
				if step%16 != 0 {
					continue
				}
				for i := range c.shards {
					checkRing(t, step, i, &c.shards[i])
				}
			}
			t.Logf("%d hits, %d puts at the entry cap", hits, atCap)
			if hits < tt.minHits || atCap < tt.atCap {
				t.Errorf("%d hits, %d puts at the entry cap; want at least %d and %d: the model test exercised little", hits, atCap, tt.minHits, tt.atCap)
			}
		})
	}
}

// checkRing checks that sh's index points only at entries of its own
// hashes, each inside the live part of the ring ([tail, head), which
// may wrap at end), none overlapping another, and that the counts agree.
func checkRing(t *testing.T, step, i int, sh *cacheShard) {
	t.Helper()
	if len(sh.index) != sh.entries || sh.entries > sh.maxEntries || sh.used() > uint32(len(sh.ring)) {
		t.Fatalf("step %d, shard %d: %d in the index, %d counted (at most %d), %d bytes used of %d",
			step, i, len(sh.index), sh.entries, sh.maxEntries, sh.used(), len(sh.ring))
	}
	spans := make([][2]uint32, 0, len(sh.index))
	for hh, off := range sh.index {
		_, eh, klen, vlen, _ := sh.entry(off)
		end := off + cacheHeader + klen + vlen
		if eh != hh || end > uint32(len(sh.ring)) {
			t.Fatalf("step %d, shard %d: the index points at an entry of another hash or past the ring", step, i)
		}
		live := sh.tail <= off && end <= sh.head
		if sh.wrapped {
			live = sh.tail <= off && end <= sh.end || end <= sh.head
		}
		if !live {
			t.Fatalf("step %d, shard %d: entry [%d, %d) outside the live part (tail %d, head %d, end %d, wrapped %v)",
				step, i, off, end, sh.tail, sh.head, sh.end, sh.wrapped)
		}
		spans = append(spans, [2]uint32{off, end})
	}
	slices.SortFunc(spans, func(a, b [2]uint32) int { return cmp.Compare(a[0], b[0]) })
	for j := 1; j < len(spans); j++ {
		if spans[j][0] < spans[j-1][1] {
			t.Fatalf("step %d, shard %d: entries [%d, %d) and [%d, %d) overlap", step, i, spans[j-1][0], spans[j-1][1], spans[j][0], spans[j][1])
		}
	}
}
