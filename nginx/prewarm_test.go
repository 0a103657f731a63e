package nginx_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
	"github.com/certserver/certserver/store/certtest"
)

// workerStats reads the Lua module's stats() from every worker of ngx
// (started with Options.Stats): requests for nginxtest.StatsPath over new
// connections, until each worker has answered one. It returns, by worker
// process ID, the count of each step.
func workerStats(ngx *nginxtest.Nginx) (map[string]map[string]int, error) {
	all := make(map[string]map[string]int)
	for i := range maxSweep {
		pid, stats, err := statsOnce(ngx.HTTPSAddr())
		if err != nil {
			return nil, fmt.Errorf("stats request %d: %w", i+1, err)
		}
		all[pid] = stats
		if len(all) == ngx.Workers() {
			return all, nil
		}
	}
	return nil, fmt.Errorf("%d stats requests reached %d of %d workers", maxSweep, len(all), ngx.Workers())
}

// statsOnce asks addr for nginxtest.StatsPath over a new TLS connection
// without SNI (no certificate is looked up for it), the counts only, and
// returns the worker's process ID and the count of each step.
func statsOnce(addr string) (string, map[string]int, error) {
	body, pid, err := statsBody(addr, nginxtest.StatsPath+"?counts=1")
	if err != nil {
		return "", nil, err
	}
	steps, err := nginxtest.ParseStats(body)
	if err != nil {
		return "", nil, err
	}
	counts := make(map[string]int, len(steps))
	for step, st := range steps {
		counts[step] = st.N
	}
	return pid, counts, nil
}

// statsBody asks addr for path (nginxtest.StatsPath, with its query) as
// statsOnce does and returns the answer and the process ID of the worker
// that gave it.
func statsBody(addr, path string) (string, string, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true, SessionTicketsDisabled: true})
	if err != nil {
		return "", "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: stats\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("%s answered %s", path, resp.Status)
	}
	return string(body), resp.Header.Get(nginxtest.WorkerHeader), nil
}

// statsSum reads every worker's counts and returns their sums.
func statsSum(t testing.TB, ngx *nginxtest.Nginx) map[string]int {
	t.Helper()
	all, err := workerStats(ngx)
	if err != nil {
		t.Fatal(err)
	}
	sum := make(map[string]int)
	for _, stats := range all {
		for k, v := range stats {
			sum[k] += v
		}
	}
	return sum
}

// feedsRunning waits until every worker of ngx has polled the change
// feed twice: the first poll of nginx revalidates what its first
// handshakes cached, which would blur counts of parses taken after.
func feedsRunning(t testing.TB, ngx *nginxtest.Nginx) {
	t.Helper()
	eventually(t, 15*time.Second, "every worker polls the change feed", func() error {
		all, err := workerStats(ngx)
		if err != nil {
			return err
		}
		for pid, stats := range all {
			if stats["feed_poll"] < 2 {
				return fmt.Errorf("worker %s polled %d times", pid, stats["feed_poll"])
			}
		}
		return nil
	})
}

// pollsTwice waits until every worker of ngx has polled the change feed
// twice from now: the second poll was asked after what the caller changed
// before (what), which every worker has then seen.
func pollsTwice(t *testing.T, ngx *nginxtest.Nginx, what string) {
	t.Helper()
	polled, err := workerStats(ngx)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 3*time.Minute, "every worker polls the change feed twice after "+what, func() error {
		all, err := workerStats(ngx)
		if err != nil {
			return err
		}
		for pid, st := range all {
			if n := st["feed_poll"] - polled[pid]["feed_poll"]; n < 2 {
				return fmt.Errorf("worker %s polled %d times", pid, n)
			}
		}
		return nil
	})
}

// startPrewarm starts nginx (workers, 0 for nginxtest's default) with the
// Lua module's stats, configure's options and a fallback of ca's in front
// of a fake sidecar answering in the leaf format, as the sidecar does,
// and waits for every worker's change feed: what the pre-warm tests start
// from. It returns the fallback's leaf too.
func startPrewarm(t *testing.T, ca *testCA, workers int, configure string) (*fakeSidecar, *nginxtest.Nginx, leaf) {
	t.Helper()
	fallback := ca.issue(t, "fallback.invalid")
	fbCert, fbKey := fallback.writeFiles(t, t.TempDir(), "fallback")
	side := startFakeSidecar(t)
	side.leafFormat = true
	ngx := nginxtest.Start(t, nginxtest.Options{
		Sidecar: "unix:" + side.sock, FallbackCert: fbCert, FallbackKey: fbKey, Stats: true, Workers: workers,
		Configure: configure,
	})
	feedsRunning(t, ngx)
	return side, ngx, fallback
}

