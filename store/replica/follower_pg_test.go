package replica_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/replica"
)

// Writes to the shared store reach the local copy, and its change feed
// names what nginx must drop; the host is reported with what it applied.
func TestFollowerAppliesChanges(t *testing.T) {
	ctx := context.Background()
	pg := openPostgres(t, pgtest.New(t))
	local := openBadger(t, t.TempDir())
	f := startFollower(t, replica.Config{Source: pg, Replica: local, Renews: true})
	waitFor(t, "the follower is ready on an empty database", func() bool { return f.Status().Ready })
	poll, err := local.CertChanges(ctx, store.Cursor{})
	if err != nil {
		t.Fatal(err)
	}

	if err := pg.PutCertificate(ctx, cert("a.example.com", "www.a.example.com")); err != nil {
		t.Fatal(err)
	}
	if err := pg.PutChallenge(ctx, "tok", "tok.thumb", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new certificate and a challenge reach the copy", func() bool {
		ka, _ := local.GetChallenge(ctx, "tok")
		return served(t, local, "www.a.example.com") == "a.example.com" && ka == "tok.thumb"
	})

	// A replacement dropping a name: the feed names the record and both names.
	if err := pg.PutCertificate(ctx, cert("a.example.com")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replacement reaches the copy", func() bool { return served(t, local, "www.a.example.com") == "" })
	ch, err := local.CertChanges(ctx, poll.Next)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a.example.com", "www.a.example.com"}; ch.Reset || !slices.Equal(ch.Names, want) {
		t.Fatalf("change feed after the replacement: %+v, want %q", ch, want)
	}

	if err := pg.DeleteCertificate(ctx, "a.example.com"); err != nil {
		t.Fatal(err)
	}
	if err := pg.DeleteChallenge(ctx, "tok"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deletes reach the copy", func() bool {
		_, err := local.GetChallenge(ctx, "tok")
		return served(t, local, "a.example.com") == "" && err != nil
	})
	waitFor(t, "the follower in step with lag 0", func() bool { return inStep(t, f, pg) })
	latest, _ := pg.LatestVersion(ctx)
	waitFor(t, "the host reported with the latest version", func() bool {
		hosts, err := pg.Hosts(ctx)
		return err == nil && len(hosts) == 1 && hosts[0].Name == "host-a" && hosts[0].Applied == latest && hosts[0].Renews
	})
	if st := f.Status(); st.LagSeconds != 0 || st.DownCause != "" || !st.DatabaseUp {
		t.Fatalf("status in step: %+v", st)
	}
}

// Changes written while no follower listened (their announcements lost)
// are applied when it starts: a new host joining 10,000 certificates is
// ready with every one of them.
func TestFollowerJoinIsReadyWithEverything(t *testing.T) {
	pg := openPostgres(t, pgtest.New(t))
	const n = 10000
	putAll(t, pg, certs("join", n))
	local := openBadger(t, t.TempDir())
	logger, logs := newLogger(t)
	f := startFollower(t, replica.Config{Source: pg, Replica: local, Logger: logger, Batch: 500})
	select {
	case <-f.Ready():
	case <-time.After(waitBound):
		t.Fatalf("not ready within %v: %+v", waitBound, f.Status())
	}
	if got := countCerts(t, local); got != n {
		t.Fatalf("ready with %d certificates, want %d", got, n)
	}
	if served(t, local, "join9999.test") != "join9999.test" {
		t.Fatal("the last certificate is not served")
	}
	if st := f.Status(); st.LagVersions != 0 || st.Applied == 0 {
		t.Fatalf("status when ready: %+v", st)
	}
	for _, want := range []string{"fleet: syncing certificates from the database", "fleet: local copy in step with the database"} {
		if logs.count(want) != 1 {
			t.Errorf("log lacks one line %q:\n%s", want, logs)
		}
	}
}

