package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
	"github.com/certserver/certserver/store/sealed"
)

// fleetConfigFile writes a configuration whose [fleet] names the database
// at url, with a new key-encryption key file, and returns its path.
func fleetConfigFile(t *testing.T, dir, url, extra string) string {
	t.Helper()
	line, err := sealed.GenerateKey(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kek := filepath.Join(dir, "kek")
	if err := os.WriteFile(kek, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "certserver.toml")
	doc := fmt.Sprintf("[store]\npath = %q\nkey_encryption_key_file = %q\n[fleet]\ndatabase_url = %q\nhost_name = \"migrator\"\n%s",
		filepath.Join(dir, "local"), kek, url, extra)
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestFleetMigrate: a single host's store (names in several states with
// their due times, certificates, an account, rate-limit buckets, a
// challenge) is copied into the fleet's database with its keys sealed; a
// second run copies nothing and says so; a certificate the database has
// a newer one of, and a name the fleet already manages, are kept.
func TestFleetMigrate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srcDir := filepath.Join(dir, "single")
	now := time.Now().Truncate(time.Second)
	src, err := store.OpenBadger(srcDir, store.BadgerOptions{Logger: slog.New(slog.DiscardHandler), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	due := now.Add(3 * time.Hour)
	chainA, keyA := genCert(t, now.Add(60*24*time.Hour), "a.example.com")
	chainB, keyB := genCert(t, now.Add(30*24*time.Hour), "b.example.com")
	mustDo(t, src.PutCertificate(ctx, &store.Certificate{ID: "a.example.com", Names: []string{"a.example.com"}, ChainPEM: chainA, KeyPEM: keyA,
		Serial: "a1", NotAfter: now.Add(60 * 24 * time.Hour), Source: "import"}))
	mustDo(t, src.PutCertificate(ctx, &store.Certificate{ID: "b.example.com", Names: []string{"b.example.com"}, ChainPEM: chainB, KeyPEM: keyB,
		Serial: "b1", NotAfter: now.Add(30 * 24 * time.Hour), Source: "import"}))
	mustDo(t, src.PutDomain(ctx, &store.Domain{Name: "a.example.com", State: store.StateValid, CertID: "a.example.com", NextAttempt: due}))
	mustDo(t, src.PutDomain(ctx, &store.Domain{Name: "c.example.com", State: store.StateFailing, Failures: 3, LastError: "dns", NextAttempt: due.Add(time.Hour), FailingSince: now.Add(-time.Hour)}))
	mustDo(t, src.PutDomain(ctx, &store.Domain{Name: "taken.example.com", State: store.StatePending, NextAttempt: now}))
	mustDo(t, src.PutAccount(ctx, &store.Account{ID: "acct-1", Directory: "https://ca.test/dir", URL: "https://ca.test/acct/1", KeyPEM: keyA}))
	mustDo(t, src.PutRateBuckets(ctx, "ca-1", []store.RateBucket{{Limit: "new_orders", Full: now.Add(time.Hour)}}))
	mustDo(t, src.PutChallenge(ctx, "tok-1", "tok-1.thumb", now.Add(10*time.Minute)))
	mustDo(t, src.Close())

	url := pgtest.New(t)
	cfgPath := fleetConfigFile(t, dir, url, "")
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := loadKeyring(cfg.Store)
	if err != nil {
		t.Fatal(err)
	}
	pg, err := postgres.Open(ctx, postgres.Options{URL: url, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	dst := sealed.Wrap(pg, kr)
	// What the fleet already has: a newer certificate for b, a record
	// of its own for taken.example.com.
	chainB2, keyB2 := genCert(t, now.Add(80*24*time.Hour), "b.example.com")
	mustDo(t, dst.PutCertificate(ctx, &store.Certificate{ID: "b.example.com", Names: []string{"b.example.com"}, ChainPEM: chainB2, KeyPEM: keyB2,
		Serial: "b2", NotAfter: now.Add(80 * 24 * time.Hour), Source: "acme"}))
	mustDo(t, dst.PutDomain(ctx, &store.Domain{Name: "taken.example.com", State: store.StateValid, CertID: "taken.example.com", NextAttempt: due}))

	args := []string{"fleet", "migrate", "--from", srcDir, "--config", cfgPath, "--progress", "lines"}
	e, out, errOut := testEnv(nil)
	if code := run(ctx, e, args); code != exitOK {
		t.Fatalf("first run: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, want := range []string{
		"copied " + srcDir + " into the database",
		"certificates       1 copied, 0 already there, 1 kept as the database has them (newer there)",
		"names              2 copied, 1 already there",
		"ACME accounts      1 copied",
		"rate-limit buckets 1 copied",
		"challenges         1 copied",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("first run's summary lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut.String(), "8/8 records") {
		t.Errorf("progress: %q, want a line with 8/8 records", errOut)
	}
	if strings.Contains(out.String()+errOut.String(), "postgres://") {
		t.Errorf("the output shows the database URL:\n%s%s", out, errOut)
	}

	// In the database, keys sealed at rest and opened through the keyring.
	raw, err := pg.GetCertificate(ctx, "a.example.com")
	if err != nil || !sealed.IsSealed(raw.KeyPEM) {
		t.Fatalf("a.example.com in the database: %v, sealed %v; want its key sealed", err, raw != nil && sealed.IsSealed(raw.KeyPEM))
	}
	if c, err := dst.GetCertificate(ctx, "a.example.com"); err != nil || !bytes.Equal(c.KeyPEM, keyA) || !bytes.Equal(c.ChainPEM, chainA) {
		t.Errorf("a.example.com opened: %v, want the single host's chain and key", err)
	}
	if c, err := dst.GetCertificate(ctx, "b.example.com"); err != nil || c.Serial != "b2" {
		t.Errorf("b.example.com: %+v %v, want the fleet's newer certificate kept", c, err)
	}
	entries, err := dst.Due(ctx, due.Add(2*time.Hour), 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, en := range entries {
		got = append(got, en.Name+"@"+en.At.Sub(now).String())
	}
	if want := "a.example.com@3h0m0s taken.example.com@3h0m0s c.example.com@4h0m0s"; strings.Join(got, " ") != want {
		t.Errorf("due index %q, want %q", strings.Join(got, " "), want)
	}
	if d, err := dst.GetDomain(ctx, "c.example.com"); err != nil || d.State != store.StateFailing || d.Failures != 3 || !d.FailingSince.Equal(now.Add(-time.Hour)) {
		t.Errorf("c.example.com: %+v %v, want it failing as on the single host", d, err)
	}
	if d, err := dst.GetDomain(ctx, "taken.example.com"); err != nil || d.State != store.StateValid {
		t.Errorf("taken.example.com: %+v %v, want the fleet's record kept", d, err)
	}
	if a, err := dst.GetAccount(ctx, "acct-1"); err != nil || !bytes.Equal(a.KeyPEM, keyA) {
		t.Errorf("account: %v", err)
	}
	if bs, err := dst.RateBuckets(ctx, "ca-1"); err != nil || len(bs) != 1 || !bs[0].Full.Equal(now.Add(time.Hour)) {
		t.Errorf("rate buckets %+v %v", bs, err)
	}
	if ka, err := dst.GetChallenge(ctx, "tok-1"); err != nil || ka != "tok-1.thumb" {
		t.Errorf("challenge %q %v", ka, err)
	}

	// Again: nothing new.
	e, out, errOut = testEnv(nil)
	if code := run(ctx, e, args); code != exitOK {
		t.Fatalf("second run: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if !strings.Contains(out.String(), "nothing new") || strings.Contains(out.String(), " 1 copied") || strings.Contains(out.String(), " 2 copied") {
		t.Errorf("second run:\n%s\nwant nothing new and nothing copied", out)
	}
}

// TestFleetMigrateServesWhatTheSingleHostServed: a name two certificates
// claim is served in the fleet by the one the single host served (stored
// last, or the newest unexpired one it fell back to), not by the one
// whose ID sorts last or an expired one stored later.
func TestFleetMigrateServesWhatTheSingleHostServed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srcDir := filepath.Join(dir, "single")
	now := time.Now().Truncate(time.Second)
	src, err := store.OpenBadger(srcDir, store.BadgerOptions{Logger: slog.New(slog.DiscardHandler), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	// Stored in this order, as on the host: the SAN certificate first, the
	// name's own later; it serves shared.example.com.
	for i, id := range []string{"z.example.com", "a.example.com"} {
		notAfter := now.Add(time.Duration(60-i) * 24 * time.Hour)
		chain, key := genCert(t, notAfter, id, "shared.example.com")
		mustDo(t, src.PutCertificate(ctx, &store.Certificate{ID: id, Names: []string{id, "shared.example.com"}, ChainPEM: chain, KeyPEM: key,
			Serial: fmt.Sprintf("%x", i+1), NotAfter: notAfter, Source: "import", StoredAt: now.Add(time.Duration(i-2) * time.Hour)}))
	}
	// A name whose certificate was removed fell back to the newest
	// unexpired claim (old.example.com), not to the expired one stored
	// after it.
	for i, id := range []string{"old.example.com", "expired.example.com", "gone.example.com"} {
		notAfter := now.Add(60 * 24 * time.Hour)
		if id == "expired.example.com" {
			notAfter = now.Add(-time.Hour)
		}
		chain, key := genCert(t, notAfter, id, "fallback.example.com")
		mustDo(t, src.PutCertificate(ctx, &store.Certificate{ID: id, Names: []string{id, "fallback.example.com"}, ChainPEM: chain, KeyPEM: key,
			Serial: fmt.Sprintf("%x", i+10), NotAfter: notAfter, Source: "import", StoredAt: now.Add(time.Duration(i-5) * time.Hour)}))
	}
	mustDo(t, src.DeleteCertificate(ctx, "gone.example.com"))
	for name, want := range map[string]string{"shared.example.com": "a.example.com", "fallback.example.com": "old.example.com"} {
		if c, err := src.LookupCertificate(ctx, name); err != nil || c.ID != want {
			t.Fatalf("the single host serves %s: %v, want %s", name, err, want)
		}
	}
	mustDo(t, src.Close())

	url := pgtest.New(t)
	cfgPath := fleetConfigFile(t, dir, url, "")
	e, out, errOut := testEnv(nil)
	if code := run(ctx, e, []string{"fleet", "migrate", "--from", srcDir, "--config", cfgPath, "--progress", "lines"}); code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	pg, err := postgres.Open(ctx, postgres.Options{URL: url, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	for name, want := range map[string]string{"shared.example.com": "a.example.com", "z.example.com": "z.example.com", "a.example.com": "a.example.com",
		"fallback.example.com": "old.example.com", "expired.example.com": "expired.example.com"} {
		c, err := pg.LookupCertificate(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if c.ID != want {
			t.Errorf("the fleet serves %s with %s, want %s as the single host did", name, c.ID, want)
		}
	}
}

// TestFleetMigrateRefuses: the command names what is missing.
func TestFleetMigrateRefuses(t *testing.T) {
	dir := t.TempDir()
	single := filepath.Join(dir, "single.toml")
	if err := os.WriteFile(single, []byte("[store]\npath = \"/tmp/x\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runCases(t, []cliCase{
		{desc: "no --from", args: []string{"fleet", "migrate", "--config", single}, code: exitUsage, stderr: "--from is required"},
		{desc: "no [fleet]", args: []string{"fleet", "migrate", "--from", dir, "--config", single}, code: exitFailure, stderr: "has no [fleet] section"},
		{desc: "unknown subcommand", args: []string{"fleet", "join"}, code: exitUsage, stderr: `unknown subcommand "join"`},
	}, runLocal)
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
