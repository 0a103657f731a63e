package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
)

// scanRecords is how many records TestScanCertificates stores: with
// scanOrigin their rows come to about 9 MB, more than a connection's
// buffers hold, so that the server is still sending when fn acts on the
// first record (on loopback here, about 4 MB was through when the
// connection broke). A host whose buffers held it all would fail "not
// run again once it has handed out records": the scan would have no
// backend left to terminate.
const (
	scanRecords = 4000
	scanOrigin  = 2000
)

// scanBackends is the FROM and WHERE of a query of the backends of this
// test's database that run the scan's statement ($1) now: an idle
// backend shows its last statement too, and the cluster is the test
// binary's.
const scanBackends = `FROM pg_stat_activity
	WHERE query = $1 AND state = 'active' AND datname = current_database() AND pid <> pg_backend_pid()`

// scanFill stores scanRecords certificates in s and returns their IDs,
// sorted.
func scanFill(t *testing.T, s *postgres.Store) []string {
	t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	origin := strings.Repeat("o", scanOrigin)
	ids := make([]string, scanRecords)
	var batch []*store.Certificate
	for i := range ids {
		ids[i] = fmt.Sprintf("s%05d.example.com", i)
		c := cert(now, ids[i])
		c.Origin = origin
		batch = append(batch, c)
		if len(batch) == 1000 || i == len(ids)-1 {
			if err := s.PutCertificates(ctx(t), batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	return ids
}

// scanned is what one ScanCertificates handed out.
type scanned struct {
	ids  []string
	seen map[string]int
}

func (sc *scanned) add(c *store.Certificate) {
	if sc.seen == nil {
		sc.seen = make(map[string]int)
	}
	sc.ids = append(sc.ids, c.ID)
	sc.seen[c.ID]++
}

// twice returns the IDs handed out more than once.
func (sc *scanned) twice() []string {
	var out []string
	for id, n := range sc.seen {
		if n > 1 {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// TestScanCertificates checks what the contract case
// (storetest.testCertificateScanner) cannot see: the PostgreSQL store
// has the ability, so that a fleet's inventory does not page through
// every chain and key; the scan reads one snapshot while the store
// changes under it; fn is not called once its context ends; once it has
// handed out records it is not run again when the connection breaks
// (which would hand them out twice); and a record that does not decode
// is named.
func TestScanCertificates(t *testing.T) {
	url := pgtest.New(t)
	s := openURL(t, url, nil)
	sc, ok := store.As[store.CertificateScanner](store.Store(s))
	if !ok {
		t.Fatal("*postgres.Store is no store.CertificateScanner: the fleet's inventory pages through ListCertificates, chains and keys included")
	}
	ids := scanFill(t, s)
	conn, err := pgx.Connect(ctx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })

	t.Run("one snapshot", func(t *testing.T) {
		var got scanned
		err := sc.ScanCertificates(ctx(t), func(c *store.Certificate) error {
			if got.ids == nil {
				if err := s.PutCertificate(ctx(t), cert(time.Now(), "zzz-new.example.com")); err != nil {
					return err
				}
				for _, id := range []string{ids[0], ids[len(ids)/2], ids[len(ids)-1]} {
					if err := s.DeleteCertificate(ctx(t), id); err != nil {
						return err
					}
				}
			}
			if c.ChainPEM != nil || c.KeyPEM != nil || len(c.Origin) != scanOrigin {
				return fmt.Errorf("%s handed out with %d bytes of chain, %d of key, %d of origin", c.ID, len(c.ChainPEM), len(c.KeyPEM), len(c.Origin))
			}
			got.add(c)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got.ids)
		if !slices.Equal(got.ids, ids) {
			t.Errorf("scan handed out %d records (twice: %q), want the %d stored when it began, each once", len(got.ids), got.twice(), len(ids))
		}
	})

	t.Run("stops when its context ends", func(t *testing.T) {
		// fn cancels at the stop-th record, mid-stream, and must not be
		// called again. pgx holds rows already read (its buffer of 8 KiB
		// or more, some of them here) and ends the statement only once
		// its watcher, run on a goroutine of its own, has seen ctx end:
		// without a look at ctx before each record, it would go on
		// handing out the rows it holds, and as many more as it reads
		// before that goroutine runs, which no bound could say.
		const stop = 100
		c, cancel := context.WithCancel(ctx(t))
		defer cancel()
		n := 0
		err := sc.ScanCertificates(c, func(*store.Certificate) error {
			if n++; n == stop {
				cancel()
			}
			return nil
		})
		if !errors.Is(err, context.Canceled) || n != stop {
			t.Errorf("scan with its context cancelled at record %d: %v after %d records; want context.Canceled after %d", stop, err, n, stop)
		}
	})

	t.Run("not run again once it has handed out records", func(t *testing.T) {
		// The scan stopped by the subtest before dropped its
		// connection, and its backend may still be ending the
		// statement: wait until no backend runs it, so that the one to
		// terminate below is this scan's.
		for deadline := time.Now().Add(wait); ; time.Sleep(10 * time.Millisecond) {
			var busy int
			if err := conn.QueryRow(ctx(t), "SELECT count(*) "+scanBackends, postgres.ScanStatement).Scan(&busy); err != nil {
				t.Fatal(err)
			}
			if busy == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d backends still run the scan's statement after %v", busy, wait)
			}
		}
		var got scanned
		err := sc.ScanCertificates(ctx(t), func(c *store.Certificate) error {
			if got.ids == nil {
				// The scan's connection breaks under it, as when the
				// server restarts (pg_terminate_backend waits until the
				// backend is gone).
				var killed int
				err := conn.QueryRow(ctx(t), "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 60000)) "+scanBackends,
					postgres.ScanStatement).Scan(&killed)
				if err != nil || killed != 1 {
					return fmt.Errorf("terminate the scan's backend: %d terminated, %v; want 1", killed, err)
				}
			}
			got.add(c)
			return nil
		})
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("scan whose connection broke after %d records: %v; want store.ErrUnavailable", len(got.ids), err)
		}
		if tw := got.twice(); len(tw) > 0 || len(got.ids) >= len(ids)-3 {
			t.Errorf("scan whose connection broke handed out %d records, %d of them twice (%q…); want fewer than all, each at most once", len(got.ids), len(tw), tw[:min(3, len(tw))])
		}
	})

	t.Run("a record that does not decode is named", func(t *testing.T) {
		bad := ids[1]
		if _, err := conn.Exec(ctx(t), `UPDATE certificates SET info = '"not a record"' WHERE id = $1`, bad); err != nil {
			t.Fatal(err)
		}
		var got scanned
		err := sc.ScanCertificates(ctx(t), func(c *store.Certificate) error { got.add(c); return nil })
		if err == nil || !strings.Contains(err.Error(), bad) || got.seen[bad] > 0 || len(got.twice()) > 0 {
			t.Errorf("scan of a store holding an undecodable %s: %v, having handed it out %d times and %d records twice; want an error naming it", bad, err, got.seen[bad], len(got.twice()))
		}
	})
}
