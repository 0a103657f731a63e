package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/jackc/pgx/v5"
)

// TestServeWaitsForDatabase: a fleet host (re)started while PostgreSQL
// is down serves its local copy at once: its certificate endpoint answers
// with what an earlier run copied, /readyz says ready with the database
// down, and an admin write answers 503. It says once that it waits for
// the database (without the URL), comes up fully once the database is
// back (ready with the database up, admin writes accepted), and stops
// cleanly.
func TestServeWaitsForDatabase(t *testing.T) {
	cluster := pgtest.Start(t)
	url := cluster.NewDatabase(t)
	dir := t.TempDir()
	sock := filepath.Join(shortDir(t), "certs.sock")
	cfgPath := fleetConfigFile(t, dir, url, `
[certs]
socket = "`+sock+`"
[challenge]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
`)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	getCert := func(name string) (int, string) {
		resp, err := hc.Get("http://certs/v1/certs/" + name)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	readyz := func(admin string) (int, string) {
		resp, err := http.Get(admin + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	addName := func(admin, name string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, admin+"/v1/domains", strings.NewReader(`{"names":["`+name+`"]}`))
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	type serving struct {
		stderr *syncBuffer
		admin  string
		stop   func() int
	}
	start := func() *serving {
		e, _, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN_TOKEN": testToken})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan int, 1)
		go func() { done <- run(ctx, e, []string{"serve", "--config", cfgPath}) }()
		s := &serving{stderr: stderr, stop: func() int {
			cancel()
			select {
			case code := <-done:
				done <- code
				return code
			case <-time.After(time.Minute):
				t.Fatal("serve did not stop")
				return -1
			}
		}}
		t.Cleanup(func() { s.stop() })
		waitForLong(t, "the start line", func() bool {
			select {
			case code := <-done:
				done <- code
				t.Fatalf("serve exited with %d, want it to serve:\n%s", code, stderr)
			default:
			}
			return strings.Contains(stderr.String(), "certserver started")
		})
		m := regexp.MustCompile(`admin=(http://127\.0\.0\.1:\d+)`).FindStringSubmatch(stderr.String())
		if m == nil {
			t.Fatalf("no admin address in the log:\n%s", stderr)
		}
		s.admin = m[1]
		return s
	}

	// A first run with the database up copies a certificate.
	chain, key := genCert(t, time.Now().Add(30*24*time.Hour), "kept.example.com")
	first := start()
	waitForLong(t, "the first run ready with the database up", func() bool {
		code, body := readyz(first.admin)
		return code == 200 && strings.Contains(body, "database: up")
	})
	cl, err := client.New(first.admin, testToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ImportCertificate(context.Background(), &api.ImportRequest{ChainPEM: string(chain), KeyPEM: string(key)}); err != nil {
		t.Fatalf("import: %v", err)
	}
	waitForLong(t, "the certificate in the local copy", func() bool {
		code, _ := getCert("kept.example.com")
		return code == 200
	})
	// With the database up, the moment before it is open is no outage.
	for _, wrong := range []string{"unreachable at start", "database down", "the fleet's database is unavailable"} {
		if strings.Contains(first.stderr.String(), wrong) {
			t.Errorf("a start with the database up logs %q:\n%s", wrong, first.stderr)
		}
	}
	if code := first.stop(); code != exitOK {
		t.Fatalf("first run: exit code %d:\n%s", code, first.stderr)
	}

	// Restarted with the database down, it serves its copy at once.
	cluster.Stop(t)
	second := start()
	if code, body := getCert("kept.example.com"); code != 200 || !strings.HasPrefix(body, string(chain)) || !strings.HasSuffix(body, string(key)) {
		t.Fatalf("GET the copied certificate with the database down: %d %q, want 200 with it", code, body)
	}
	waitForLong(t, "ready with the database down", func() bool {
		code, body := readyz(second.admin)
		return code == 200 && strings.Contains(body, "database: down")
	})
	if code, body := addName(second.admin, "added.example.com"); code != http.StatusServiceUnavailable || !strings.Contains(body, "unavailable") {
		t.Errorf("an admin write with the database down: %d %s, want 503", code, body)
	}
	if !strings.Contains(second.stderr.String(), "the fleet's database is unavailable: serving the local copy") {
		t.Errorf("the log does not say the host serves its copy while the database is down:\n%s", second.stderr)
	}

	// The database comes back: the host comes up fully by itself.
	cluster.Restart(t)
	waitForLong(t, "ready with the database up", func() bool {
		code, body := readyz(second.admin)
		return code == 200 && strings.Contains(body, "database: up")
	})
	waitForLong(t, "an admin write accepted", func() bool {
		code, _ := addName(second.admin, "added.example.com")
		return code == http.StatusOK || code == http.StatusCreated
	})
	log := second.stderr.String()
	if n := strings.Count(log, "the fleet's database is unavailable"); n != 1 {
		t.Errorf("the wait was logged %d times, want once:\n%s", n, log)
	}
	if !strings.Contains(log, "the fleet's database answers") {
		t.Errorf("the log does not say the database answers:\n%s", log)
	}
	if strings.Contains(log, "postgres://") {
		t.Errorf("the log shows the database URL:\n%s", log)
	}
	if code := second.stop(); code != exitOK {
		t.Errorf("exit code %d after the context ended, want 0:\n%s", code, log)
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

// TestFleetRenewersShare: two fleet hosts that renew share one database,
// and both renew: each one's renewer works under leases in it (the
// wiring: the renewer finds the database's leases below the key
// decorator and the gate), and GET /v1/fleet says it renews.
func TestFleetRenewersShare(t *testing.T) {
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
	renews := func(h *host) bool {
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
		return f.Renews
	}
	for i, h := range hosts {
		host := fmt.Sprintf("host=edge-%d", i+1)
		waitForLong(t, "host "+host+" sharing the due names", func() bool {
			for _, line := range strings.Split(h.stderr.String(), "\n") {
				if strings.Contains(line, "sharing the fleet's due names") && strings.Contains(line, host) {
					return true
				}
			}
			return false
		})
		if !renews(h) {
			t.Errorf("GET /v1/fleet on edge-%d: renews false, want true", i+1)
		}
	}
}

// TestFleetServeOnlyHostChecksOnDemand: a fleet host that does not renew
// still answers on-demand requests: it checks a handshake's name (the
// verdict recorded for the fleet) and adds an allowed name to the
// database, for the renewing hosts to order; a refused name is not added.
func TestFleetServeOnlyHostChecksOnDemand(t *testing.T) {
	url := pgtest.New(t)
	dir := t.TempDir()
	cfgPath := fleetConfigFile(t, dir, url, `renew = false
[certs]
socket = ""
listen = "127.0.0.1:0"
[challenge]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[on_demand]
allow = ["*.shops.example.com"]
`)
	e, _, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN_TOKEN": testToken})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, e, []string{"serve", "--config", cfgPath}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Error("serve did not stop")
		}
	})
	waitForLong(t, "the start line", func() bool {
		select {
		case code := <-done:
			done <- code
			t.Fatalf("serve exited with %d:\n%s", code, stderr)
		default:
		}
		return strings.Contains(stderr.String(), "certserver started")
	})
	log := stderr.String()
	if !strings.Contains(log, "on-demand names checked and recorded for them") {
		t.Errorf("the start line does not say on-demand names are recorded:\n%s", log)
	}
	admin := regexp.MustCompile(`admin=(http://127\.0\.0\.1:\d+)`).FindStringSubmatch(log)
	certs := regexp.MustCompile(`certs_tcp=(127\.0\.0\.1:\d+)`).FindStringSubmatch(log)
	if admin == nil || certs == nil {
		t.Fatalf("no admin or certificate endpoint address in the log:\n%s", log)
	}
	// nginx asks again after its negative_ttl while the name has no
	// certificate: so does the test, since a request made before the
	// database is open is dropped.
	ask := func() {
		for _, name := range []string{"new.shops.example.com", "other.example.com"} {
			resp, err := http.Get("http://" + certs[1] + "/v1/certs/" + name)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 404 {
				t.Fatalf("certificate endpoint for %s: %d, want 404", name, resp.StatusCode)
			}
		}
	}
	var doc api.Domain
	defer func() {
		if t.Failed() {
			t.Logf("serve log:\n%s", stderr)
		}
	}()
	waitForLong(t, "the on-demand name in the fleet's database", func() bool {
		ask()
		code, out, _ := runCLI(t, admin[1], "", "domains", "show", "--json", "new.shops.example.com")
		return code == exitOK && json.Unmarshal([]byte(out), &doc) == nil
	})
	if doc.Source != "on-demand" || doc.State != "pending" {
		t.Errorf("on-demand record %+v, want pending from on-demand", doc)
	}

	// Both verdicts are the fleet's, recorded by this host.
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for name, want := range map[string]string{"new.shops.example.com": "allowed", "other.example.com": "refused"} {
		waitForLong(t, "the verdict on "+name, func() bool {
			var state, host string
			err := conn.QueryRow(t.Context(), "SELECT state, host FROM on_demand_verdicts WHERE name = $1", name).Scan(&state, &host)
			return err == nil && state == want && host == "migrator"
		})
	}
	if code, _, _ := runCLI(t, admin[1], "", "domains", "show", "other.example.com"); code != exitFailure {
		t.Errorf("a refused on-demand name is managed")
	}
}
