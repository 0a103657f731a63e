package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
	"github.com/certserver/certserver/store/storetest"
)

func TestConcurrentOpensApplyTheMigrationsOnce(t *testing.T) {
	url := pgtest.New(t)
	const hosts = 4
	var (
		wg   sync.WaitGroup
		logs [hosts]bytes.Buffer
		errs [hosts]error
	)
	for i := range hosts {
		wg.Go(func() {
			log := slog.New(slog.NewTextHandler(&logs[i], nil))
			s, err := postgres.Open(ctx(t), postgres.Options{URL: url, Logger: log})
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	upgraded := 0
	for i := range hosts {
		if errs[i] != nil {
			t.Errorf("open %d: %v", i, errs[i])
		}
		if strings.Contains(logs[i].String(), "database schema upgraded") {
			upgraded++
		}
	}
	if upgraded != 1 {
		t.Errorf("%d of %d opens upgraded the schema, want 1", upgraded, hosts)
	}
	conn, err := pgx.Connect(ctx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n, max int
	if err := conn.QueryRow(ctx(t), "SELECT count(*), max(version) FROM certserver_schema").Scan(&n, &max); err != nil {
		t.Fatal(err)
	}
	files, err := os.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	if n != len(files) || max != postgres.SchemaVersion() {
		t.Errorf("certserver_schema has %d rows up to %d, want %d up to %d", n, max, len(files), postgres.SchemaVersion())
	}
}

func TestANewerSchemaIsRefused(t *testing.T) {
	url := pgtest.New(t)
	s := openURL(t, url, time.Now)
	s.Close()
	conn, err := pgx.Connect(ctx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	newer := postgres.SchemaVersion() + 1
	if _, err := conn.Exec(ctx(t), "INSERT INTO certserver_schema (version, name) VALUES ($1, 'from the future')", newer); err != nil {
		t.Fatal(err)
	}
	_, err = postgres.Open(ctx(t), postgres.Options{URL: url, Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		t.Fatal("a binary opened a database whose schema is newer than it knows")
	}
	for _, want := range []string{fmt.Sprintf("version %d", newer), fmt.Sprintf("version %d", postgres.SchemaVersion())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if errors.Is(err, store.ErrUnavailable) {
		t.Errorf("a refused schema is not an unavailable database: %v", err)
	}
}

// withPassword returns u with user postgres and password pw (the test
// clusters trust every local connection and never ask for it).
func withPassword(t *testing.T, u, pw string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	p.User = url.UserPassword("postgres", pw)
	return p.String()
}

func TestTheStoreIsUnavailableWhileTheServerIsDownAndRecoversAfter(t *testing.T) {
	cluster := pgtest.Start(t)
	const password = "s3cret-pw"
	u := withPassword(t, cluster.NewDatabase(t), password)
	var logs bytes.Buffer
	clock := storetest.NewClock()
	s, err := postgres.Open(ctx(t), postgres.Options{URL: u, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Clock: clock.Now, ConnectTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := ctx(t)
	now := clock.Now()
	if err := s.PutCertificate(c, cert(now, "a.example.com")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutDomain(c, &store.Domain{Name: "a.example.com", State: store.StateValid, NextAttempt: now}); err != nil {
		t.Fatal(err)
	}

	cluster.Stop(t)
	calls := []struct {
		desc string
		call func() error
	}{
		{"PutCertificate", func() error { return s.PutCertificate(c, cert(now, "b.example.com")) }},
		{"PutCertificates", func() error { return s.PutCertificates(c, []*store.Certificate{cert(now, "b.example.com")}) }},
		{"LookupCertificate", func() error { _, err := s.LookupCertificate(c, "a.example.com"); return err }},
		{"DeleteCertificate", func() error { return s.DeleteCertificate(c, "a.example.com") }},
		{"UpdateDomain", func() error {
			return s.UpdateDomain(c, "a.example.com", func(d *store.Domain) error { d.State = store.StateRenewing; return nil })
		}},
		{"AddDomains", func() error {
			_, _, err := s.AddDomains(c, []*store.Domain{{Name: "b.example.com", State: store.StatePending}})
			return err
		}},
		{"Due", func() error { _, err := s.Due(c, now, 10); return err }},
		{"PutChallenge", func() error { return s.PutChallenge(c, "tok", "tok.auth", now.Add(time.Hour)) }},
		{"ChangesAfter", func() error { _, err := s.ChangesAfter(c, 0, 10); return err }},
		{"LatestVersion", func() error { _, err := s.LatestVersion(c); return err }},
		{"ReportHost", func() error { return s.ReportHost(c, store.Host{Name: "h1"}) }},
	}
	for _, tc := range calls {
		err := tc.call()
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s with the server down: %v, want ErrUnavailable", tc.desc, err)
			continue
		}
		if !strings.Contains(err.Error(), s.Database()) {
			t.Errorf("%s: %q does not name the database %s", tc.desc, err, s.Database())
		}
		if strings.Contains(err.Error(), password) {
			t.Errorf("%s: the error shows the password: %q", tc.desc, err)
		}
	}

	cluster.Restart(t)
	// Nothing was half-written while it was down, and the pool works
	// again without a new Open.
	if got, err := s.LookupCertificate(c, "a.example.com"); err != nil || got.ID != "a.example.com" {
		t.Fatalf("after the restart: %v, %v", got, err)
	}
	if _, err := s.GetCertificate(c, "b.example.com"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("b.example.com, written while the server was down: %v, want ErrNotFound", err)
	}
	d, err := s.GetDomain(c, "a.example.com")
	if err != nil || d.State != store.StateValid {
		t.Errorf("a.example.com's record after the outage: %+v, %v", d, err)
	}
	if err := s.PutCertificate(c, cert(now, "b.example.com")); err != nil {
		t.Errorf("PutCertificate after the restart: %v", err)
	}
	if strings.Contains(logs.String(), password) {
		t.Errorf("the log shows the password:\n%s", logs.String())
	}
}

func TestOpenFailsClearlyAndKeepsThePasswordOut(t *testing.T) {
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	const password = "s3cret-pw"
	for _, tc := range []struct {
		desc        string
		url         string
		unavailable bool
	}{
		{"refused", "postgres://certserver:" + password + "@" + addr + "/certserver?sslmode=disable", true},
		{"malformed", "postgres://certserver:" + password + "@" + addr + ":x:y/certserver", false},
		{"unknown parameter", "postgres://certserver:" + password + "@" + addr + "/certserver?sslmode=bogus", false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			var logs bytes.Buffer
			_, err := postgres.Open(ctx(t), postgres.Options{URL: tc.url, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err == nil {
				t.Fatal("Open succeeded")
			}
			t.Log(err)
			if errors.Is(err, store.ErrUnavailable) != tc.unavailable {
				t.Errorf("ErrUnavailable is %v in %q, want %v", !tc.unavailable, err, tc.unavailable)
			}
			if strings.Contains(err.Error(), password) || strings.Contains(logs.String(), password) {
				t.Errorf("the password shows: %q\n%s", err, logs.String())
			}
		})
	}
	for _, tc := range []struct {
		desc string
		opts postgres.Options
	}{
		{"no URL", postgres.Options{Logger: slog.New(slog.DiscardHandler)}},
		{"no logger", postgres.Options{URL: "postgres://" + addr + "/x"}},
		{"negative pool", postgres.Options{URL: "postgres://" + addr + "/x", Logger: slog.New(slog.DiscardHandler), MaxConns: -1}},
	} {
		if _, err := postgres.Open(ctx(t), tc.opts); err == nil {
			t.Errorf("%s: Open succeeded", tc.desc)
		}
	}
}
