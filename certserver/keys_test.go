package certserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/sealed"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testKEK returns a key-encryption key for the tests, distinct for each seed.
func testKEK(seed byte) []byte { return bytes.Repeat([]byte{seed}, sealed.KeySize) }

// testKeyring returns a keyring of the keys named by ids, each made from
// its seed, the last one current.
func testKeyring(t testing.TB, keys ...struct {
	id   string
	seed byte
}) *sealed.Keyring {
	t.Helper()
	var text strings.Builder
	for _, k := range keys {
		text.WriteString(k.id + " " + base64.StdEncoding.EncodeToString(testKEK(k.seed)) + "\n")
	}
	kr, err := sealed.ParseKeyring(strings.NewReader(text.String()), "test")
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

type kek = struct {
	id   string
	seed byte
}

// assertNoSecrets fails the test when log holds a private key or
// key-encryption key material.
func assertNoSecrets(t *testing.T, log string, keyPEMs [][]byte, keks ...[]byte) {
	t.Helper()
	for _, k := range keyPEMs {
		lines := strings.Split(strings.TrimSpace(string(k)), "\n")
		for _, l := range lines[1 : len(lines)-1] {
			if strings.Contains(log, l) {
				t.Errorf("the log holds private key material: %q", l)
			}
		}
	}
	for _, k := range keks {
		b64 := base64.StdEncoding.EncodeToString(k)
		if strings.Contains(log, b64[:16]) {
			t.Error("the log holds a key-encryption key")
		}
	}
}

func TestCertEndpointSealedKeys(t *testing.T) {
	inner := newTestStore(t)
	kr := testKeyring(t, kek{"k1", 1})
	st := sealed.Wrap(inner, kr)
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, err := NewMetrics(MetricsConfig{}, st, logger)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewCertEndpoint(CertEndpointConfig{Listen: "127.0.0.1:0", Metrics: m}, st, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	serving(t, e.Serve)
	addr := e.Addrs()[0].String()

	notAfter := time.Now().Add(60 * 24 * time.Hour)
	good := newTestCert(t, notAfter, "good.example.com")
	putCert(t, st, &store.Certificate{ID: "good.example.com", Names: []string{"good.example.com"}, ChainPEM: good.chain, KeyPEM: good.key, NotAfter: notAfter})
	// A record sealed under a key this keyring does not hold.
	lost := newTestCert(t, notAfter, "lost.example.com")
	putCert(t, sealed.Wrap(inner, testKeyring(t, kek{"gone", 9})), &store.Certificate{ID: "lost.example.com", Names: []string{"lost.example.com"}, ChainPEM: lost.chain, KeyPEM: lost.key, NotAfter: notAfter})

	resp, body := rawRequest(t, addr, "GET", "/v1/certs/good.example.com")
	if resp.StatusCode != 200 || !strings.Contains(body, string(good.key)) {
		t.Fatalf("sealed record: status %d, want 200 with its plain key (body %q)", resp.StatusCode, body)
	}
	resp, body = rawRequest(t, addr, "GET", "/v1/certs/lost.example.com")
	if resp.StatusCode != 500 || strings.Contains(body, "BEGIN") {
		t.Fatalf("record whose key cannot be opened: status %d body %q, want 500 and no PEM", resp.StatusCode, body)
	}
	if got := testutil.ToFloat64(m.certKeyErrs); got != 1 {
		t.Errorf("certserver_cert_key_errors_total = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.certCodes[500]); got != 1 {
		t.Errorf("500 answers counted %v, want 1", got)
	}
	log := logs.String()
	if !strings.Contains(log, "certificate key cannot be decrypted") || !strings.Contains(log, "lost.example.com") || !strings.Contains(log, `\"gone\"`) {
		t.Errorf("the log does not report the record and its key ID:\n%s", log)
	}
	assertNoSecrets(t, log, [][]byte{good.key, lost.key}, testKEK(1), testKEK(9))
}

func TestChangesThroughSealedStore(t *testing.T) {
	st := sealed.Wrap(newTestStore(t), testKeyring(t, kek{"k1", 1}))
	e := startCertEndpoint(t, CertEndpointConfig{Listen: "127.0.0.1:0"}, st)
	addr := e.Addrs()[0].String()
	resp, body := rawRequest(t, addr, "GET", "/v1/changes")
	if resp.StatusCode != 200 {
		t.Fatalf("GET /v1/changes through the decorator: status %d, want 200 (body %q)", resp.StatusCode, body)
	}
	epoch, v, _ := strings.Cut(strings.SplitN(body, "\n", 2)[0], " ")
	c := newTestCert(t, time.Now().Add(time.Hour), "a.example.com")
	rec := func() *store.Certificate {
		return &store.Certificate{ID: "a.example.com", Names: []string{"a.example.com"}, ChainPEM: c.chain, KeyPEM: c.key, NotAfter: time.Now().Add(time.Hour)}
	}
	putCert(t, st, rec())
	putCert(t, st, rec())
	_, body = rawRequest(t, addr, "GET", "/v1/changes?since="+epoch+"."+v)
	if lines := strings.Split(strings.TrimSpace(body), "\n"); len(lines) != 2 || lines[1] != "a.example.com" {
		t.Errorf("changes %q, want a.example.com", body)
	}
}

func TestAdminRotateKeys(t *testing.T) {
	ctx := context.Background()
	inner := newTestStore(t)
	old := testKeyring(t, kek{"k1", 1})
	var keys [][]byte
	for i, name := range []string{"a.example.com", "b.example.com", "c.example.com", "d.example.com", "e.example.com"} {
		c := newTestCert(t, time.Now().Add(time.Hour), name)
		keys = append(keys, c.key)
		var st store.Store = inner // stored before sealing was turned on
		if i%2 == 1 {
			st = sealed.Wrap(inner, old)
		}
		putCert(t, st, &store.Certificate{ID: name, Names: []string{name}, ChainPEM: c.chain, KeyPEM: c.key, NotAfter: time.Now().Add(time.Hour)})
	}
	if err := sealed.Wrap(inner, old).PutAccount(ctx, &store.Account{ID: "acct", KeyPEM: keys[0]}); err != nil {
		t.Fatal(err)
	}

	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	newAPI := func(keys KeyRotator) *client.Client {
		a, err := NewAdminAPI(AdminConfig{Listen: "127.0.0.1:0", Token: testToken, Keys: keys}, inner, logger)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Listen(ctx); err != nil {
			t.Fatal(err)
		}
		serving(t, a.Serve)
		cl, err := client.New("http://"+a.Addrs()[0].String(), testToken, nil)
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}

	var ae *api.Error
	if _, err := newAPI(nil).RotateKeys(ctx, "", 0); !errors.As(err, &ae) || ae.Status != 409 || !strings.Contains(ae.Message, "key_encryption_key_file") {
		t.Errorf("without a keyring: %v, want 409 naming key_encryption_key_file", err)
	}

	st := sealed.Wrap(inner, testKeyring(t, kek{"k1", 1}, kek{"k2", 2}))
	cl := newAPI(st)
	for _, tt := range []struct {
		desc   string
		cursor string
		limit  int
	}{
		{"bad cursor", "nonsense", 2},
		{"limit too large", "", api.MaxRotateBatch + 1},
		{"negative limit", "", -1},
	} {
		if _, err := cl.RotateKeys(ctx, tt.cursor, tt.limit); !errors.As(err, &ae) || ae.Status != 400 {
			t.Errorf("%s: %v, want 400", tt.desc, err)
		}
	}
	cursor, scanned, resealed, total := "", 0, 0, 0
	for calls := 0; ; calls++ {
		if calls > 20 {
			t.Fatal("rotation does not end")
		}
		r, err := cl.RotateKeys(ctx, cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		if r.KeyID != "k2" || len(r.Failed) != 0 {
			t.Fatalf("batch %+v: want key k2 and no failure", r)
		}
		total += r.Total
		scanned += r.Scanned
		resealed += r.Resealed
		if r.Done {
			break
		}
		cursor = r.Next
	}
	if total != 6 || scanned != 6 || resealed != 6 {
		t.Errorf("total %d scanned %d resealed %d; want 6 each", total, scanned, resealed)
	}
	// k1 removed from the keyring: everything opens.
	after := sealed.Wrap(inner, testKeyring(t, kek{"k2", 2}))
	for i, name := range []string{"a.example.com", "b.example.com", "c.example.com", "d.example.com", "e.example.com"} {
		c, err := after.LookupCertificate(ctx, name)
		if err != nil || !bytes.Equal(c.KeyPEM, keys[i]) {
			t.Errorf("%s after rotation: %v", name, err)
		}
	}
	if _, err := after.GetAccount(ctx, "acct"); err != nil {
		t.Errorf("account after rotation: %v", err)
	}
	assertNoSecrets(t, logs.String(), keys, testKEK(1), testKEK(2))
}

// TestImportReplacesUnreadableKey: an import is how an operator replaces
// a certificate whose stored key cannot be decrypted; the endpoint then
// serves the new one.
func TestImportReplacesUnreadableKey(t *testing.T) {
	inner := newTestStore(t)
	st := sealed.Wrap(inner, testKeyring(t, kek{"k1", 1}))
	notAfter := time.Now().Add(30 * 24 * time.Hour)
	lost := newTestCert(t, notAfter, "lost.example.com")
	putCert(t, sealed.Wrap(inner, testKeyring(t, kek{"gone", 9})), &store.Certificate{ID: "lost.example.com", Names: []string{"lost.example.com"}, ChainPEM: lost.chain, KeyPEM: lost.key, NotAfter: notAfter, Serial: lost.serial})
	cl, err := client.New(startAdmin(t, AdminConfig{Token: testToken}, st), testToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	fresh := newTestCert(t, notAfter.Add(time.Hour), "lost.example.com")
	if _, err := cl.ImportCertificate(context.Background(), &api.ImportRequest{ChainPEM: string(fresh.chain), KeyPEM: string(fresh.key)}); err != nil {
		t.Fatalf("import over a record whose key cannot be decrypted: %v", err)
	}
	c, err := st.LookupCertificate(context.Background(), "lost.example.com")
	if err != nil || !bytes.Equal(c.KeyPEM, fresh.key) {
		t.Fatalf("after the import: %v", err)
	}
}