// TestLuaPrewarm: when the change feed names a certificate the workers
// serve, they fetch and parse the new one in a timer, off the handshake
// path, and serve the old one until it is swapped in; one worker asks
// the sidecar, the others take its answer from the shared dict; a wave
// of renewals is worked through one name at a time per worker.
func TestLuaPrewarm(t *testing.T) {
	ca := newTestCA(t)
	// No name is dropped for waiting in the queue, for a fetch slower
	// than a timeout, or for another worker's fetch outlasting the lock,
	// however slow the machine: the wave below counts on every name being
	// pre-warmed.
	side, ngx, fallback := startPrewarm(t, ca, 0, "prewarm_wait = 3600,"+patient)

	// A long bound: a loaded machine is slow, and only a hang should fail.
	within := func(t *testing.T, what string, cond func() error) {
		t.Helper()
		start := time.Now()
		eventually(t, 3*time.Minute, what, cond)
		t.Logf("%s after %v", what, time.Since(start).Round(10*time.Millisecond))
	}

	t.Run("a renewed certificate is swapped in with no parse on the handshake path", func(t *testing.T) {
		old, renewed := ca.issue(t, "renewed.test"), ca.issue(t, "renewed.test")
		side.set("renewed.test", certAnswer(old, 3600))
		must(t, allServe(ngx, "renewed.test", old.serial))
		before := statsSum(t, ngx)
		side.change("renewed.test", certAnswer(renewed, 3600))
		within(t, "every worker serves the new certificate", allServe(ngx, "renewed.test", renewed.serial))
		after := statsSum(t, ngx)
		if d := after["parse_handshake"] - before["parse_handshake"]; d != 0 {
			t.Errorf("%d parses on the handshake path after the renewal, want 0", d)
		}
		if d := after["parse_timer"] - before["parse_timer"]; d != ngx.Workers() {
			t.Errorf("%d parses in timers, want one per worker (%d)", d, ngx.Workers())
		}
		if h := side.hitsFor("renewed.test"); h != 2 {
			t.Errorf("sidecar asked %d times for renewed.test, want 2 (the first handshake, then one pre-warm for all workers)", h)
		}
	})

	t.Run("a removed certificate gives way to the fallback", func(t *testing.T) {
		l := ca.issue(t, "removed-prewarm.test")
		side.set("removed-prewarm.test", certAnswer(l, 3600))
		must(t, allServe(ngx, "removed-prewarm.test", l.serial))
		side.change("removed-prewarm.test", answer{status: 404, maxAge: 10})
		within(t, "every worker serves the fallback", allServe(ngx, "removed-prewarm.test", fallback.serial))
	})

	t.Run("from a sidecar without marks, a removed certificate gives way to the fallback by its pre-warm", func(t *testing.T) {
		// As from a sidecar older than the marks (or a name its lookups
		// had no time for): the change comes plain, the name is queued
		// as a renewal, and the pre-warm's 404 swaps in the fallback.
		side.mu.Lock()
		side.noMarks = true
		side.mu.Unlock()
		defer func() {
			side.mu.Lock()
			side.noMarks = false
			side.mu.Unlock()
		}()
		l := ca.issue(t, "removed-nomarks.test")
		side.set("removed-nomarks.test", certAnswer(l, 3600))
		must(t, allServe(ngx, "removed-nomarks.test", l.serial))
		before := statsSum(t, ngx)
		side.change("removed-nomarks.test", answer{status: 404, maxAge: 10})
		within(t, "every worker serves the fallback", allServe(ngx, "removed-nomarks.test", fallback.serial))
		after := statsSum(t, ngx)
		if d := after["feed_gone"] - before["feed_gone"]; d != 0 {
			t.Errorf("%d names dropped as marked gone, want none from a sidecar without marks", d)
		}
		pw := func(st map[string]int) int {
			return st["prewarm_fetched"] + st["prewarm_loaded"] + st["prewarm_dropped"]
		}
		if d := pw(after) - pw(before); d != ngx.Workers() {
			t.Errorf("%d names pre-warmed, want one per worker (%d)", d, ngx.Workers())
		}
	})

	t.Run("a renewal the sidecar fails to answer keeps the old certificate served", func(t *testing.T) {
		old, renewed := ca.issue(t, "failing.test"), ca.issue(t, "failing.test")
		side.set("failing.test", certAnswer(old, 3600))
		must(t, allServe(ngx, "failing.test", old.serial))
		before := statsSum(t, ngx)["prewarm_dropped"]
		side.change("failing.test", answer{status: 503, maxAge: -1})
		within(t, "every worker gave up pre-warming", func() error {
			if n := statsSum(t, ngx)["prewarm_dropped"] - before; n < ngx.Workers() {
				return fmt.Errorf("%d of %d workers gave up", n, ngx.Workers())
			}
			return nil
		})
		// Never the fallback, which covers nothing.
		must(t, allServe(ngx, "failing.test", old.serial))
		side.set("failing.test", certAnswer(renewed, 3600))
		within(t, "every worker serves the new certificate once the sidecar answers", allServe(ngx, "failing.test", renewed.serial))
	})

	t.Run("a queued name whose max-age lapses is served its old certificate without asking", func(t *testing.T) {
		// The sidecar answers a certificate due for renewal with a short
		// max-age (MinAge, 10 s); here 0, lapsed at once. blocker and
		// first are the names the two workers' pre-warms fetch first,
		// held by the sidecar; the others wait in both queues.
		names := []string{"blocker-lapse.test", "first-lapse.test", "lapse0.test", "lapse1.test"}
		old, renewed := make(map[string]leaf), make(map[string]leaf)
		for _, name := range names {
			old[name], renewed[name] = ca.issue(t, name), ca.issue(t, name)
			side.set(name, certAnswer(old[name], 0))
			must(t, allServe(ngx, name, old[name].serial))
		}
		before := statsSum(t, ngx)
		release := side.holdCerts(t)
		for _, name := range names[1:] {
			side.set(name, certAnswer(renewed[name], 3600))
		}
		side.change(names[0], certAnswer(renewed[names[0]], 3600), names...)
		side.certsHeld(t, ngx.Workers())
		for _, name := range names[2:] {
			hits := side.hitsFor(name)
			must(t, allServe(ngx, name, old[name].serial))
			if h := side.hitsFor(name) - hits; h != 0 {
				t.Errorf("%s asked %d times by handshakes while it waited in the pre-warm queue, want 0", name, h)
			}
		}
		release()
		for _, name := range names {
			within(t, "every worker serves the new certificate of "+name, allServe(ngx, name, renewed[name].serial))
		}
		after := statsSum(t, ngx)
		if d := after["parse_handshake"] - before["parse_handshake"]; d != 0 {
			t.Errorf("%d parses on the handshake path after the renewal, want 0", d)
		}
	})

	// Enough names, each answered slowly, that unbounded fetches would
	// overlap; the 200- and 1000-name waves are BenchmarkRenewalWave's.
	t.Run("a wave of renewals is pre-warmed one name at a time per worker", func(t *testing.T) {
		const wave = 20
		names := make([]string, wave)
		old, renewed := make(map[string]leaf, wave), make(map[string]leaf, wave)
		for i := range names {
			names[i] = fmt.Sprintf("wave%d.test", i)
			old[names[i]], renewed[names[i]] = ca.issue(t, names[i]), ca.issue(t, names[i])
			side.set(names[i], certAnswer(old[names[i]], 3600))
		}
		for _, name := range names {
			must(t, allServe(ngx, name, old[name].serial))
		}
		before := statsSum(t, ngx)
		perWorker, err := workerStats(ngx)
		if err != nil {
			t.Fatal(err)
		}
		hitsBefore := side.totalHits()
		side.resetInflight()
		answers := make(map[string]answer, wave)
		for name, l := range renewed {
			a := certAnswer(l, 3600)
			// Slow enough that unbounded fetches would pile up.
			a.delay = 5 * time.Millisecond
			answers[name] = a
		}
		// The first answers are held until every worker asks for one:
		// the worker that came second found the first name locked by
		// the other and put it back in its queue (see prewarm_one).
		release := side.holdCerts(t)
		side.changeAll(answers)
		side.certsHeld(t, ngx.Workers())
		release()
		within(t, "every worker pre-warmed every renewed name", func() error {
			stats := statsSum(t, ngx)
			if n := stats["prewarm_fetched"] + stats["prewarm_loaded"] + stats["prewarm_dropped"] -
				before["prewarm_fetched"] - before["prewarm_loaded"] - before["prewarm_dropped"]; n < wave*ngx.Workers() {
				return fmt.Errorf("%d of %d names pre-warmed", n, wave*ngx.Workers())
			}
			return nil
		})
		most := side.resetInflight()
		hits := side.totalHits() - hitsBefore
		for _, name := range names {
			must(t, allServe(ngx, name, renewed[name].serial))
		}
		after := statsSum(t, ngx)
		if d := after["parse_handshake"] - before["parse_handshake"]; d != 0 {
			t.Errorf("%d parses on the handshake path after the wave, want 0", d)
		}
		if d := after["prewarm_dropped"] - before["prewarm_dropped"]; d != 0 {
			t.Errorf("%d names dropped instead of pre-warmed", d)
		}
		if hits != wave {
			t.Errorf("sidecar asked %d times for the %d renewed names, want once each", hits, wave)
		}
		if d := after["prewarm_requeued"] - before["prewarm_requeued"]; d == 0 {
			t.Errorf("no name put back in a pre-warm queue, want at least one")
		}
		// Each worker loaded every name once, requeued or not.
		afterWorker, err := workerStats(ngx)
		if err != nil {
			t.Fatal(err)
		}
		for pid, st := range afterWorker {
			b := perWorker[pid]
			if n := st["prewarm_fetched"] + st["prewarm_loaded"] - b["prewarm_fetched"] - b["prewarm_loaded"]; n != wave {
				t.Errorf("worker %s fetched or loaded %d names, want each of the %d once", pid, n, wave)
			}
		}
		// One at a time per worker (see prewarm_run).
		if limit := ngx.Workers(); most > limit {
			t.Errorf("%d certificate requests at once during the wave, want at most %d", most, limit)
		}
		t.Logf("wave of %d: %d requests, at most %d at once; per worker fetched+loaded %d", wave, hits, most,
			after["prewarm_fetched"]+after["prewarm_loaded"]-before["prewarm_fetched"]-before["prewarm_loaded"])
	})

	t.Run("a feed of hundreds of names is applied a chunk at a time, handshakes served between", func(t *testing.T) {
		l := ca.issue(t, "steady.test")
		side.set("steady.test", certAnswer(l, 3600))
		must(t, allServe(ngx, "steady.test", l.serial))
		before, err := workerStats(ngx)
		if err != nil {
			t.Fatal(err)
		}
		// Names no worker holds: each poll drops them all.
		const changed = 250
		names := make([]string, changed)
		for i := range names {
			names[i] = fmt.Sprintf("unheld%d.test", i)
		}
		done := make(chan struct{})
		served := make(chan error, 1)
		go func() {
			for {
				select {
				case <-done:
					served <- nil
					return
				default:
				}
				if err := allServe(ngx, "steady.test", l.serial)(); err != nil {
					served <- err
					return
				}
			}
		}()
		side.change(names[0], answer{status: 404, maxAge: 10}, names...)
		within(t, "every worker applied the feed in chunks", func() error {
			all, err := workerStats(ngx)
			if err != nil {
				return err
			}
			for pid, st := range all {
				// 250 names, FEED_CHUNK (100) at a time: two yields.
				if n := st["feed_yield"] - before[pid]["feed_yield"]; n < changed/100 {
					return fmt.Errorf("worker %s yielded %d times applying %d names", pid, n, changed)
				}
			}
			return nil
		})
		close(done)
		if err := <-served; err != nil {
			t.Errorf("a handshake while the feed was applied: %v", err)
		}
	})

	ngx.AssertCleanErrorLog(t)
	// ngx.sleep under 1 ms warns with ngx_lua built without OpenResty's
	// delayed-events patch (Debian's): the pre-warm and the feed never
	// sleep that short.
	for _, line := range strings.Split(ngx.ErrorLog(), "\n") {
		if strings.Contains(line, "delayed events patch") {
			t.Errorf("nginx error log: %s", line)
		}
	}
	if t.Failed() {
		t.Logf("nginx error log:\n%s", ngx.ErrorLog())
	}
}