// PostgreSQL stopped: the status says down since when and why, the copy
// keeps serving, one line says so; started again, the follower catches up
// by itself, says so in one line, and its lag returns to 0.
func TestFollowerDatabaseRestart(t *testing.T) {
	cluster := pgtest.Start(t)
	url := cluster.NewDatabase(t)
	// A password in the URL (the cluster ignores it) must show nowhere.
	url = strings.Replace(url, "postgres@", "postgres:hunter2secret@", 1)
	pg := openPostgres(t, url)
	putAll(t, pg, certs("before", 10))
	local := openBadger(t, t.TempDir())
	logger, logs := newLogger(t)
	f := startFollower(t, replica.Config{Source: pg, Replica: local, Logger: logger})
	waitFor(t, "in step before the outage", func() bool { return inStep(t, f, pg) })

	cluster.Stop(t)
	waitFor(t, "the status says the database is down", func() bool {
		st := f.Status()
		return !st.DatabaseUp && !st.DownSince.IsZero() && st.DownCause != ""
	})
	// Several retries happen while it is down; still one line.
	waitFor(t, "retries while down", func() bool { return logs.count("fleet: database down") == 1 })
	st := f.Status()
	if !st.Ready || served(t, local, "before9.test") != "before9.test" {
		t.Fatalf("while down: %+v, and the copy must serve what it has", st)
	}
	if strings.Contains(st.DownCause, "hunter2secret") || strings.Contains(logs.String(), "hunter2secret") {
		t.Fatalf("the database password shows in the status or the log: %q", st.DownCause)
	}
	if !strings.Contains(st.DownCause, cluster.Addr()) {
		t.Errorf("the cause %q does not name the database's address %s", st.DownCause, cluster.Addr())
	}

	cluster.Restart(t)
	// Written after the restart, possibly before the follower listens
	// again: it must arrive anyway.
	putAll(t, pg, certs("after", 10))
	waitFor(t, "caught up after the restart", func() bool {
		return served(t, local, "after9.test") == "after9.test" && inStep(t, f, pg)
	})
	if logs.count("fleet: database down") != 1 || logs.count("fleet: database back") != 1 {
		t.Fatalf("want one line down and one back:\n%s", logs)
	}
	if back := logs.String(); !strings.Contains(back, "down_for=") || !strings.Contains(back, "changes_applied=") {
		t.Fatalf("the line back lacks how long and how many changes:\n%s", back)
	}
	if st := f.Status(); !st.DownSince.IsZero() || st.DownCause != "" || st.LagSeconds != 0 {
		t.Fatalf("status after catching up: %+v", st)
	}
}

// A follower stopped in the middle of a sync, its local store closed and
// opened again, resumes at its applied version: every certificate once.
func TestFollowerResumesAfterStop(t *testing.T) {
	ctx := context.Background()
	pg := openPostgres(t, pgtest.New(t))
	const n = 6000
	putAll(t, pg, certs("resume", n))
	dir := t.TempDir()
	local := openBadger(t, dir)
	f := startFollower(t, replica.Config{Source: pg, Replica: local, Batch: 100})
	waitFor(t, "part of the sync applied", func() bool { return f.Status().Applied > 0 })
	f.stop(t)
	mid := f.Status().Applied
	if err := local.Close(); err != nil {
		t.Fatal(err)
	}
	latest, err := pg.LatestVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if mid >= latest {
		t.Logf("the sync finished before it was stopped (applied %d of %d); resuming is trivial", mid, latest)
	}

	local = openBadger(t, dir)
	if v, err := local.AppliedVersion(ctx); err != nil || v != mid {
		t.Fatalf("applied version after reopening: %d, %v; want %d", v, err, mid)
	}
	// Changes while it was stopped, to a record it had and one it had not.
	if err := pg.DeleteCertificate(ctx, "resume0.test"); err != nil {
		t.Fatal(err)
	}
	if err := pg.PutCertificate(ctx, cert("resume5999.test", "www.resume5999.test")); err != nil {
		t.Fatal(err)
	}
	f = startFollower(t, replica.Config{Source: pg, Replica: local, Batch: 100})
	waitFor(t, "caught up after resuming", func() bool { return inStep(t, f, pg) })
	if got := countCerts(t, local); got != n-1 {
		t.Fatalf("%d certificates after resuming, want %d", got, n-1)
	}
	if served(t, local, "resume0.test") != "" || served(t, local, "www.resume5999.test") != "resume5999.test" {
		t.Fatal("a change made while the follower was stopped is missing")
	}
}
