package sealed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/certtest"
)

func openBadger(t *testing.T, dir string) *store.Badger {
	t.Helper()
	b, err := store.OpenBadger(dir, store.BadgerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testCert returns a certificate record for name with a freshly minted key.
func testCert(t testing.TB, name string) *store.Certificate {
	t.Helper()
	m := certtest.New(t, certtest.Template{DNSNames: []string{name}}, nil)
	c, err := store.ParseCertificate(m.ChainPEM, m.KeyPEM, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestStoreSealsAtRest(t *testing.T) {
	ctx := context.Background()
	b := openBadger(t, t.TempDir())
	s := Wrap(b, testKeyring(t, "k1"))
	t.Cleanup(func() { s.Close() })

	c := testCert(t, "a.example.com")
	key := bytes.Clone(c.KeyPEM)
	if err := s.PutCertificate(ctx, c); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.KeyPEM, key) {
		t.Error("PutCertificate changed the caller's record")
	}
	raw, err := b.GetCertificate(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := KeyID(raw.KeyPEM); !ok || id != "k1" || bytes.Contains(raw.KeyPEM, key[30:70]) {
		t.Fatalf("stored key is not sealed under k1:\n%s", raw.KeyPEM)
	}
	for _, read := range []func() (*store.Certificate, error){
		func() (*store.Certificate, error) { return s.GetCertificate(ctx, c.ID) },
		func() (*store.Certificate, error) { return s.LookupCertificate(ctx, "a.example.com") },
		func() (*store.Certificate, error) {
			cs, err := s.ListCertificates(ctx, "", 10)
			if err != nil || len(cs) != 1 {
				return nil, fmt.Errorf("list: %d, %v", len(cs), err)
			}
			return cs[0], nil
		},
	} {
		got, err := read()
		if err != nil || !bytes.Equal(got.KeyPEM, key) {
			t.Errorf("read = %v; want the plain key back", err)
		}
	}
	if err := s.PutCertificates(ctx, []*store.Certificate{testCert(t, "b.example.com")}); err != nil {
		t.Fatal(err)
	}
	if raw, _ := b.GetCertificate(ctx, "b.example.com"); !IsSealed(raw.KeyPEM) {
		t.Error("PutCertificates stored a plain key")
	}

	a := &store.Account{ID: "acct", Directory: "https://ca/dir", KeyPEM: plainKey}
	if err := s.PutAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	if rawA, _ := b.GetAccount(ctx, "acct"); !IsSealed(rawA.KeyPEM) {
		t.Error("PutAccount stored a plain key")
	}
	if got, err := s.GetAccount(ctx, "acct"); err != nil || !bytes.Equal(got.KeyPEM, plainKey) {
		t.Errorf("GetAccount = %v; want the plain key back", err)
	}
}

func TestStoreReadsPlainKeys(t *testing.T) {
	ctx := context.Background()
	b := openBadger(t, t.TempDir())
	c := testCert(t, "a.example.com")
	if err := b.PutCertificate(ctx, c); err != nil {
		t.Fatal(err)
	}
	s := Wrap(b, testKeyring(t, "k1"))
	t.Cleanup(func() { s.Close() })
	got, err := s.LookupCertificate(ctx, "a.example.com")
	if err != nil || !bytes.Equal(got.KeyPEM, c.KeyPEM) {
		t.Fatalf("lookup of a key stored before sealing = %v; want it as stored", err)
	}
}

func TestStoreNeverServesWhatItCannotOpen(t *testing.T) {
	ctx := context.Background()
	b := openBadger(t, t.TempDir())
	t.Cleanup(func() { b.Close() })
	if err := Wrap(b, testKeyring(t, "k1")).PutCertificate(ctx, testCert(t, "a.example.com")); err != nil {
		t.Fatal(err)
	}
	if err := Wrap(b, testKeyring(t, "k1")).PutAccount(ctx, &store.Account{ID: "acct", KeyPEM: plainKey}); err != nil {
		t.Fatal(err)
	}
	// A sealed key copied into another record.
	raw, _ := b.GetCertificate(ctx, "a.example.com")
	moved := testCert(t, "b.example.com")
	moved.KeyPEM = raw.KeyPEM
	if err := b.PutCertificate(ctx, moved); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		desc, name, want string
		kr               *Keyring
	}{
		{"unknown key", "a.example.com", `certificate a.example.com: private key is sealed under key "k1", which`, testKeyring(t, "k2")},
		{"no keyring", "a.example.com", `certificate a.example.com: private key is sealed under key "k1" and no key-encryption key file`, nil},
		{"moved", "b.example.com", `certificate b.example.com: sealed key does not authenticate under key "k1"`, testKeyring(t, "k1")},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			s := Wrap(b, tt.kr)
			for what, read := range map[string]func() (*store.Certificate, error){
				"get":    func() (*store.Certificate, error) { return s.GetCertificate(ctx, tt.name) },
				"lookup": func() (*store.Certificate, error) { return s.LookupCertificate(ctx, tt.name) },
			} {
				c, err := read()
				if c != nil || !errors.Is(err, ErrOpen) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("%s = %v, %v; want no record and ErrOpen saying %q", what, c, err, tt.want)
				}
			}
			cs, err := s.ListCertificates(ctx, "", 10)
			if err != nil {
				t.Fatalf("list: %v", err)
			}
			for _, c := range cs {
				if c.ID == tt.name && c.KeyPEM != nil {
					t.Errorf("list returned %s with a key it cannot open: %q", c.ID, c.KeyPEM)
				}
			}
		})
	}
	if a, err := Wrap(b, testKeyring(t, "k2")).GetAccount(ctx, "acct"); a != nil || !errors.Is(err, ErrOpen) || !strings.Contains(err.Error(), "account acct") {
		t.Errorf("GetAccount = %v, %v; want ErrOpen naming account acct", a, err)
	}
	// A sealed key given to the wrong record is refused on write too.
	if err := Wrap(b, testKeyring(t, "k1")).PutCertificate(ctx, moved); !errors.Is(err, ErrOpen) {
		t.Errorf("PutCertificate of another record's sealed key = %v, want ErrOpen", err)
	}
}

