package nginxtest

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The ports FreeAddr hands out: from portLow up to the ephemeral range
// (ip_local_port_range, from 32768 by default; read from the system), so
// that neither a connect() nor a listen on port 0 anywhere on the
// machine takes one, and above the ports the peer benchmark routes its
// connections from (peerPortBase in the nginx package, 20000 and up, a
// few hundred).
const portLow, defaultEphemeralLow = 23000, 32768

// FreeAddr returns an address of host whose port was free a moment ago
// and that no other test of the same user using FreeAddr holds until t
// ends, in this process or another (a lock file per port, held with
// flock).
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
	if len(hosts) == 0 {
		t.Fatal("nginxtest: FreePortOn without a host")
	}
	high := ephemeralLow()
	if high <= portLow {
		t.Fatalf("nginxtest: the ephemeral port range starts at %d, below the test ports' %d: set net.ipv4.ip_local_port_range to start at 32768", high, portLow)
	}
	dir := portLockDir(t)
	var last error = errors.New("every port tried is held by another test")
	for range 500 {
		port := portLow + rand.IntN(high-portLow)
		release, ok := claimPort(t, dir, port)
		if !ok {
			continue
		}
		if err := freeOnAll(port, hosts); err != nil {
			last = err
			release()
			continue
		}
		t.Cleanup(release)
		return port
	}
	t.Fatalf("nginxtest: no port from %d to %d free on all of %v in 500 tries; the last: %v", portLow, high-1, hosts, last)
	return 0
}

// ephemeralLow returns the first port of the system's ephemeral range,
// defaultEphemeralLow when it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return defaultEphemeralLow
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return defaultEphemeralLow
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return defaultEphemeralLow
	}
	return low
}

// freeOnAll returns nil when port can be listened on on every one of
// hosts, else the first error.
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

// portLockDir returns the directory of the user's port lock files,
// made private to the user (nginx's reuseport sharing is between
// processes of one user only). It fails the test when the directory is
// not the user's own, private, real directory.
func portLockDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("nginxtest-ports-%d", os.Getuid()))
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		t.Fatalf("nginxtest: port locks: %v", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		t.Fatalf("nginxtest: port locks: %v", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Getuid() || fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("nginxtest: port locks: %s is not a directory of this user's (uid %d) that only it can use (%v): remove it", dir, os.Getuid(), fi.Mode())
	}
	return dir
}

// claimPort takes port's lock file in dir, unless another test holds it
// (ok false); release gives it back. It fails the test when the file
// cannot be opened.
func claimPort(t testing.TB, dir string, port int) (release func(), ok bool) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_RDONLY|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		t.Fatalf("nginxtest: port lock: %v", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false
	}
	return func() { f.Close() }, true
}
