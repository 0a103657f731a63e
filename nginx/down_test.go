package nginx_test

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"math/big"
	"net/http"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
)

// TestSidecarDownQuietAndBack: a crashed sidecar (SIGKILL: its socket file
// stays, and connecting to it is refused) costs the nginx error log one
// line of certserver's and at most one of nginx's own per request already
// under way, however long it lasts and however many new names arrive; and
// the first handshake after the sidecar is back is served from it. Then
// a certificate replaced while nginx caches it for ten minutes is served
// at once (the change feed of the real sidecar).
func TestSidecarDownQuietAndBack(t *testing.T) {
	bin := certserverBinary(t)
	fbDir := t.TempDir()
	if out, err := exec.Command(bin, "fallback-cert", "--out", fbDir).CombinedOutput(); err != nil {
		t.Fatalf("certserver fallback-cert: %v\n%s", err, out)
	}
	fbCert, fbKey := filepath.Join(fbDir, "fallback.crt"), filepath.Join(fbDir, "fallback.key")
	fallbackDER := readLeafDER(t, fbCert)
	side := startSidecarWith(t, bin, sidecarOptions{MaxAge: "10m"})
	ngx := nginxtest.Start(t, nginxtest.Options{Sidecar: "unix:" + side.sock, FallbackCert: fbCert, FallbackKey: fbKey})
	addr := ngx.HTTPSAddr()
	ca := newTestCA(t)
	cached, later := ca.issue(t, "cached.down.test"), ca.issue(t, "later.down.test")
	side.importLeaf(t, cached)
	side.importLeaf(t, later)
	must(t, allServe(ngx, "cached.down.test", cached.serial))

	side.kill(t)
	// One handshake finds the sidecar down and marks it so for every
	// worker (the certserver line); until then, each worker's feed poll
	// may also have tried to connect, each logging a connect() line.
	fbLeaf, err := x509.ParseCertificate(fallbackDER)
	if err != nil {
		t.Fatal(err)
	}
	primeDown(t, ngx, "first.down.test", fbLeaf.SerialNumber)
	// New names, never asked about, for as long as the old module took
	// to log eight times (error_ttl 2 s), from two clients.
	var handshakes atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(8 * time.Second)
	for c := range 2 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				certs, err := handshake(addr, fmt.Sprintf("new%d-%d.down.test", c, i), nil)
				if err != nil || !bytes.Equal(certs[0].Raw, fallbackDER) {
					t.Errorf("a new name with the sidecar down: %v, want the fallback", err)
					return
				}
				if err := expectSerial(addr, "cached.down.test", cached.serial)(); err != nil {
					t.Errorf("a cached name with the sidecar down: %v", err)
					return
				}
				handshakes.Add(2)
			}
		})
	}
	wg.Wait()
	log := ngx.ErrorLog()
	ours, connects := countLines(log, "certserver: sidecar at"), countLines(log, "connect() to")
	t.Logf("%d handshakes in 8 s with the sidecar down: %d lines of certserver's, %d of nginx's connect() in the error log",
		handshakes.Load(), ours, connects)
	if maxConnects := 1 + ngx.Workers(); ours != 1 || connects > maxConnects {
		t.Errorf("error log: %d lines 'certserver: sidecar at' (want 1), %d lines 'connect() to' (want at most %d: the first handshake's and a feed poll's a worker):\n%s",
			ours, connects, maxConnects, log)
	}

	// Handshakes for new names go on while the sidecar starts, as under
	// load; the first one after it is ready must reach it.
	stop := make(chan struct{})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			handshake(addr, fmt.Sprintf("starting%d.down.test", i), nil)
		}
	})
	side.restart(t)
	eventually(t, 15*time.Second, "certserver /readyz", func() error {
		resp, err := http.Get("http://" + side.admin + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	})
	ready := time.Now()
	close(stop)
	wg.Wait()
	// The first handshake after /readyz is served by the sidecar, unless
	// it was found down again while it started (a request that timed out
	// under load): then the probes, spaced from 0.5 s, find it soon.
	if err := expectSerial(addr, "later.down.test", later.serial)(); err != nil {
		// One "unreachable" line a time the module marks it down (the
		// line when it is back also starts "certserver: sidecar at").
		if outages := countLines(ngx.ErrorLog(), " unreachable ("); outages == 1 {
			t.Errorf("the first handshake for a new name after the sidecar is ready: %v", err)
		} else {
			t.Logf("the first handshake for a new name after the sidecar is ready: %v (marked down %d times)", err, outages)
		}
	}
	eventually(t, 15*time.Second, "a new name served after the restart", expectSerial(addr, "later.down.test", later.serial))
	t.Logf("a new name served %v after /readyz answered", time.Since(ready).Round(time.Millisecond))

	renewed := ca.issue(t, "cached.down.test")
	side.importLeaf(t, renewed)
	start := time.Now()
	eventually(t, 15*time.Second, "the replaced certificate served by every worker", allServe(ngx, "cached.down.test", renewed.serial))
	t.Logf("replaced certificate served by every worker %v after the import (max-age 10 min)", time.Since(start).Round(10*time.Millisecond))
	ngx.AssertCleanErrorLog(t)
	if t.Failed() {
		t.Logf("nginx error log:\n%s", ngx.ErrorLog())
	}
}

