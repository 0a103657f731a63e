package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/store/pgtest"
)

// TestServeWaitsForDatabase: a fleet host started while PostgreSQL is
// down waits for it (saying so once, without the URL) instead of failing,
// starts once it is back, is ready with the database up, and stops
// cleanly.
func TestServeWaitsForDatabase(t *testing.T) {
	cluster := pgtest.Start(t)
	url := cluster.NewDatabase(t)
	cluster.Stop(t)
	dir := t.TempDir()
	cfgPath := fleetConfigFile(t, dir, url, `
[certs]
socket = "`+filepath.Join(shortDir(t), "certs.sock")+`"
[challenge]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
`)
	e, _, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN_TOKEN": testToken})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- run(ctx, e, []string{"serve", "--config", cfgPath}) }()

	waitForLong(t, "the wait for the database in the log", func() bool {
		return strings.Contains(stderr.String(), "the fleet's database is unavailable: waiting for it before starting")
	})
	select {
	case code := <-done:
		t.Fatalf("serve exited with %d while the database was down, want it to wait:\n%s", code, stderr)
	default:
	}
	cluster.Restart(t)
	waitForLong(t, "the start line", func() bool { return strings.Contains(stderr.String(), "certserver started") })
	m := regexp.MustCompile(`admin=(http://127\.0\.0\.1:\d+)`).FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no admin address in the log:\n%s", stderr)
	}
	waitForLong(t, "ready with the database up", func() bool {
		resp, err := http.Get(m[1] + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.Contains(string(b), "database: up")
	})
	if n := strings.Count(stderr.String(), "waiting for it before starting"); n != 1 {
		t.Errorf("the wait was logged %d times, want once", n)
	}
	if strings.Contains(stderr.String(), "postgres://") {
		t.Errorf("the log shows the database URL:\n%s", stderr)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("exit code %d after the context ended, want 0:\n%s", code, stderr)
		}
	case <-time.After(time.Minute):
		t.Fatal("serve did not stop")
	}
}

// waitForLong polls cond for up to a minute: PostgreSQL's start on a
// loaded machine, and the retry pause, take seconds.
func waitForLong(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shortDir returns a new directory with a short path, for a unix socket
// (whose path is limited to about 100 bytes), removed when t ends.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cs")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
