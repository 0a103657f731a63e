package certserver

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/certtest"
)

// A record whose intermediate the store lost, or holds with other bytes,
// is answered 500 with no PEM: never with another chain.
func TestCertEndpointCorruptIntermediate(t *testing.T) {
	for _, tc := range []struct {
		desc    string
		corrupt func(txn *badger.Txn, k []byte) error
	}{
		{"intermediate missing", func(txn *badger.Txn, k []byte) error { return txn.Delete(k) }},
		{"intermediate of other bytes", func(txn *badger.Txn, k []byte) error {
			other := certtest.New(t, certtest.Template{CommonName: "Other CA", IsCA: true}, nil)
			return txn.Set(k, other.Cert.Raw)
		}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			open := func() *store.Badger {
				st, err := store.OpenBadger(dir, store.BadgerOptions{Logger: testLogger(t), NoSync: true, GCInterval: -1})
				if err != nil {
					t.Fatal(err)
				}
				return st
			}
			root := certtest.New(t, certtest.Template{CommonName: "Test Root", IsCA: true}, nil)
			inter := certtest.New(t, certtest.Template{CommonName: "Test E1", IsCA: true}, root)
			leaf := certtest.New(t, certtest.Template{DNSNames: []string{"a.example.com"}}, inter)
			st := open()
			putCert(t, st, &store.Certificate{ID: "a.example.com", Names: []string{"a.example.com"},
				ChainPEM: append(leaf.CertPEM, inter.CertPEM...), KeyPEM: leaf.KeyPEM, NotAfter: time.Now().Add(time.Hour)})
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}

			// Every intermediate the store holds (under i/, keys.go) goes bad.
			db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			err = db.Update(func(txn *badger.Txn) error {
				it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("i/")})
				var keys [][]byte
				for it.Rewind(); it.Valid(); it.Next() {
					keys = append(keys, it.Item().KeyCopy(nil))
				}
				it.Close()
				for _, k := range keys {
					n++
					if err := tc.corrupt(txn, k); err != nil {
						return err
					}
				}
				return nil
			})
			if cerr := db.Close(); err == nil {
				err = cerr
			}
			if err != nil || n != 1 {
				t.Fatalf("corrupting the intermediates: %d found, %v; want 1", n, err)
			}

			st = open()
			t.Cleanup(func() { st.Close() })
			var logs syncBuffer
			e, err := NewCertEndpoint(CertEndpointConfig{Listen: "127.0.0.1:0"}, st, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Listen(context.Background()); err != nil {
				t.Fatal(err)
			}
			serving(t, e.Serve)
			resp, body := rawRequest(t, e.Addrs()[0].String(), "GET", "/v1/certs/a.example.com")
			if resp.StatusCode != 500 || strings.Contains(body, "BEGIN") {
				t.Fatalf("status %d body %q, want 500 and no PEM", resp.StatusCode, body)
			}
			if !strings.Contains(logs.String(), "intermediate") {
				t.Errorf("the log does not name the intermediate:\n%s", logs.String())
			}
		})
	}
}