// TestSidecarDownTCP: the same over a loopback TCP address, where nginx's
// probe is a non-blocking connect of its own: after a refused connection
// nothing more is sent (one line of certserver's, at most one connect()
// line of nginx's per worker) and the first handshake after the sidecar
// listens again is served by it.
func TestSidecarDownTCP(t *testing.T) {
	ca := newTestCA(t)
	fallback := ca.issue(t, "fallback.invalid")
	fbCert, fbKey := fallback.writeFiles(t, t.TempDir(), "fallback")
	side := &fakeSidecar{answers: map[string]answer{}, hits: map[string]int{}}
	addr := freeLoopbackAddr(t)
	side.listen(t, "tcp", addr)
	ngx := nginxtest.Start(t, nginxtest.Options{Sidecar: addr, FallbackCert: fbCert, FallbackKey: fbKey})
	https := ngx.HTTPSAddr()
	l := ca.issue(t, "tcp.down.test")
	side.set("tcp.down.test", certAnswer(l, 3600))
	must(t, allServe(ngx, "tcp.down.test", l.serial))

	side.stop()
	later := ca.issue(t, "later-tcp.down.test")
	side.set("later-tcp.down.test", certAnswer(later, 3600))
	primeDown(t, ngx, "first-tcp.down.test", fallback.serial)
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		must(t, expectSerial(https, fmt.Sprintf("new%d.down.test", i), fallback.serial))
		must(t, expectSerial(https, "tcp.down.test", l.serial))
	}
	log := ngx.ErrorLog()
	maxConnects := 1 + ngx.Workers()
	if ours, connects := countLines(log, "certserver: sidecar at"), countLines(log, "connect() to"); ours != 1 || connects > maxConnects {
		t.Errorf("error log: %d lines 'certserver: sidecar at' (want 1), %d 'connect() to' (want at most %d: the first handshake's and a feed poll's a worker):\n%s",
			ours, connects, maxConnects, log)
	}

	side.listen(t, "tcp", addr)
	if err := expectSerial(https, "later-tcp.down.test", later.serial)(); err != nil {
		t.Errorf("the first handshake for a new name after the sidecar listens again: %v", err)
	}
	ngx.AssertCleanErrorLog(t)
}

// primeDown makes one handshake for name, a name never asked about, with
// the sidecar down, and waits until the module has logged that it marked
// the sidecar down (for every worker): later requests send nothing. The
// handshake must get the fallback, whose serial is fallback.
func primeDown(t *testing.T, ngx *nginxtest.Nginx, name string, fallback *big.Int) {
	t.Helper()
	if err := expectSerial(ngx.HTTPSAddr(), name, fallback)(); err != nil {
		t.Fatalf("the first new name with the sidecar down: %v, want the fallback", err)
	}
	eventually(t, 15*time.Second, "the sidecar marked down", func() error {
		if countLines(ngx.ErrorLog(), "certserver: sidecar at") == 0 {
			return fmt.Errorf("no 'certserver: sidecar at' line in the error log")
		}
		return nil
	})
}
