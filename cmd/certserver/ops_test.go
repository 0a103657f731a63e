package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
)

// startAdminWith starts an admin API configured by cfg (Listen and Token
// filled in) over a new Badger store, and returns its URL and the store.
func startAdminWith(t *testing.T, cfg certserver.AdminConfig) (string, store.Store) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	st, err := store.OpenBadger(filepath.Join(t.TempDir(), "store"), store.BadgerOptions{Logger: logger, NoSync: true, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return startAdminOn(t, st, cfg)
}

// startAdminOn starts an admin API configured by cfg (Listen and Token
// filled in) over st, and returns its URL and st.
func startAdminOn(t *testing.T, st store.Store, cfg certserver.AdminConfig) (string, store.Store) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg.Listen, cfg.Token = "127.0.0.1:0", testToken
	a, err := certserver.NewAdminAPI(cfg, st, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return "http://" + a.Addrs()[0].String(), st
}

// putServed stores a self-signed certificate for name expiring at notAfter.
func putServed(t *testing.T, st store.Store, name string, notAfter time.Time) *store.Certificate {
	t.Helper()
	chain, key := genCert(t, notAfter, name)
	c, err := store.ParseCertificate(chain, key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutCertificate(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return c
}

// setDomain changes the record of name.
func setDomain(t *testing.T, st store.Store, name string, change func(*store.Domain)) {
	t.Helper()
	if err := st.UpdateDomain(context.Background(), name, func(d *store.Domain) error { change(d); return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestDomainsListFilters(t *testing.T) {
	url, st := startAdmin(t)
	if code, out, errOut := runCLI(t, url, "", "domains", "add", "shop.example.com", "www.shop.example.com", "blog.example.com", "api.example.net"); code != exitOK {
		t.Fatalf("add: %d %s%s", code, out, errOut)
	}
	putServed(t, st, "shop.example.com", time.Now().Add(3*24*time.Hour))
	putServed(t, st, "blog.example.com", time.Now().Add(60*24*time.Hour))
	setDomain(t, st, "shop.example.com", func(d *store.Domain) { d.State = store.StateValid })
	setDomain(t, st, "blog.example.com", func(d *store.Domain) { d.State = store.StateValid })
	setDomain(t, st, "api.example.net", func(d *store.Domain) {
		d.State, d.Failures, d.LastError = store.StateFailing, 3, "acme dns: NXDOMAIN looking up A for api.example.net"
	})

	tests := []struct {
		desc string
		args []string
		want []string // names listed, in order
		more string   // the next-page hint, "" for none
	}{
		{desc: "failing", args: []string{"--failing"}, want: []string{"api.example.net"}},
		{desc: "state", args: []string{"--state", "valid"}, want: []string{"blog.example.com", "shop.example.com"}},
		{desc: "states", args: []string{"--state", "valid,failing"}, want: []string{"api.example.net", "blog.example.com", "shop.example.com"}},
		{desc: "expiring", args: []string{"--expiring", "7d"}, want: []string{"shop.example.com"}},
		{desc: "match", args: []string{"--match", "shop"}, want: []string{"shop.example.com", "www.shop.example.com"}},
		{desc: "match a page", args: []string{"--match", "shop", "--limit", "1"}, want: []string{"shop.example.com"},
			more: "more: certserver domains ls --limit 1 --match shop --after shop.example.com"},
		{desc: "all pages", args: []string{"--match", "shop", "--limit", "1", "--all"}, want: []string{"shop.example.com", "www.shop.example.com"}},
		{desc: "no match", args: []string{"--match", "nothing"}, want: nil},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			code, out, errOut := runCLI(t, url, "", append([]string{"domains", "ls"}, tc.args...)...)
			if code != exitOK {
				t.Fatalf("exit code %d: %s", code, errOut)
			}
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
				got = append(got, strings.Fields(l)[0])
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("listed %q, want %q\n%s", got, tc.want, out)
			}
			if strings.TrimSpace(errOut) != tc.more {
				t.Errorf("stderr %q, want %q", errOut, tc.more)
			}
			// --json parses back to the same names.
			code, out, _ = runCLI(t, url, "", append([]string{"domains", "ls", "--json"}, tc.args...)...)
			var l api.DomainList
			if err := json.Unmarshal([]byte(out), &l); code != exitOK || err != nil {
				t.Fatalf("--json: %d %v\n%s", code, err, out)
			}
			got = nil
			for _, d := range l.Domains {
				got = append(got, d.Name)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || (l.Next != "") != (tc.more != "") {
				t.Errorf("--json: %q next %q", got, l.Next)
			}
		})
	}
	row := func(out, name string) string {
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, name+" ") {
				return l
			}
		}
		return ""
	}
	_, out, _ := runCLI(t, url, "", "domains", "ls", "--failing")
	if r := row(out, "api.example.net"); !strings.Contains(r, "failing") || !strings.Contains(r, "acme dns: NXDOMAIN") {
		t.Errorf("failing row %q", r)
	}
	code, _, errOut := runCLI(t, url, "", "domains", "ls", "--expiring", "soon")
	if code != exitUsage || !strings.Contains(errOut, `invalid value "soon" for flag -expiring: want a whole number of days (7d) or a duration (72h, 90m)`) {
		t.Errorf("bad window: %d %q", code, errOut)
	}
	code, _, errOut = runCLI(t, url, "", "domains", "ls", "--state", "broken")
	if code != exitUsage || !strings.Contains(errOut, `unknown state "broken": want one or more of`) {
		t.Errorf("bad state: %d %q", code, errOut)
	}
}

// stepClock is a clock that moves step forward on every reading.
type stepClock struct {
	mu   sync.Mutex
	now  time.Time
	step time.Duration
}

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(c.step)
	return c.now
}

func TestDomainsAddProgress(t *testing.T) {
	url, st := startAdmin(t)
	file := filepath.Join(t.TempDir(), "names.txt")
	var b strings.Builder
	for i := range 3000 {
		fmt.Fprintf(&b, "host-%04d.example.com\n", i)
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string, string) {
		e, stdout, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN": url, "CERTSERVER_ADMIN_TOKEN": testToken})
		// Every reading of the clock is 2s after the one before: a line
		// every third batch or so.
		e.now = (&stepClock{now: time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC), step: 2 * time.Second}).Now
		code := run(context.Background(), e, append([]string{"domains", "add"}, args...))
		return code, stdout.String(), stderr.String()
	}

	// Not a terminal: plain lines, the last one at the end.
	code, out, errOut := run("--file", file, "--batch", "500")
	if code != exitOK || !strings.Contains(out, "3000 added, 0 existing, 0 invalid") {
		t.Fatalf("exit code %d\n%s%s", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	re := regexp.MustCompile(`^sent (\d+)/3000 names \((\d+)%\), (\d+) names/s$`)
	for _, l := range lines {
		if !re.MatchString(l) {
			t.Errorf("progress line %q does not match %s", l, re)
		}
	}
	// The clock moves 2s a reading: a line every third batch, the last
	// one after 12s.
	if want := "sent 1500/3000 names (50%), 250 names/s\nsent 3000/3000 names (100%), 250 names/s\n"; errOut != want {
		t.Errorf("progress:\n%s\nwant\n%s", errOut, want)
	}
	if strings.Contains(errOut, "\r") {
		t.Error("a carriage return in lines mode")
	}
	ds, _ := st.ListDomains(context.Background(), "", 5000)
	if len(ds) != 3000 {
		t.Errorf("%d names stored", len(ds))
	}

	// The bar, asked for; smaller batches.
	code, out, errOut = run("--file", file, "--progress", "bar", "--batch", "500")
	if code != exitOK || !strings.Contains(out, "0 added, 3000 existing") {
		t.Fatalf("bar: exit code %d\n%s%s", code, out, errOut)
	}
	if n := strings.Count(errOut, "\r["); n != 7 || !strings.Contains(errOut, "\r[##############################] 3000/3000 names 100% ") || !strings.HasSuffix(errOut, "names/s \n") {
		t.Errorf("bar: %d redraws, want 7 (6 batches and the end):\n%q", n, errOut)
	}
	// Standard input shows progress too; --progress none and names given
	// as arguments do not.
	for _, args := range [][]string{{"--file", file, "--progress", "none"}, {"a.example.com"}} {
		if code, _, errOut := run(args...); code != exitOK || errOut != "" {
			t.Errorf("%q: exit code %d, stderr %q, want no progress", args, code, errOut)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--file", file, "--progress", "fancy"}, "--progress must be auto, bar, lines or none"},
		{[]string{"--file", file, "--batch", "-1"}, "--batch must be from 1 to 100000"},
	} {
		if code, _, errOut := run(tc.args...); code != exitUsage || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit code %d, stderr %q", tc.args, code, errOut)
		}
	}
}

func TestBatchSize(t *testing.T) {
	for _, tc := range []struct{ total, want int }{
		{1, 1000}, {3000, 1000}, {40000, 2000}, {500000, 25000}, {5000000, 100000},
	} {
		if got := batchSize(tc.total); got != tc.want {
			t.Errorf("batchSize(%d) = %d, want %d", tc.total, got, tc.want)
		}
	}
}

// fixedQueue is a renewer that always reports the same work.
type fixedQueue struct{}

func (fixedQueue) InFlight() int       { return 2 }
func (fixedQueue) Throughput() float64 { return 0.5 }

func TestQueueCommand(t *testing.T) {
	url, st := startAdminWith(t, certserver.AdminConfig{Queue: fixedQueue{}})
	if code, _, errOut := runCLI(t, url, "", "domains", "add", "a.example.com", "b.example.com", "c.example.com"); code != exitOK {
		t.Fatal(errOut)
	}
	setDomain(t, st, "c.example.com", func(d *store.Domain) { d.NextAttempt = time.Now().Add(30 * time.Minute) })

	code, out, errOut := runCLI(t, url, "", "queue")
	if code != exitOK {
		t.Fatalf("exit code %d: %s", code, errOut)
	}
	for _, re := range []string{
		`due now +2\n`, `due within an hour +3\n`, `due within a day +3\n`, `in flight +2\n`,
		`throughput +0\.50 names/s \(last 15 minutes\)\n`, `backlog done +\S+Z \(in 4s\)\n`, `pending +3\n`, `failing +0\n`,
		`names by state +pending 3, issuing 0, valid 0, renewing 0, failing 0, given_up 0, removed 0 \(3 names\)\n`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %q:\n%s", re, out)
		}
	}
	code, out, _ = runCLI(t, url, "", "queue", "--json")
	var q api.Queue
	if err := json.Unmarshal([]byte(out), &q); code != exitOK || err != nil || q.DueNow.N != 2 || q.InFlight != 2 || !q.Issuance {
		t.Errorf("--json: %d %v %+v", code, err, q)
	}

	// Without a renewer.
	url, _ = startAdmin(t)
	if code, out, _ := runCLI(t, url, "", "queue"); code != exitOK || !strings.Contains(out, "renewer  ") || !strings.Contains(out, "off (acme.directory is not set)") {
		t.Errorf("no renewer: %d\n%s", code, out)
	}
	if code, _, errOut := runCLI(t, url, "", "queue", "extra"); code != exitUsage || !strings.Contains(errOut, `unexpected argument "extra"`) {
		t.Errorf("argument: %d %q", code, errOut)
	}
}

func TestStatusCommand(t *testing.T) {
	url, st := startAdminWith(t, certserver.AdminConfig{Queue: fixedQueue{}, StateCountTTL: -1})
	if code, _, errOut := runCLI(t, url, "", "domains", "add", "a.example.com", "b.example.com"); code != exitOK {
		t.Fatal(errOut)
	}
	for _, n := range []string{"a.example.com", "b.example.com"} {
		c := putServed(t, st, n, time.Now().Add(60*24*time.Hour))
		setDomain(t, st, n, func(d *store.Domain) {
			d.State, d.CertID, d.NextAttempt = store.StateValid, c.ID, time.Now().Add(40*24*time.Hour)
		})
	}

	code, out, errOut := runCLI(t, url, "", "status")
	if code != exitOK {
		t.Fatalf("healthy: exit code %d\n%s%s", code, out, errOut)
	}
	for _, w := range []string{"certserver at " + url, "NAMES     pending 0, issuing 0, valid 2", "QUEUE     due now 0, within 1h 0, within 24h 0; 2 in flight; 0.50 names/s; backlog done: nothing is due",
		"FAILING   0\n", "EXPIRING  0 within 7d\n", "VERDICT   ok\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("healthy: output lacks %q:\n%s", w, out)
		}
	}

	// A failing name, and two certificates that expire within a week.
	if code, _, errOut := runCLI(t, url, "", "domains", "add", "broken.example.com", "soon.example.com", "sooner.example.com", "gone.example.com"); code != exitOK {
		t.Fatal(errOut)
	}
	setDomain(t, st, "broken.example.com", func(d *store.Domain) {
		d.State, d.Failures, d.LastError, d.FailingSince = store.StateFailing, 4, "acme caa: CAA record forbids issuance", time.Now().Add(-50*time.Hour)
	})
	putServed(t, st, "soon.example.com", time.Now().Add(5*24*time.Hour))
	putServed(t, st, "sooner.example.com", time.Now().Add(2*24*time.Hour))
	putServed(t, st, "gone.example.com", time.Now().Add(24*time.Hour))
	setDomain(t, st, "gone.example.com", func(d *store.Domain) { d.State, d.NextAttempt = store.StateRemoved, time.Time{} })

	code, out, _ = runCLI(t, url, "", "status")
	if code != exitAttention {
		t.Errorf("attention: exit code %d, want %d", code, exitAttention)
	}
	for _, re := range []string{
		`FAILING   1\n  NAME +FAILURES +SINCE +NEXT-ATTEMPT +LAST-ERROR\n  broken\.example\.com +4 +2d ago +\S+ \S+ +acme caa: CAA record forbids issuance\n`,
		`EXPIRING  2 within 7d\n  NAME +NOT-AFTER +STATE +LAST-ERROR\n  sooner\.example\.com +\S+ \(in 47h\) +pending +-\n  soon\.example\.com +\S+ \(in 4d\) +pending +-\n`,
		`VERDICT   attention: 1 name failing; 2 certificates expiring within 7d\n`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("attention: output does not match %q:\n%s", re, out)
		}
	}
	if strings.Contains(out, "gone.example.com") {
		t.Errorf("a removed name is reported:\n%s", out)
	}
	if code, _, _ := runCLI(t, url, "", "status", "--warn", "24h"); code != exitAttention {
		t.Errorf("--warn 24h: exit code %d (broken is still failing)", code)
	}

	code, out, _ = runCLI(t, url, "", "status", "--json")
	var rep statusReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitAttention {
		t.Fatalf("--json: %d %v\n%s", code, err, out)
	}
	if rep.FailingCount.N != 1 || len(rep.Failing) != 1 || rep.Failing[0].LastError == "" || rep.ExpiringCount.N != 2 ||
		rep.Expiring[0].Name != "sooner.example.com" || len(rep.Attention) != 2 || rep.Queue == nil || rep.Queue.States["valid"] != 2 {
		t.Errorf("--json: %+v", rep)
	}

	// It cannot tell: exit 3.
	if code, _, errOut := runCLI(t, "http://127.0.0.1:1", "", "status"); code != exitUnknown || !strings.Contains(errOut, "is `certserver serve` running?") {
		t.Errorf("unreachable: exit code %d, %q", code, errOut)
	}
	e, _, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN": url, "CERTSERVER_ADMIN_TOKEN": "wrong"})
	if code := run(context.Background(), e, []string{"status"}); code != exitUnknown || !strings.Contains(stderr.String(), "refused the token") {
		t.Errorf("wrong token: exit code %d, %q", code, stderr)
	}
	if code, _, errOut := runCLI(t, url, "", "status", "--warn", "soon"); code != exitUsage || !strings.Contains(errOut, `invalid value "soon" for flag -warn`) {
		t.Errorf("bad window: exit code %d, %q", code, errOut)
	}
}

