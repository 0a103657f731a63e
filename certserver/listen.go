package certserver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNotLoopback is wrapped by the error CheckLoopback returns for an
// address that does not stay on the host.
var ErrNotLoopback = errors.New("not a loopback address")

// CheckLoopback returns nil when addr, a TCP address "host:port", can only be
// reached from the host itself: an IPv4 address in 127.0.0.0/8, the IPv6
// address ::1, or the name "localhost". A wildcard ("0.0.0.0:9401",
// "[::]:9401", ":9401"), any other address and any other host name return an
// error wrapping ErrNotLoopback that names addr.
func CheckLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil && !isServiceName(port) {
		return fmt.Errorf("address %q: invalid port %q", addr, port)
	}
	if host == "" {
		return fmt.Errorf("address %q listens on every interface: %w", addr, ErrNotLoopback)
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("address %q: host %q is neither an IP address nor localhost: %w", addr, host, ErrNotLoopback)
	}
	if ip.IsUnspecified() {
		return fmt.Errorf("address %q listens on every interface: %w", addr, ErrNotLoopback)
	}
	if !ip.Unmap().IsLoopback() {
		return fmt.Errorf("address %q: %w", addr, ErrNotLoopback)
	}
	return nil
}

// isServiceName reports whether port is a service name ("http") rather
// than a number; net.Listen resolves those itself.
func isServiceName(port string) bool {
	letter := false
	for _, r := range port {
		switch {
		case r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
			letter = true
		case r >= '0' && r <= '9' || r == '-':
		default:
			return false
		}
	}
	return letter
}

// checkListen checks a TCP listen address against the loopback rule of an
// endpoint; what travels names what a non-loopback address would expose.
func checkListen(addr string, allowNonLoopback bool, what string) error {
	err := CheckLoopback(addr)
	switch {
	case err == nil:
		return nil
	case !errors.Is(err, ErrNotLoopback):
		return err
	case allowNonLoopback:
		return nil
	}
	return fmt.Errorf("%w; %s travel over this endpoint: use a unix socket or a loopback "+
		"address (127.0.0.1, [::1], localhost), or set allow_non_loopback = true if the network is yours", err, what)
}

// maxSocketPath is the longest path a unix socket can be bound to on Linux
// (sun_path holds 108 bytes including the terminating NUL).
const maxSocketPath = 107

// unixSocket is a socket file this process created; remove deletes it only
// while it is still the same file.
type unixSocket struct {
	path string
	info fs.FileInfo
}

// remove deletes the socket file unless it was replaced by another one.
func (u *unixSocket) remove() error {
	fi, err := os.Lstat(u.path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	if !os.SameFile(fi, u.info) {
		return nil
	}
	if err := os.Remove(u.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// listenUnix binds a unix socket at path with the given permission bits and
// group ("" keeps the process's group, else a group name or numeric ID).
//
// A stale socket file left by a crashed server is removed; a file that is
// not a socket, or a socket another live server answers on, is an error and
// is left alone. The socket is bound in a private directory next to path,
// given its mode and group there and then renamed into place, so that no
// other user can ever connect to it with looser permissions.
func listenUnix(ctx context.Context, path string, mode fs.FileMode, group string) (net.Listener, *unixSocket, error) {
	if path == "" {
		return nil, nil, errors.New("empty socket path")
	}
	if len(path) > maxSocketPath {
		return nil, nil, fmt.Errorf("socket path %q is longer than %d bytes", path, maxSocketPath)
	}
	gid := -1
	if group != "" {
		g, err := LookupGroup(group)
		if err != nil {
			return nil, nil, err
		}
		gid = g
	}
	if err := removeStaleSocket(ctx, path); err != nil {
		return nil, nil, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("create socket directory: %w", err)
	}
	tmpDir, err := os.MkdirTemp(dir, ".cs")
	if err != nil {
		return nil, nil, fmt.Errorf("create socket: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "s")
	if len(tmp) > maxSocketPath {
		return nil, nil, fmt.Errorf("socket path %q is too long: it must leave room for %d more bytes within %d", path, len(tmp)-len(path), maxSocketPath)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, *unixSocket, error) {
		ln.Close()
		return nil, nil, err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(fmt.Errorf("set socket mode: %w", err))
	}
	if gid >= 0 {
		if err := os.Chown(tmp, -1, gid); err != nil {
			return fail(fmt.Errorf("give socket to group %q: %w", group, err))
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(fmt.Errorf("move socket into place: %w", err))
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(fmt.Errorf("stat socket: %w", err))
	}
	return ln, &unixSocket{path: path, info: fi}, nil
}

// LookupGroup resolves a socket group, a group name or a numeric group
// ID, to its ID, as the certificate endpoint does for SocketGroup.
func LookupGroup(group string) (int, error) {
	g, err := user.LookupGroup(group)
	if err != nil {
		if _, nerr := strconv.Atoi(group); nerr == nil {
			g, err = user.LookupGroupId(group)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("socket group %q: %w", group, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("socket group %q: unexpected group id %q", group, g.Gid)
	}
	return gid, nil
}

// removeStaleSocket removes the socket file at path when no server answers
// on it. It refuses to touch a file that is not a socket and a socket a live
// server answers on.
func removeStaleSocket(ctx context.Context, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("socket %s: the file exists and is not a socket; remove it or choose another path", path)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("socket %s: another server is listening on it (is certserver already running?)", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("socket %s: cannot tell whether it is in use: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}