// exitWave starts nginx (2 workers) with wave names every worker holds,
// and returns the sidecar, nginx, the renewed answers of the names (each
// answered after 100 ms, so that working through them takes seconds) and
// the workers' process IDs.
func exitWave(t *testing.T, wave int) (*fakeSidecar, *nginxtest.Nginx, map[string]answer, []int) {
	t.Helper()
	ca := newTestCA(t)
	// Nothing leaves the queue by waiting, and a poll the test holds (see
	// fakeSidecar.feedGate) is waited for.
	side, ngx, _ := startPrewarm(t, ca, 0, "prewarm_wait = 3600, read_timeout_ms = 180000, lock_timeout_ms = 190000,")
	renewed := make(map[string]answer, wave)
	for i := range wave {
		name := fmt.Sprintf("exit%d.test", i)
		l := ca.issue(t, name)
		side.set(name, certAnswer(l, 3600))
		must(t, allServe(ngx, name, l.serial))
		a := certAnswer(ca.issue(t, name), 3600)
		a.delay = 100 * time.Millisecond
		renewed[name] = a
	}
	return side, ngx, renewed, processTree(ngx.PID())[1:]
}

// reloadExiting reloads ngx and waits until each of the old workers has
// logged that it was told to exit.
func reloadExiting(t *testing.T, ngx *nginxtest.Nginx, old []int) {
	t.Helper()
	shutdowns := strings.Count(ngx.ErrorLog(), "gracefully shutting down")
	ngx.Reload(t)
	eventually(t, 3*time.Minute, "the old workers are told to exit", func() error {
		if n := strings.Count(ngx.ErrorLog(), "gracefully shutting down") - shutdowns; n < len(old) {
			return fmt.Errorf("%d of %d old workers shutting down", n, len(old))
		}
		return nil
	})
}

