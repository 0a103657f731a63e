package certserver

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/certtest"
	"github.com/certserver/certserver/store/sealed"
	"github.com/valyala/fasthttp"
)

// BenchmarkChangesMarks measures what marks=1 adds to an answer of the
// change feed (GET /v1/changes) during a wave: a store of real ECDSA
// P-256 certificates (leaf and CA), 5,000 of them unchanged, and a wave
// of n names, half renewed and half deleted since the cursor asked with.
// "marks" is the lookups alone (goneNames; one answer lists at most
// store.MaxChanges names), without the endpoint's time bound;
// "answer-first" the whole handler with marks=1 for the first worker to
// poll at a point of the feed (it looks the names up),
// "answer-others" for the workers after it (they read its memo), and,
// for comparison, "answer-plain" without marks. The log gives the
// first pass over the wave, when the renewed records are not in the
// record cache yet (as in a real wave: the marks read them first).
// keys=sealed is the same with the private keys sealed, as a sidecar
// with [store] key_encryption_key_file keeps them: the marks open no key
// (they look up under the sealing), so it should cost what keys=plain
// does.
//
//	go test -run '^$' -bench BenchmarkChangesMarks -benchtime 20x ./certserver/
func BenchmarkChangesMarks(b *testing.B) {
	ca := certtest.New(b, certtest.Template{CommonName: "bench CA", IsCA: true}, nil)
	for _, n := range []int{1000, store.MaxChanges} {
		for _, keys := range []string{"plain", "sealed"} {
			b.Run(fmt.Sprintf("names=%d/keys=%s", n, keys), func(b *testing.B) {
				benchChangesMarks(b, ca, n, keys == "sealed")
			})
		}
	}
}

// benchChangesMarks is BenchmarkChangesMarks for a wave of n names, with
// the private keys sealed (store/sealed, as with [store]
// key_encryption_key_file) or not.
func benchChangesMarks(b *testing.B, ca *certtest.Cert, n int, seal bool) {
	var st store.Store = newTestStore(b)
	if seal {
		st = sealed.Wrap(st, testKeyring(b, kek{"k1", 1}))
	}
	e, err := NewCertEndpoint(CertEndpointConfig{Listen: "127.0.0.1:0", LookupTimeout: time.Hour}, st, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	put := func(names []string) {
		var cs []*store.Certificate
		for _, name := range names {
			c := certtest.New(b, certtest.Template{DNSNames: []string{name}}, ca)
			rec, err := store.ParseCertificate(c.ChainPEM, c.KeyPEM, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			cs = append(cs, rec)
			if len(cs) == 500 {
				if err := st.PutCertificates(ctx, cs); err != nil {
					b.Fatal(err)
				}
				cs = cs[:0]
			}
		}
		if err := st.PutCertificates(ctx, cs); err != nil {
			b.Fatal(err)
		}
	}
	var others, wave []string
	for i := range 5000 {
		others = append(others, benchName(i))
	}
	for i := range n {
		wave = append(wave, benchName(5000+i))
	}
	put(others)
	put(wave)
	feed, _ := store.As[store.ChangeFeed](st)
	since, err := feed.CertChanges(ctx, store.Cursor{})
	if err != nil {
		b.Fatal(err)
	}
	put(wave[:n/2])
	for _, name := range wave[n/2:] {
		if err := st.DeleteCertificate(ctx, name); err != nil {
			b.Fatal(err)
		}
	}

	at := store.Cursor{Epoch: since.Next.Epoch, Version: since.Next.Version + uint64(n/2+1)}
	first := time.Now()
	e.goneNames(ctx, time.Now(), at, wave)
	b.Logf("%d names: the first marks, renewed records not yet in the record cache, took %v", n, time.Since(first).Round(time.Microsecond))
	b.Run("marks", func(b *testing.B) {
		for b.Loop() {
			e.marks.at = store.Cursor{} // a new point: no memo
			if gone := e.goneNames(ctx, time.Now(), at, wave); len(gone) != n-n/2 {
				b.Fatalf("%d names gone, want %d", len(gone), n-n/2)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
	})
	for _, q := range []struct {
		name, query string
		memo        bool
	}{
		{"answer-first", "&marks=1", false},
		{"answer-others", "&marks=1", true},
		{"answer-plain", "", true},
	} {
		b.Run(q.name, func(b *testing.B) {
			uri := fmt.Sprintf("%s?since=%s.%d%s", ChangesPath, since.Next.Epoch, since.Next.Version, q.query)
			var rc fasthttp.RequestCtx
			for b.Loop() {
				if !q.memo {
					e.marks.at = store.Cursor{}
				}
				rc.Request.SetRequestURI(uri)
				e.handle(&rc)
				if rc.Response.StatusCode() != fasthttp.StatusOK {
					b.Fatalf("status %d: %s", rc.Response.StatusCode(), rc.Response.Body())
				}
				rc.Response.Reset()
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/op")
		})
	}
}
