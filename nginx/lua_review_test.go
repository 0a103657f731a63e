package nginx_test

import (
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