// exited waits until none of the processes runs, and then checks that
// at most more certificates were asked for since hits and that the
// error log holds no error: the new workers hold none of the names, so
// they pre-warm none.
func exited(t *testing.T, side *fakeSidecar, ngx *nginxtest.Nginx, old []int, hits, more int) {
	t.Helper()
	eventually(t, 3*time.Minute, "the old workers exit", func() error {
		for _, pid := range old {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				return fmt.Errorf("worker %d still runs", pid)
			}
		}
		return nil
	})
	if n := side.totalHits() - hits; n > more {
		t.Errorf("%d certificate requests after the old workers were told to exit, want at most %d", n, more)
	}
	ngx.AssertCleanErrorLog(t)
	for _, line := range strings.Split(ngx.ErrorLog(), "\n") {
		if strings.Contains(line, "[error]") {
			t.Errorf("nginx error log: %s", line)
		}
	}
}

// TestLuaPrewarmStopsOnExit: a worker that exits (here, replaced by a
// reload) while its pre-warm queue is long stops pre-warming: the old
// workers ask the sidecar for no name after they were told to exit,
// exit without working through their queues, and log no error. Each
// old worker's first request is held until both were told to exit, so
// that none can send a second meanwhile, however slow the reload.
func TestLuaPrewarmStopsOnExit(t *testing.T) {
	side, ngx, renewed, old := exitWave(t, 40)
	release := side.holdCerts(t)
	side.changeAll(renewed)
	side.certsHeld(t, len(old))
	hits := side.totalHits()
	reloadExiting(t, ngx, old)
	release()
	exited(t, side, ngx, old, hits, 0)
}

