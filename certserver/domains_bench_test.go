package certserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
)

// defaultBulkNames is the size of the bulk add the admin API must hold.
// CERTSERVER_BENCH_BULK sets another for a quick run (scripts/bench.sh
// --short).
const defaultBulkNames = 500_000

// BenchmarkBulkAdd500k measures POST /v1/domains with 500,000 names in one
// request (text, one name a line, 13 MB) over loopback TCP to a real
// listener, into a real Badger store with its default durability: every
// commit is synced to disk. "new" adds the names to an empty store (a
// fresh one each iteration); "existing" sends the same names again, which
// reads every record and writes none. Each reports names/s.
//
//	go test -run '^$' -bench BenchmarkBulkAdd500k -benchtime 1x ./certserver/
func BenchmarkBulkAdd500k(b *testing.B) {
	benchBulkAdd(b, func(b *testing.B) store.Store {
		st, err := store.OpenBadger(filepath.Join(b.TempDir(), "store"), store.BadgerOptions{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		return st
	})
}

// benchBulkAdd runs BenchmarkBulkAdd500k's cases on the stores open
// returns, each new and empty.
func benchBulkAdd(b *testing.B, open func(b *testing.B) store.Store) {
	bulkNames := defaultBulkNames
	if v := os.Getenv("CERTSERVER_BENCH_BULK"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("CERTSERVER_BENCH_BULK=%q: want a positive number", v)
		}
		bulkNames = n
	}
	var body bytes.Buffer
	for i := range bulkNames {
		fmt.Fprintf(&body, "customer-%06d.shop.example.com\n", i)
	}
	hc := &http.Client{Timeout: 5 * time.Minute}
	post := func(b *testing.B, base string, want api.AddDomainsResponse) {
		req, err := http.NewRequest(http.MethodPost, base+"/v1/domains", bytes.NewReader(body.Bytes()))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", "text/plain")
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		var got api.AddDomainsResponse
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d: %v", resp.StatusCode, err)
		}
		if got.Added != want.Added || got.Existing != want.Existing || got.InvalidCount != 0 {
			b.Fatalf("added %d existing %d invalid %d, want %d %d 0", got.Added, got.Existing, got.InvalidCount, want.Added, want.Existing)
		}
	}

	b.Run("new", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			base, stop := bulkAdmin(b, open(b))
			b.StartTimer()
			post(b, base, api.AddDomainsResponse{Added: bulkNames})
			b.StopTimer()
			stop()
			b.StartTimer()
		}
		b.ReportMetric(float64(bulkNames)*float64(b.N)/b.Elapsed().Seconds(), "names/s")
	})
	b.Run("existing", func(b *testing.B) {
		base, stop := bulkAdmin(b, open(b))
		defer stop()
		post(b, base, api.AddDomainsResponse{Added: bulkNames})
		b.ResetTimer()
		for b.Loop() {
			post(b, base, api.AddDomainsResponse{Existing: bulkNames})
		}
		b.ReportMetric(float64(bulkNames)*float64(b.N)/b.Elapsed().Seconds(), "names/s")
	})
}

// bulkAdmin starts an admin API on st and returns its URL and a function
// that stops both.
func bulkAdmin(b *testing.B, st store.Store) (string, func()) {
	b.Helper()
	logger := slog.New(slog.DiscardHandler)
	a, err := NewAdminAPI(AdminConfig{Listen: "127.0.0.1:0", Token: testToken, RequestTimeout: 5 * time.Minute}, st, logger)
	if err != nil {
		b.Fatal(err)
	}
	if err := a.Listen(context.Background()); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	return "http://" + a.Addrs()[0].String(), func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
		if err := st.Close(); err != nil {
			b.Error(err)
		}
	}
}
