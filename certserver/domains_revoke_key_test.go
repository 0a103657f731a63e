package certserver

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/client"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/certtest"
)

// TestAdminRevokeSharedKey: revoking for keyCompromise a certificate
// whose key others share ([keys] reuse = "pool") takes the key out of the
// key pool and makes every other certificate on it, and its managed
// names, due for renewal now; a certificate with a key of its own is left
// alone, and the answer says what happened, and that the others are not
// revoked. Another reason touches no other certificate.
func TestAdminRevokeSharedKey(t *testing.T) {
	env := newRevokeEnv(t)
	ctx := context.Background()
	env.post(t, "text/plain", "p1.example.com\np2.example.com\np3.example.com\n")
	shared := certtest.New(t, certtest.Template{DNSNames: []string{"key.example.com"}}, nil)
	notAfter := env.now.Add(60 * 24 * time.Hour)
	for _, n := range []string{"p1.example.com", "p2.example.com", "p3.example.com"} {
		tmpl := certtest.Template{DNSNames: []string{n}, NotBefore: notAfter.Add(-90 * 24 * time.Hour), NotAfter: notAfter}
		if n != "p3.example.com" {
			tmpl.Key = shared.Key
		}
		c := certtest.New(t, tmpl, nil)
		putCert(t, env.st, &store.Certificate{ID: n, Names: []string{n}, ChainPEM: c.CertPEM, KeyPEM: c.KeyPEM,
			NotAfter: notAfter, Serial: c.Cert.SerialNumber.Text(16), Source: store.SourceACME, RenewAt: notAfter.Add(-30 * 24 * time.Hour)})
		if err := env.st.UpdateDomain(ctx, n, func(d *store.Domain) error {
			d.State, d.CertID, d.NextAttempt = store.StateValid, n, notAfter.Add(-30*24*time.Hour)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	id, err := store.PublicKeyID(shared.Key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pool, _ := store.As[store.KeyPool](env.st)
	if _, err := pool.SwapPoolKey(ctx, "", &store.PoolKey{KeyType: store.KeyECDSAP256, Slot: 5, ID: id, KeyPEM: shared.KeyPEM, CreatedAt: env.now}); err != nil {
		t.Fatal(err)
	}

	// Another reason: the other certificates stay as they are.
	rev, err := env.cl.RevokeDomain(ctx, "p1.example.com", "superseded")
	if err != nil {
		t.Fatal(err)
	}
	if rev.KeyShared != nil || !dueAt(t, env, "p2.example.com", notAfter.Add(-30*24*time.Hour)) {
		t.Errorf("superseded: key_shared %+v, p2 moved; want neither", rev.KeyShared)
	}

	rev, err = env.cl.RevokeDomain(ctx, "p1.example.com", "keyCompromise")
	if err != nil {
		t.Fatal(err)
	}
	if ks := rev.KeyShared; ks == nil || ks.KeyID != id || ks.PoolSlots != 1 || ks.Certificates != 1 || ks.Reordered != 1 {
		t.Fatalf("key_shared %+v, want the key %.12s: 1 pool slot, 1 other certificate, 1 name", ks, id)
	}
	for _, w := range []string{"removed, no new certificate takes it", "1 other certificates use the same key: they are NOT revoked", "due for renewal now onto new keys (1 managed names"} {
		if !strings.Contains(rev.Message, w) {
			t.Errorf("message %q lacks %q", rev.Message, w)
		}
	}
	if _, err := pool.PoolKey(ctx, store.KeyECDSAP256, 5); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the pool still holds the compromised key: %v", err)
	}
	if !dueAt(t, env, "p2.example.com", env.now) {
		t.Error("p2.example.com, on the compromised key, is not due now")
	}
	if !dueAt(t, env, "p3.example.com", notAfter.Add(-30*24*time.Hour)) {
		t.Error("p3.example.com, with a key of its own, was moved")
	}
}

// dueAt reports whether name and its certificate are both due at want.
func dueAt(t *testing.T, env *revokeEnv, name string, want time.Time) bool {
	t.Helper()
	d, err := env.st.GetDomain(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := env.st.GetCertificate(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return d.NextAttempt.Equal(want) && c.RenewAt.Equal(want)
}

// poolWatchStore records, at every domain write, whether the key pool
// still holds the key keyID.
type poolWatchStore struct {
	store.Store
	keyID   string
	mu      sync.Mutex
	inPool  []string // names written while the key was in the pool
	written int
}

func (s *poolWatchStore) Unwrap() store.Store { return s.Store }

func (s *poolWatchStore) UpdateDomain(ctx context.Context, name string, fn func(*store.Domain) error) error {
	pool, _ := store.As[store.KeyPool](s.Store)
	k, err := pool.PoolKey(ctx, store.KeyECDSAP256, 0)
	s.mu.Lock()
	s.written++
	if err == nil && k.ID == s.keyID {
		s.inPool = append(s.inPool, name)
	}
	s.mu.Unlock()
	return s.Store.UpdateDomain(ctx, name, fn)
}

// TestAdminRevokeSharedKeyRemovedFirst: revoking for keyCompromise takes
// the key out of the pool before any name is made due, so that no order
// started at once (this host's renewer, another of the fleet) takes it.
func TestAdminRevokeSharedKeyRemovedFirst(t *testing.T) {
	ctx := context.Background()
	ws := &poolWatchStore{Store: newTestStore(t)}
	rv := &fakeRevoker{}
	env := &domainsEnv{st: ws, sched: &recordingScheduler{}, now: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)}
	env.base = startAdmin(t, AdminConfig{Revoker: rv, RequestTimeout: time.Second, Token: testToken, Now: func() time.Time { return env.now }, Scheduler: env.sched}, ws)
	cl, err := client.New(env.base, testToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	env.cl = cl
	env.post(t, "text/plain", "k1.example.com\nk2.example.com\n")
	shared := certtest.New(t, certtest.Template{DNSNames: []string{"key.example.com"}}, nil)
	notAfter := env.now.Add(60 * 24 * time.Hour)
	for _, n := range []string{"k1.example.com", "k2.example.com"} {
		c := certtest.New(t, certtest.Template{DNSNames: []string{n}, Key: shared.Key, NotBefore: notAfter.Add(-90 * 24 * time.Hour), NotAfter: notAfter}, nil)
		putCert(t, ws, &store.Certificate{ID: n, Names: []string{n}, ChainPEM: c.CertPEM, KeyPEM: c.KeyPEM,
			NotAfter: notAfter, Serial: c.Cert.SerialNumber.Text(16), Source: store.SourceACME, RenewAt: notAfter.Add(-30 * 24 * time.Hour)})
		if err := ws.Store.UpdateDomain(ctx, n, func(d *store.Domain) error {
			d.State, d.CertID, d.NextAttempt = store.StateValid, n, notAfter.Add(-30*24*time.Hour)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if ws.keyID, err = store.PublicKeyID(shared.Key.Public()); err != nil {
		t.Fatal(err)
	}
	pool, _ := store.As[store.KeyPool](ws)
	if _, err := pool.SwapPoolKey(ctx, "", &store.PoolKey{KeyType: store.KeyECDSAP256, Slot: 0, ID: ws.keyID, KeyPEM: shared.KeyPEM, CreatedAt: env.now}); err != nil {
		t.Fatal(err)
	}
	ws.mu.Lock()
	ws.written, ws.inPool = 0, nil
	ws.mu.Unlock()

	rev, err := env.cl.RevokeDomain(ctx, "k1.example.com", "keyCompromise")
	if err != nil {
		t.Fatal(err)
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.written < 2 || len(rev.Reordered) == 0 {
		t.Fatalf("%d domain writes, reordered %v: want both names made due", ws.written, rev.Reordered)
	}
	if len(ws.inPool) > 0 {
		t.Errorf("%v made due while the compromised key was still in the key pool", ws.inPool)
	}
}