// TestLuaPrewarmAfterExit: a worker told to exit while its poll of the
// change feed is under way pre-warms none of the renewed names the poll
// then brings (its pre-warm timer starts and stops at once): no request
// for them, no error.
func TestLuaPrewarmAfterExit(t *testing.T) {
	side, ngx, renewed, old := exitWave(t, 10)
	gate := make(chan struct{})
	side.mu.Lock()
	side.feedGate = gate
	side.mu.Unlock()
	released := false
	release := func() {
		if !released {
			released = true
			side.mu.Lock()
			side.feedGate = nil
			side.mu.Unlock()
			close(gate)
		}
	}
	t.Cleanup(release)
	eventually(t, 3*time.Minute, "every worker polls the change feed", func() error {
		side.mu.Lock()
		defer side.mu.Unlock()
		if side.feedWaiting < len(old) {
			return fmt.Errorf("%d of %d workers polling", side.feedWaiting, len(old))
		}
		return nil
	})
	side.changeAll(renewed)
	hits := side.totalHits()
	reloadExiting(t, ngx, old)
	release()
	exited(t, side, ngx, old, hits, len(old))
}

// TestLuaPrewarmExpiredNotHeld: a name queued for pre-warming is served
// its old certificate past its max-age (see the subtest of
// TestLuaPrewarm), but not when that certificate has expired: its next
// handshake after the max-age asks the sidecar, as without pre-warming,
// and gets the renewal at once. One worker, whose pre-warm is held on
// the name queued first.
func TestLuaPrewarmExpiredNotHeld(t *testing.T) {
	prewarmNotHeld(t, -time.Hour)
}

