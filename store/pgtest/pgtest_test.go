package pgtest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

func query(t *testing.T, url, sql string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var s string
	err = conn.QueryRow(ctx, sql).Scan(&s)
	return s, err
}

func run(t *testing.T, url, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestNewGivesEachTestItsOwnDatabase(t *testing.T) {
	a, b := New(t), New(t)
	if a == b {
		t.Fatalf("two databases with one URL %s", a)
	}
	for _, u := range []string{a, b} {
		run(t, u, "CREATE TABLE t (x int)")
	}
	v, err := query(t, a, "SHOW server_version")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL %s at %s", v, a)
	addr, err := query(t, a, "SELECT inet_server_addr()::text")
	if err != nil {
		t.Fatal(err)
	}
	if addr != "127.0.0.1/32" {
		t.Errorf("server address %s, want 127.0.0.1 only", addr)
	}
}

func TestDatabaseIsDroppedAfterTheTest(t *testing.T) {
	var url string
	t.Run("uses", func(t *testing.T) {
		url = New(t)
		if _, err := query(t, url, "SELECT current_database()::text"); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := query(t, url, "SELECT 'x'"); err == nil {
		t.Fatalf("database %s still exists after its test", url)
	}
}

func TestStopAndRestart(t *testing.T) {
	c := Start(t)
	url := c.NewDatabase(t)
	run(t, url, "CREATE TABLE kept (x text); INSERT INTO kept VALUES ('here')")
	c.Stop(t)
	if c.Running() {
		t.Fatal("Running after Stop")
	}
	if _, err := query(t, url, "SELECT 'x'"); err == nil {
		t.Fatal("a query succeeded while the cluster was stopped")
	}
	c.Restart(t)
	got, err := query(t, url, "SELECT x FROM kept")
	if err != nil {
		t.Fatal(err)
	}
	if got != "here" {
		t.Fatalf("after restart: %q, want the row written before", got)
	}
}

// A later test binary's sweep leaves the cluster of a test that runs,
// however old its directory and though the test has stopped it, and a
// directory a binary has only begun to make; it removes one whose test
// binary is gone.
func TestSweepLeavesTheClustersOfRunningTests(t *testing.T) {
	tmp := t.TempDir()
	// Under root the cluster runs as nobody, who must reach its directory.
	for _, d := range []string{filepath.Dir(tmp), tmp} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("TMPDIR", tmp)
	c := Start(t)
	url := c.NewDatabase(t)
	run(t, url, "CREATE TABLE kept (x text); INSERT INTO kept VALUES ('here')")
	c.Stop(t)
	old := time.Now().Add(-2 * staleAge)
	if err := os.Chtimes(c.dir, old, old); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(tmp, "pgtest-gone") // its owner file unlocked
	if err := os.MkdirAll(filepath.Join(gone, "data"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gone, ownerFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	young := filepath.Join(tmp, "pgtest-young") // no owner file yet
	if err := os.Mkdir(young, 0o700); err != nil {
		t.Fatal(err)
	}

	sweepStale()
	for dir, want := range map[string]bool{c.dir: true, gone: false, young: true} {
		if _, err := os.Stat(dir); (err == nil) != want {
			t.Errorf("after the sweep, %s exists: %v, want %v", dir, err == nil, want)
		}
	}
	c.Restart(t)
	if got, err := query(t, url, "SELECT x FROM kept"); err != nil || got != "here" {
		t.Fatalf("after the sweep and a restart: %q, %v; want the row written before", got, err)
	}
}
