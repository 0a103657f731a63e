package pgtest

import (
	"context"
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