func TestRevokeCommandLine(t *testing.T) {
	url, _ := startAdmin(t)
	if code, _, errOut := runCLI(t, url, "", "domains", "add", "a.example.com"); code != exitOK {
		t.Fatal(errOut)
	}
	tests := []cliCase{
		{desc: "help", args: []string{"domains", "revoke", "--help"}, code: exitOK, stdout: "keyCompromise (1)"},
		{desc: "no reason", args: []string{"domains", "revoke", "a.example.com"}, code: exitUsage, stderr: "--reason is required"},
		{desc: "no name", args: []string{"domains", "revoke", "--reason", "1"}, code: exitUsage, stderr: "no NAME given"},
		{desc: "unknown reason", args: []string{"domains", "revoke", "--reason", "stolen", "a.example.com"}, code: exitUsage, stderr: `unknown revocation reason "stolen"`},
		{desc: "issuance off", args: []string{"domains", "revoke", "--reason", "superseded", "a.example.com"}, code: exitFailure, stderr: "revocation is off"},
		{desc: "rm with a bad reason", args: []string{"domains", "rm", "--revoke", "x", "a.example.com"}, code: exitUsage, stderr: `unknown revocation reason "x"`},
		{desc: "rm with issuance off", args: []string{"domains", "rm", "--revoke", "4", "a.example.com"}, code: exitFailure, stderr: "revocation is off"},
		{desc: "rm --json", args: []string{"domains", "rm", "--json", "a.example.com"}, code: exitOK, stdout: `"state": "removed"`},
		{desc: "queue help", args: []string{"queue", "--help"}, code: exitOK, stdout: "backlog done"},
		{desc: "status help", args: []string{"status", "--help"}, code: exitOK, stdout: "3 the status is unknown"},
		{desc: "top help", args: []string{"help"}, code: exitOK, stdout: "one-screen summary"},
	}
	runCases(t, tests, func(t *testing.T, args []string) (int, string, string) { return runCLI(t, url, "", args...) })
}