func TestStoreKeepsAbilities(t *testing.T) {
	ctx := context.Background()
	b := openBadger(t, t.TempDir())
	s := Wrap(b, testKeyring(t, "k1"))
	t.Cleanup(func() { s.Close() })
	var st store.Store = s
	feed, ok := store.As[store.ChangeFeed](st)
	if !ok {
		t.Fatal("the change feed of the wrapped store is not found")
	}
	ch, err := feed.CertChanges(ctx, store.Cursor{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutCertificate(ctx, testCert(t, "a.example.com")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutCertificate(ctx, testCert(t, "a.example.com")); err != nil {
		t.Fatal(err)
	}
	next, err := feed.CertChanges(ctx, ch.Next)
	if err != nil || next.Reset || len(next.Names) != 1 || next.Names[0] != "a.example.com" {
		t.Errorf("changes = %+v, %v; want a.example.com", next, err)
	}
	if _, ok := store.As[store.KeyRewriter](st); !ok {
		t.Error("KeyRewriter not found below the decorator")
	}
	if _, ok := store.As[store.ReplicationSource](st); ok {
		t.Error("found a ReplicationSource Badger does not have")
	}
}

// TestStoreConcurrentReads: many readers and a writer at once (run with
// -race) each get their record's own key.
func TestStoreConcurrentReads(t *testing.T) {
	ctx := context.Background()
	s := Wrap(openBadger(t, t.TempDir()), testKeyring(t, "k1"))
	t.Cleanup(func() { s.Close() })
	keys := map[string][]byte{}
	for i := range 8 {
		c := testCert(t, fmt.Sprintf("n%d.example.com", i))
		keys[c.ID] = c.KeyPEM
		if err := s.PutCertificate(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				id := fmt.Sprintf("n%d.example.com", (g+i)%8)
				c, err := s.LookupCertificate(ctx, id)
				if err != nil || !bytes.Equal(c.KeyPEM, keys[id]) {
					errs <- fmt.Errorf("lookup %s: %v", id, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			if err := s.PutAccount(ctx, &store.Account{ID: "acct", KeyPEM: plainKey}); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// replicatedBadger is a Badger with the fleet's abilities, stubbed.
type replicatedBadger struct {
	*store.Badger
	applied []store.Change
}

func (r *replicatedBadger) ChangesAfter(context.Context, uint64, int) ([]store.Change, error) {
	return nil, nil
}
func (r *replicatedBadger) LatestVersion(context.Context) (uint64, error)           { return 0, nil }
func (r *replicatedBadger) Listen(context.Context, func(uint64)) error              { return nil }
func (r *replicatedBadger) ReportHost(context.Context, store.Host) error            { return nil }
func (r *replicatedBadger) Hosts(context.Context) ([]store.Host, error)             { return nil, nil }
func (r *replicatedBadger) AppliedVersion(context.Context) (uint64, error)          { return 0, nil }
func (r *replicatedBadger) Apply(ctx context.Context, changes []store.Change) error { return nil }

// TestStoreKeepsFleetAbilities: a ReplicationSource and a Replica below
// the decorator are found with store.As, and are the inner store itself
// (keys pass them as stored, sealed).
func TestStoreKeepsFleetAbilities(t *testing.T) {
	inner := &replicatedBadger{Badger: openBadger(t, t.TempDir())}
	var st store.Store = Wrap(Wrap(inner, testKeyring(t, "k1")), nil) // a chain of two
	t.Cleanup(func() { st.Close() })
	src, ok := store.As[store.ReplicationSource](st)
	if !ok || src != store.ReplicationSource(inner) {
		t.Errorf("ReplicationSource below two decorators: %v, %v", src, ok)
	}
	rep, ok := store.As[store.Replica](st)
	if !ok || rep != store.Replica(inner) {
		t.Errorf("Replica below two decorators: %v, %v", rep, ok)
	}
}
