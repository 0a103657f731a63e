package nginx_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
)

// TestLuaOldRecordDroppedWithNewVersion: when a worker loads a new version
// of a record (here a wildcard's, fetched for another subname at the
// record's max-age, with no change in the feed), the names it cached with
// the old version leave it too, so that the feed's later drop of the
// record reaches them.
func TestLuaOldRecordDroppedWithNewVersion(t *testing.T) {
	ca := newTestCA(t)
	fallback := ca.issue(t, "fallback.invalid")
	fbCert, fbKey := fallback.writeFiles(t, t.TempDir(), "fallback")
	side := startFakeSidecar(t)
	// One worker: the names below share its record table.
	ngx := nginxtest.Start(t, nginxtest.Options{
		Sidecar: "unix:" + side.sock, FallbackCert: fbCert, FallbackKey: fbKey, Workers: 1,
	})
	addr := ngx.HTTPSAddr()
	feedStarted(t, ca, side, addr)

	wildAnswer := func(l leaf) answer {
		a := certAnswer(l, 3600)
		a.record = "*.w4.test"
		return a
	}
	v1, v2, v3 := ca.issue(t, "*.w4.test"), ca.issue(t, "*.w4.test"), ca.issue(t, "*.w4.test")
	side.set("*.w4.test", wildAnswer(v1))
	eventually(t, 30*time.Second, "x.w4.test serves v1", expectSerial(addr, "x.w4.test", v1.serial))

	side.set("*.w4.test", wildAnswer(v2)) // renewed, not yet in the feed
	eventually(t, 30*time.Second, "y.w4.test serves v2", expectSerial(addr, "y.w4.test", v2.serial))

	side.change("*.w4.test", wildAnswer(v3))
	eventually(t, 30*time.Second, "x.w4.test serves v3 after the feed dropped the record",
		expectSerial(addr, "x.w4.test", v3.serial))
	ngx.AssertCleanErrorLog(t)
}

// TestLuaStaleAnswerNotCached: an answer that was on its way while the
// feed dropped its record serves its handshake only. It is not written
// over the newer copy of the record another fetch cached after the drop,
// which the record's other names would then serve.
func TestLuaStaleAnswerNotCached(t *testing.T) {
	ca := newTestCA(t)
	fallback := ca.issue(t, "fallback.invalid")
	fbCert, fbKey := fallback.writeFiles(t, t.TempDir(), "fallback")
	side := startFakeSidecar(t)
	// One worker, and a read timeout far above the slow answer's delay.
	ngx := nginxtest.Start(t, nginxtest.Options{
		Sidecar: "unix:" + side.sock, FallbackCert: fbCert, FallbackKey: fbKey, Workers: 1,
		Configure: "read_timeout_ms = 60000, lock_timeout_ms = 61000,",
	})
	addr := ngx.HTTPSAddr()
	feedStarted(t, ca, side, addr)

	names := []string{"a.multi.test", "b.multi.test"}
	v1, v2 := ca.issue(t, names...), ca.issue(t, names...)
	answerFor := func(l leaf, delay time.Duration) answer {
		a := certAnswer(l, 3600)
		a.record = "a.multi.test"
		a.delay = delay
		return a
	}
	side.set("b.multi.test", answerFor(v1, 0))
	eventually(t, 30*time.Second, "b.multi.test serves v1", expectSerial(addr, "b.multi.test", v1.serial))

	// a.multi.test is asked for; its answer, v1, takes its time.
	const delay = 8 * time.Second
	side.set("a.multi.test", answerFor(v1, delay))
	slow := make(chan error, 1)
	go func() {
		d := tls.Dialer{Config: &tls.Config{ServerName: "a.multi.test", InsecureSkipVerify: true}}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			slow <- err
			return
		}
		defer c.Close()
		if got := c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber; got.Cmp(v1.serial) != 0 {
			err = fmt.Errorf("the slow handshake served serial %v, want %v (its own answer)", got, v1.serial)
		}
		slow <- err
	}()
	eventually(t, 30*time.Second, "a.multi.test asked", func() error {
		if side.hitsFor("a.multi.test") == 0 {
			return fmt.Errorf("not asked yet")
		}
		return nil
	})

	// Meanwhile the record is replaced: the feed drops it, and
	// b.multi.test's next handshake caches v2.
	start := time.Now()
	side.change("b.multi.test", answerFor(v2, 0), "a.multi.test", "b.multi.test")
	side.set("a.multi.test", answerFor(v2, 0))
	eventually(t, 30*time.Second, "b.multi.test serves v2", expectSerial(addr, "b.multi.test", v2.serial))
	if time.Since(start) > delay/2 {
		t.Skipf("the machine is too slow: the feed took %v, the slow answer %v", time.Since(start), delay)
	}

	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	// The slow v1 must not have replaced v2 for the record's other names.
	for range 5 {
		if got := servedSerial(t, addr, "b.multi.test"); got.Cmp(v2.serial) != 0 {
			t.Fatalf("after a stale answer for a.multi.test, b.multi.test serves serial %v, want %v", got, v2.serial)
		}
	}
	ngx.AssertCleanErrorLog(t)
}

// feedStarted returns once nginx's workers applied a change from the feed
// after their first poll (which answers reset and empties their caches).
func feedStarted(t *testing.T, ca *testCA, side *fakeSidecar, addr string) {
	t.Helper()
	before, after := ca.issue(t, "feed-probe.test"), ca.issue(t, "feed-probe.test")
	side.set("feed-probe.test", certAnswer(before, 3600))
	eventually(t, 30*time.Second, "feed-probe.test served", expectSerial(addr, "feed-probe.test", before.serial))
	side.change("feed-probe.test", certAnswer(after, 3600))
	eventually(t, 30*time.Second, "feed-probe.test's change applied", expectSerial(addr, "feed-probe.test", after.serial))
}

// TestLuaSlowAnswerNotDown: an answer slower than read_timeout_ms costs
// its name error_ttl, not the sidecar: two in a row neither mark the
// sidecar down (no "unreachable" line) nor keep the next name from being
// asked.
func TestLuaSlowAnswerNotDown(t *testing.T) {
	ca := newTestCA(t)
	fallback := ca.issue(t, "fallback.invalid")
	fbCert, fbKey := fallback.writeFiles(t, t.TempDir(), "fallback")
	side := startFakeSidecar(t)
	ngx := nginxtest.Start(t, nginxtest.Options{
		Sidecar: "unix:" + side.sock, FallbackCert: fbCert, FallbackKey: fbKey, Workers: 1,
	})
	addr := ngx.HTTPSAddr()
	feedStarted(t, ca, side, addr)

	for _, name := range []string{"slow1.test", "slow2.test"} {
		a := certAnswer(ca.issue(t, name), 60)
		a.delay = 2 * time.Second // read_timeout_ms is 500
		side.set(name, a)
		if got := servedSerial(t, addr, name); got.Cmp(fallback.serial) != 0 {
			t.Fatalf("%s served serial %v, want the fallback %v", name, got, fallback.serial)
		}
	}
	fast := ca.issue(t, "fast.test")
	side.set("fast.test", certAnswer(fast, 60))
	if got := servedSerial(t, addr, "fast.test"); got.Cmp(fast.serial) != 0 {
		t.Errorf("fast.test after two slow answers served serial %v, want %v", got, fast.serial)
	}
	for _, line := range strings.Split(ngx.ErrorLog(), "\n") {
		if strings.Contains(line, "unreachable") {
			t.Errorf("a slow answer marked the sidecar down: %s", line)
		}
	}
}
