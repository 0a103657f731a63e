package certserver

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
)

// downStore is a store that, while down is set, fails every call the way
// a fleet's PostgreSQL store fails when its database cannot be reached.
type downStore struct {
	store.Store
	down atomic.Bool
}

// errDown is what downStore's calls fail with while down.
var errDown = fmt.Errorf("%w: postgres db.internal:5432/certserver: dial tcp 10.0.0.5:5432: connect: connection refused", store.ErrUnavailable)

func (s *downStore) fail() error {
	if s.down.Load() {
		return errDown
	}
	return nil
}

func (s *downStore) PutCertificate(ctx context.Context, c *store.Certificate) error {
	if err := s.fail(); err != nil {
		return err
	}
	return s.Store.PutCertificate(ctx, c)
}

func (s *downStore) PutCertificates(ctx context.Context, cs []*store.Certificate) error {
	if err := s.fail(); err != nil {
		return err
	}
	return s.Store.PutCertificates(ctx, cs)
}

func (s *downStore) GetCertificate(ctx context.Context, id string) (*store.Certificate, error) {
	if err := s.fail(); err != nil {
		return nil, err
	}
	return s.Store.GetCertificate(ctx, id)
}

func (s *downStore) LookupCertificate(ctx context.Context, name string) (*store.Certificate, error) {
	if err := s.fail(); err != nil {
		return nil, err
	}
	return s.Store.LookupCertificate(ctx, name)
}

func (s *downStore) ListCertificates(ctx context.Context, after string, limit int) ([]*store.Certificate, error) {
	if err := s.fail(); err != nil {
		return nil, err
	}
	return s.Store.ListCertificates(ctx, after, limit)
}

func (s *downStore) DeleteCertificate(ctx context.Context, id string) error {
	if err := s.fail(); err != nil {
		return err
	}
	return s.Store.DeleteCertificate(ctx, id)
}

func (s *downStore) AddDomains(ctx context.Context, ds []*store.Domain) (int, int, error) {
	if err := s.fail(); err != nil {
		return 0, 0, err
	}
	return s.Store.AddDomains(ctx, ds)
}

func (s *downStore) GetDomain(ctx context.Context, name string) (*store.Domain, error) {
	if err := s.fail(); err != nil {
		return nil, err
	}
	return s.Store.GetDomain(ctx, name)
}

func (s *downStore) UpdateDomain(ctx context.Context, name string, fn func(*store.Domain) error) error {
	if err := s.fail(); err != nil {
		return err
	}
	return s.Store.UpdateDomain(ctx, name, fn)
}

func (s *downStore) PutDomain(ctx context.Context, d *store.Domain) error {
	if err := s.fail(); err != nil {
		return err
	}
	return s.Store.PutDomain(ctx, d)
}

func (s *downStore) DeleteDomain(ctx context.Context, name string) error {
	if err := s.fail(); err != nil {
		return err
	}
	return s.Store.DeleteDomain(ctx, name)
}

func (s *downStore) ListDomains(ctx context.Context, after string, limit int) ([]*store.Domain, error) {
	if err := s.fail(); err != nil {
		return nil, err
	}
	return s.Store.ListDomains(ctx, after, limit)
}

func (s *downStore) Due(ctx context.Context, before time.Time, limit int) ([]store.DueEntry, error) {
	if err := s.fail(); err != nil {
		return nil, err
	}
	return s.Store.Due(ctx, before, limit)
}

// TestAdminDatabaseUnavailable: while the fleet's database is down, every
// admin write answers 503 with a JSON error that names the database and
// the cause, with a Retry-After, and nothing is written; once it is back
// the same request succeeds.
func TestAdminDatabaseUnavailable(t *testing.T) {
	st := &downStore{Store: newTestStore(t)}
	base := startAdmin(t, AdminConfig{Token: testToken}, st)
	auth := "Bearer " + testToken
	c := newTestCert(t, time.Now().Add(60*24*time.Hour), "shop.example.com")
	if resp, _, raw := call(t, "POST", base+"/v1/domains", auth, "application/json", `{"names":["kept.example.com"]}`); resp.StatusCode != 200 {
		t.Fatalf("add while up: %d %s", resp.StatusCode, raw)
	}
	st.down.Store(true)

	tests := []struct {
		desc, method, path, contentType, body string
	}{
		{desc: "add names", method: "POST", path: "/v1/domains", contentType: "application/json", body: `{"names":["new.example.com"]}`},
		{desc: "import", method: "POST", path: "/v1/certificates", contentType: "application/json", body: importBody(t, c)},
		{desc: "import a batch", method: "POST", path: "/v1/certificates/batch", contentType: "application/x-ndjson", body: importBody(t, c) + "\n"},
		{desc: "remove", method: "DELETE", path: "/v1/domains/kept.example.com"},
		{desc: "renew", method: "POST", path: "/v1/domains/kept.example.com/renew"},
		{desc: "list", method: "GET", path: "/v1/domains"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			resp, doc, raw := call(t, tt.method, base+tt.path, auth, tt.contentType, tt.body)
			if resp.StatusCode == http.StatusOK && tt.path == "/v1/certificates/batch" {
				// A batch answers per certificate.
				if !strings.Contains(raw, `"status":503`) || !strings.Contains(raw, api.ReasonDatabaseUnavailable) {
					t.Fatalf("batch: %s, want the certificate refused with 503 %q", raw, api.ReasonDatabaseUnavailable)
				}
				return
			}
			if resp.StatusCode != http.StatusServiceUnavailable || doc == nil {
				t.Fatalf("%d %s, want 503 with a JSON error", resp.StatusCode, raw)
			}
			msg, _ := doc["error"].(string)
			if doc["reason"] != api.ReasonDatabaseUnavailable || !strings.Contains(msg, "PostgreSQL") ||
				!strings.Contains(msg, "db.internal:5432") || !strings.Contains(msg, "connection refused") {
				t.Errorf("error %s, want reason %q and a message naming the database and the cause", raw, api.ReasonDatabaseUnavailable)
			}
			if resp.Header.Get("Retry-After") == "" {
				t.Errorf("no Retry-After")
			}
		})
	}

	st.down.Store(false)
	if _, err := st.GetDomain(context.Background(), "new.example.com"); err == nil {
		t.Errorf("new.example.com was written while the database was down")
	}
	if _, err := st.GetDomain(context.Background(), "kept.example.com"); err != nil {
		t.Errorf("kept.example.com: %v, want it still there", err)
	}
	if resp, _, raw := call(t, "POST", base+"/v1/domains", auth, "application/json", `{"names":["new.example.com"]}`); resp.StatusCode != 200 {
		t.Fatalf("add once back: %d %s", resp.StatusCode, raw)
	}
}