// restingQueue is a renewer whose first CA rests after failures.
type restingQueue struct{ fixedQueue }

func (restingQueue) CAs() []api.CAStatus {
	return []api.CAStatus{
		{Name: "letsencrypt", Orders: 5, Issued: 1, Failed: 4, FailureStreak: 4, RestingUntil: time.Now().Add(10*time.Minute + 30*time.Second)},
		{Name: "zerossl", Orders: 2, Issued: 2},
	}
}

// TestStatusRestingCA: `status` lists the CAs and calls a resting one to
// attention, like the status page.
func TestStatusRestingCA(t *testing.T) {
	url, _ := startAdminWith(t, certserver.AdminConfig{Queue: restingQueue{}, StateCountTTL: -1})
	code, out, errOut := runCLI(t, url, "", "status")
	if code != exitAttention {
		t.Fatalf("exit code %d, want %d\n%s%s", code, exitAttention, out, errOut)
	}
	for _, re := range []string{
		`\nCAS       letsencrypt 5 sent, 1 issued, 4 failed, resting until \S+Z \(in 10m\); zerossl 2 sent, 2 issued, 0 failed\n`,
		`\nVERDICT   attention: CA letsencrypt resting after 4 failures in a row\n`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %q:\n%s", re, out)
		}
	}
}