// TestLuaPrewarmExpiringNotHeld: nor past its notAfter when that comes
// while the name waits in the queue (here a few seconds after it was
// queued, its max-age 0): once it has expired, a handshake asks the
// sidecar and gets the renewal.
func TestLuaPrewarmExpiringNotHeld(t *testing.T) {
	prewarmNotHeld(t, 8*time.Second)
}

// prewarmNotHeld queues a name whose certificate's notAfter is
// expiresIn from its issue (max-age 0) behind a name whose pre-warm is
// held, and checks that a handshake for it reaches the sidecar and gets
// the renewal: at once when it had expired before it was queued, once
// it has expired otherwise.
func prewarmNotHeld(t *testing.T, expiresIn time.Duration) {
	ca := newTestCA(t)
	// The held answer is waited for, however long.
	side, ngx, _ := startPrewarm(t, ca, 1, "prewarm_wait = 3600, read_timeout_ms = 600000, lock_timeout_ms = 610000,")

	const blocker, expired = "blocker-expired.test", "expired.test"
	oldBlocker, newBlocker := ca.issue(t, blocker), ca.issue(t, blocker)
	side.set(blocker, certAnswer(oldBlocker, 3600))
	must(t, allServe(ngx, blocker, oldBlocker.serial))
	n := lastSerial.Add(1)
	notAfter := time.Now().Add(expiresIn)
	old := certtest.New(t, certtest.Template{DNSNames: []string{expired}, Serial: big.NewInt(1000 + n),
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: notAfter}, ca.ca)
	oldExpired := leaf{serial: old.Cert.SerialNumber, chainPEM: old.ChainPEM, keyPEM: old.KeyPEM}
	renewed := ca.issue(t, expired)
	// Max-age 0, lapsed at once (the sidecar's is MinAge, 10 s, for a
	// certificate due for renewal).
	side.set(expired, certAnswer(oldExpired, 0))
	must(t, allServe(ngx, expired, oldExpired.serial))

	gate := make(chan struct{})
	t.Cleanup(func() { close(gate) })
	held := certAnswer(newBlocker, 3600)
	held.gate = gate
	hits, expiredHits := side.hitsFor(blocker), side.hitsFor(expired)
	side.set(expired, certAnswer(renewed, 3600))
	side.change(blocker, held, blocker, expired)
	eventually(t, 3*time.Minute, "the pre-warm asks for "+blocker, func() error {
		if side.hitsFor(blocker) == hits {
			return fmt.Errorf("not asked yet")
		}
		return nil
	})
	// The poll that queued blocker queued expired behind it.
	if expiresIn < 0 {
		must(t, allServe(ngx, expired, renewed.serial))
		return
	}
	if time.Now().After(notAfter) {
		t.Logf("%s expired before it was queued (a slow machine): its hold-over up to its notAfter is not tested", expired)
	}
	eventually(t, 3*time.Minute, "a handshake for "+expired+" after its notAfter gets the renewal", func() error {
		if err := allServe(ngx, expired, renewed.serial)(); err != nil {
			return err
		}
		if side.hitsFor(expired) == expiredHits {
			return fmt.Errorf("the sidecar was not asked for %s", expired)
		}
		return nil
	})
}

