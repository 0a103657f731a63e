package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
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

// TestFleetOneActiveRenewer: two fleet hosts that renew share one
// database; exactly one says it is the fleet's active renewer in
// GET /v1/fleet, each logs gaining the role once, and when the holder
// stops the other takes the role over.
func TestFleetOneActiveRenewer(t *testing.T) {
	url := pgtest.New(t)
	type host struct {
		cancel context.CancelFunc
		done   chan int
		stderr interface{ String() string }
		admin  string
	}
	var hosts [2]*host
	for i := range hosts {
		dir := t.TempDir()
		cfgPath := fleetConfigFile(t, dir, url, fmt.Sprintf(`
[certs]
socket = "%s"
[challenge]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[acme]
directory = "https://127.0.0.1:9/directory"
agree_terms = true
`, filepath.Join(shortDir(t), "certs.sock")))
		// Each host its own name in the fleet.
		b, err := os.ReadFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfgPath, []byte(strings.Replace(string(b), `host_name = "migrator"`, fmt.Sprintf(`host_name = "edge-%d"`, i+1), 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		e, _, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN_TOKEN": testToken})
		ctx, cancel := context.WithCancel(context.Background())
		h := &host{cancel: cancel, done: make(chan int, 1), stderr: stderr}
		hosts[i] = h
		go func() { h.done <- run(ctx, e, []string{"serve", "--config", cfgPath}) }()
		t.Cleanup(func() {
			cancel()
			select {
			case <-h.done:
			case <-time.After(time.Minute):
				t.Error("serve did not stop")
			}
		})
		waitForLong(t, "the start line", func() bool {
			select {
			case code := <-h.done:
				h.done <- code // for the cleanup
				t.Fatalf("serve exited with %d:\n%s", code, stderr)
			default:
			}
			return strings.Contains(stderr.String(), "certserver started")
		})
		m := regexp.MustCompile(`admin=(http://127\.0\.0\.1:\d+)`).FindStringSubmatch(stderr.String())
		if m == nil {
			t.Fatalf("no admin address in the log:\n%s", stderr)
		}
		h.admin = m[1]
	}
	active := func(h *host) bool {
		req, _ := http.NewRequest(http.MethodGet, h.admin+"/v1/fleet", nil)
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var f api.Fleet
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&f) != nil {
			return false
		}
		return f.ActiveRenewer
	}
	gained := func(h *host) int { return strings.Count(h.stderr.String(), "is the fleet's renewer now") }
	waitForLong(t, "one host holding the renewer role", func() bool { return gained(hosts[0])+gained(hosts[1]) == 1 })
	first := 0
	if gained(hosts[1]) == 1 {
		first = 1
	}
	holder, other := hosts[first], hosts[1-first]
	if !active(holder) || active(other) {
		t.Fatalf("GET /v1/fleet: active_renewer %v on the holder, %v on the other; want true and false", active(holder), active(other))
	}

	holder.cancel()
	select {
	case code := <-holder.done:
		if code != exitOK {
			t.Errorf("the holder exited with %d:\n%s", code, holder.stderr)
		}
	case <-time.After(time.Minute):
		t.Fatal("the holder did not stop")
	}
	holder.done <- exitOK // for the cleanup
	waitForLong(t, "the other host taking the role over", func() bool { return active(other) })
	if n := gained(other); n != 1 {
		t.Errorf("the other host logged gaining the role %d times, want once:\n%s", n, other.stderr)
	}
}
