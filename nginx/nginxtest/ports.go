package nginxtest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// The ports FreeAddr hands out: below the ephemeral range
// (ip_local_port_range, 32768 to 60999 by default), so that neither a
// connect() nor a listen on port 0 anywhere on the machine takes one,
// and above the ports the peer benchmark routes its connections from
// (20000 and up, a few hundred).
const portLow, portHigh = 23000, 32768

// FreeAddr returns an address of host whose port was free a moment ago
// and that no other test using FreeAddr holds until t ends, in this
// process or another (a lock file per port under the temporary
// directory, held with flock).
//
// Why not a port the kernel picks (listen on port 0, then close): nginx
// listens with reuseport, and two processes of one user may both listen
// on a port with it. Two tests running at once whose picks met would
// start two nginx sharing one port, each getting some of the other's
// connections: a test then sees another's nginx answer now and then.
// Nor may a port nginx connects to while nothing listens there be one of
// the ephemeral range: a connect() can be given that port as its own and
// connect to itself (TCP's simultaneous open), which nginx, which does
// not check for it, takes for the server answering.
func FreeAddr(t testing.TB, host string) string {
	t.Helper()
	return net.JoinHostPort(host, strconv.Itoa(FreePortOn(t, host)))
}

// FreePortOn returns a TCP port, as FreeAddr does, that was free a moment
// ago on every one of hosts, for servers on several loopback addresses
// that must share a port number (Options.HTTPPort). It fails the test
// when it finds none.
func FreePortOn(t testing.TB, hosts ...string) int {
	t.Helper()
	var last error
	for range 500 {
		port := portLow + rand.IntN(portHigh-portLow)
		release, ok := claimPort(port)
		if !ok {
			continue
		}
		if last = freeOnAll(port, hosts); last != nil {
			release()
			continue
		}
		t.Cleanup(release)
		return port
	}
	t.Fatalf("nginxtest: no port from %d to %d free on all of %v in 500 tries; the last: %v", portLow, portHigh-1, hosts, last)
	return 0
}

// freeOnAll reports whether port can be listened on on every one of hosts.
func freeOnAll(port int, hosts []string) error {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for _, h := range hosts {
		l, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		held = append(held, l)
	}
	return nil
}

// claimPort takes port's lock file, unless another test holds it; release
// gives it back. Where no lock file can be made (a temporary directory
// another user made), every port is taken as unclaimed: the listen probe
// alone then decides.
func claimPort(port int) (release func(), ok bool) {
	dir := filepath.Join(os.TempDir(), "nginxtest-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return func() {}, true
	}
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return func() {}, true
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	fmt.Fprintf(f, "%d\n", os.Getpid())
	return func() { f.Close() }, true
}