// TestLuaPrewarmGone: with pre-warming on, a name whose certificate is
// deleted is dropped by every worker at its next poll of the change feed,
// which marks the name gone, though a wave of renewals waits in every
// worker's pre-warm queue: its next handshake gets the fallback. A name
// queued for its renewal and then deleted is taken out of the queue. The
// wave is pre-warmed as before once it can go on.
func TestLuaPrewarmGone(t *testing.T) {
	ca := newTestCA(t)
	// The fetches the test holds are waited for, however slow the
	// machine; nothing leaves the queue by waiting, unless the test holds
	// it for minutes. Not longer: the pre-warm rests 31 times as long as a
	// name took (the first, held, took seconds), unless the queue would
	// then not be through within half of prewarm_wait (see prewarm_rest).
	side, ngx, fallback := startPrewarm(t, ca, 0,
		"prewarm_wait = 300, connect_timeout_ms = 10000, read_timeout_ms = 180000, lock_timeout_ms = 200000,")
	within := func(t *testing.T, what string, cond func() error) {
		t.Helper()
		start := time.Now()
		eventually(t, 3*time.Minute, what, cond)
		t.Logf("%s after %v", what, time.Since(start).Round(10*time.Millisecond))
	}

	const wave = 20
	const deleted, queued = "gone-held.test", "gone-queued.test"
	names := []string{deleted, queued}
	for i := range wave {
		names = append(names, fmt.Sprintf("gone-wave%d.test", i))
	}
	old, renewed := make(map[string]leaf), make(map[string]leaf)
	for _, name := range names {
		old[name], renewed[name] = ca.issue(t, name), ca.issue(t, name)
		side.set(name, certAnswer(old[name], 3600))
		must(t, allServe(ngx, name, old[name].serial))
	}
	before, err := workerStats(ngx)
	if err != nil {
		t.Fatal(err)
	}

	// The renewed answers are held until the end: the first name of the
	// wave is fetched by one worker's pre-warm and held, every other
	// worker's waits on that fetch's lock (one worker per nginx asks for
	// a name; the wave comes in one answer, so first in every queue), the
	// rest of the wave queued behind it.
	gate := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release)
	held := func(name string) answer {
		a := certAnswer(renewed[name], 3600)
		a.gate = gate
		return a
	}
	answers := make(map[string]answer, wave)
	for _, name := range names[2:] {
		answers[name] = held(name)
	}
	waveHits := func() int {
		hits := 0
		for _, name := range names[2:] {
			hits += side.hitsFor(name)
		}
		return hits
	}
	hitsBefore := waveHits()
	side.changeAll(answers)
	eventually(t, 3*time.Minute, "a pre-warm fetch of the wave is held", func() error {
		if waveHits() == hitsBefore {
			return fmt.Errorf("no fetch of the wave yet")
		}
		return nil
	})
	// queued is renewed too: every worker queues it behind the wave (two
	// polls after the change, the second asked after the change).
	side.change(queued, held(queued))
	pollsTwice(t, ngx, "the renewal of "+queued)

	side.change(deleted, answer{status: 404, maxAge: 10})
	side.change(queued, answer{status: 404, maxAge: 10})
	for _, name := range []string{deleted, queued} {
		within(t, "every worker serves the fallback for "+name, allServe(ngx, name, fallback.serial))
	}
	// The wave still waits: its old certificates are served.
	for _, name := range names[2:] {
		must(t, allServe(ngx, name, old[name].serial))
	}
	after, err := workerStats(ngx)
	if err != nil {
		t.Fatal(err)
	}
	for pid, st := range after {
		if n := st["feed_gone"] - before[pid]["feed_gone"]; n < 2 {
			t.Errorf("worker %s dropped %d names the feed marked gone, want 2", pid, n)
		}
	}

	release()
	within(t, "every worker serves the renewed wave", func() error {
		for _, name := range names[2:] {
			if err := allServe(ngx, name, renewed[name].serial)(); err != nil {
				return err
			}
		}
		return nil
	})
	// Only the wave was pre-warmed, each name once per worker: the
	// deleted name was taken out of the queue.
	after, err = workerStats(ngx)
	if err != nil {
		t.Fatal(err)
	}
	for pid, st := range after {
		b := before[pid]
		if n := st["prewarm_fetched"] + st["prewarm_loaded"] + st["prewarm_dropped"] -
			b["prewarm_fetched"] - b["prewarm_loaded"] - b["prewarm_dropped"]; n != wave {
			t.Errorf("worker %s pre-warmed %d names, want the %d of the wave", pid, n, wave)
		}
		if n := st["prewarm_dropped"] - b["prewarm_dropped"]; n != 0 {
			t.Errorf("worker %s dropped %d names instead of pre-warming them", pid, n)
		}
		if n := st["parse_handshake"] - b["parse_handshake"]; n != 0 {
			t.Errorf("worker %s parsed %d certificates on the handshake path", pid, n)
		}
	}
	ngx.AssertCleanErrorLog(t)
	if t.Failed() {
		t.Logf("nginx error log:\n%s", ngx.ErrorLog())
	}
}

// TestLuaPrewarmQueueBound: the pre-warm queue's bound (lru_size) counts
// the names waiting in it, not the places that names taken out of it
// (marked gone) leave behind until the queue reaches them. With
// lru_size = 8, a held wave of 4 and 3 names queued behind it and then
// deleted, 3 renewals more are all queued, and wait with the wave: every
// worker serves their old certificates until the wave goes on. A queue
// that counted places would be full at the third and drop it, and its
// next handshake would fetch the renewal at once.
func TestLuaPrewarmQueueBound(t *testing.T) {
	ca := newTestCA(t)
	// As TestLuaPrewarmGone: nothing leaves the queue by waiting.
	side, ngx, _ := startPrewarm(t, ca, 0,
		"lru_size = 8, prewarm_wait = 300, connect_timeout_ms = 10000, read_timeout_ms = 180000, lock_timeout_ms = 200000,")
	var wave, deleted, late []string
	for i := range 4 {
		wave = append(wave, fmt.Sprintf("bound-wave%d.test", i))
	}
	for i := range 3 {
		deleted = append(deleted, fmt.Sprintf("bound-deleted%d.test", i))
		late = append(late, fmt.Sprintf("bound-late%d.test", i))
	}
	old, renewed := make(map[string]leaf), make(map[string]leaf)
	// The wave and the names to delete are held (7 of the 8 names a
	// worker keeps); the late names are not asked for yet.
	for _, name := range slices.Concat(wave, deleted, late) {
		old[name], renewed[name] = ca.issue(t, name), ca.issue(t, name)
		side.set(name, certAnswer(old[name], 3600))
	}
	for _, name := range slices.Concat(wave, deleted) {
		must(t, allServe(ngx, name, old[name].serial))
	}
	before, err := workerStats(ngx)
	if err != nil {
		t.Fatal(err)
	}

	gate := make(chan struct{})
	t.Cleanup(func() { close(gate) })
	held := func(name string) answer {
		a := certAnswer(renewed[name], 3600)
		a.gate = gate
		return a
	}
	answers := make(map[string]answer, len(wave))
	for _, name := range wave {
		answers[name] = held(name)
	}
	side.changeAll(answers)
	eventually(t, 3*time.Minute, "a pre-warm fetch of the wave is held", func() error {
		for _, name := range wave {
			if side.hitsFor(name) > 0 {
				return nil
			}
		}
		return fmt.Errorf("no fetch of the wave yet")
	})
	pollsTwice(t, ngx, "the wave")
	for _, name := range deleted {
		side.change(name, held(name))
	}
	pollsTwice(t, ngx, "the renewals of the names to delete")
	for _, name := range deleted {
		side.change(name, answer{status: 404, maxAge: 10})
	}
	eventually(t, 3*time.Minute, "every worker drops the deleted names", func() error {
		all, err := workerStats(ngx)
		if err != nil {
			return err
		}
		for pid, st := range all {
			if n := st["feed_gone"] - before[pid]["feed_gone"]; n < len(deleted) {
				return fmt.Errorf("worker %s dropped %d of the %d deleted names", pid, n, len(deleted))
			}
		}
		return nil
	})

	// 4 names of the wave and 3 late ones in each worker's cache (7); at
	// most 3 of the wave and the 3 late ones in its queue (the fourth of
	// the wave is held, or is requeued behind the others while another
	// worker fetches it), behind 3 places taken out.
	for _, name := range late {
		must(t, allServe(ngx, name, old[name].serial))
	}
	// From here on, no handshake parses: the late names' first ones did.
	parsed, err := workerStats(ngx)
	if err != nil {
		t.Fatal(err)
	}
	lateAnswers := make(map[string]answer, len(late))
	for _, name := range late {
		lateAnswers[name] = certAnswer(renewed[name], 3600)
	}
	side.changeAll(lateAnswers)
	pollsTwice(t, ngx, "the late renewals")
	for _, name := range late {
		if err := allServe(ngx, name, old[name].serial)(); err != nil {
			t.Errorf("%s, renewed while the wave waits: %v; want it queued behind the wave, its old certificate served", name, err)
		}
	}

	// Nothing more to see once the wave goes on (TestLuaPrewarm and
	// TestLuaPrewarmGone watch a queue worked through): the gate opens as
	// the test ends.
	after, err := workerStats(ngx)
	if err != nil {
		t.Fatal(err)
	}
	for pid, st := range after {
		b := before[pid]
		if n := st["prewarm_dropped"] - b["prewarm_dropped"]; n != 0 {
			t.Errorf("worker %s dropped %d names instead of pre-warming them", pid, n)
		}
		if n := st["parse_handshake"] - parsed[pid]["parse_handshake"]; n != 0 {
			t.Errorf("worker %s parsed %d certificates on the handshake path", pid, n)
		}
	}
	ngx.AssertCleanErrorLog(t)
	if t.Failed() {
		t.Logf("nginx error log:\n%s", ngx.ErrorLog())
	}
}
