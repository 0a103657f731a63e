// Package pgtest runs real PostgreSQL clusters for tests: one shared
// cluster per test binary, started on first use, and one fresh database
// per test in it; and private clusters a test can stop and start again to
// see what an outage does.
//
// A package that uses it calls Main from its TestMain, which stops the
// shared cluster and removes its files when the tests end:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// Clusters are made with initdb and run with the postgres binary from
// $PGTEST_BINDIR, else the newest /usr/lib/postgresql/*/bin (Debian's
// postgresql package, which scripts/deps.sh installs). A missing
// PostgreSQL fails the test; it never skips. PostgreSQL refuses to run as
// root, so under root the cluster runs as the user nobody. Each cluster
// listens on 127.0.0.1 only, on a port picked at run time, with its unix
// socket in its own temporary directory, trusts every local connection
// (a password in a URL is accepted and ignored), and runs with fsync off:
// its data is not meant to survive a crash of the machine.
//
// The postmaster is a child of the test binary and is told by the kernel
// (PR_SET_PDEATHSIG) to shut down at once if the binary dies, so a panic
// or a killed test leaves no PostgreSQL running. The files of such a
// cluster stay in the temporary directory until a later test binary
// starts a cluster: it removes those whose test binary is gone (each
// binary holds a lock on a file in the directories of its clusters for as
// long as it runs), never one a running test has stopped.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BinDirEnv names the environment variable that overrides where the
// PostgreSQL binaries (initdb, postgres) are found.
const BinDirEnv = "PGTEST_BINDIR"

// Package is the Debian package that provides PostgreSQL.
const Package = "postgresql"

// Bounds on waiting for real processes: generous, since the machine may be
// loaded; only a cluster that is really stuck reaches them.
const (
	startTimeout = 2 * time.Minute
	stopTimeout  = time.Minute
)

var (
	mainCalled atomic.Bool

	sharedOnce    sync.Once
	sharedCluster *Cluster
	sharedErr     error
)

// Main runs the package's tests (m.Run), stops the shared cluster if one
// was started and removes its files, and exits with the tests' code. Call
// it from TestMain of every package that uses New.
func Main(m *testing.M) {
	mainCalled.Store(true)
	code := m.Run()
	if sharedCluster != nil {
		if err := sharedCluster.close(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// New returns the URL of a new, empty database (created from template0)
// in the test binary's shared cluster, which it starts on first use. The
// database is dropped when t ends, whatever connections are still open to
// it. A PostgreSQL that is missing or does not start fails t.
func New(t testing.TB) string {
	t.Helper()
	return Shared(t).NewDatabase(t)
}

// Shared returns the test binary's shared cluster, starting it on first
// use, as New does (for what a test measures of the server itself, such
// as its CPU time).
func Shared(t testing.TB) *Cluster {
	t.Helper()
	if !mainCalled.Load() {
		t.Fatal("pgtest: the shared cluster needs pgtest.Main: add func TestMain(m *testing.M) { pgtest.Main(m) } to the package's tests")
	}
	sharedOnce.Do(func() {
		sharedCluster, sharedErr = start()
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return sharedCluster
}

// Cluster is one running (or stopped) PostgreSQL cluster. Its methods are
// safe for concurrent use, though stopping and starting it while other
// goroutines connect is exactly the outage they should expect.
type Cluster struct {
	bin  string // directory of initdb and postgres
	dir  string // the cluster's temporary directory: data/, the socket, the log
	cred *syscall.Credential
	port int

	owner *os.File // ownerFile, locked while the cluster is the test binary's

	mu      sync.Mutex
	running *process // nil when stopped
	dbs     atomic.Int64
}

// process is one run of the postmaster.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
	err  error         // its exit status, once done is closed
}

// Start starts a private cluster for t, which only t uses, and stops it
// and removes its files when t ends. A PostgreSQL that is missing or
// does not start fails t.
func Start(t testing.TB) *Cluster {
	t.Helper()
	c, err := start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.close(); err != nil {
			t.Error(err)
		}
	})
	return c
}

// URL returns the connection URL of database db in the cluster (whether
// or not the cluster is running).
func (c *Cluster) URL(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User("postgres"),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Addr returns the host:port the cluster listens on.
func (c *Cluster) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port)) }

// NewDatabase creates a new, empty database from template0 and returns
// its URL; it is dropped when t ends (if the cluster runs then), whatever
// connections are still open to it.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test_%d", c.dbs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := c.exec(ctx, "CREATE DATABASE "+name+" TEMPLATE template0"); err != nil {
		t.Fatalf("pgtest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if !c.Running() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := c.exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return c.URL(name)
}

// exec runs one statement in the maintenance database postgres.
func (c *Cluster) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// Running reports whether the cluster's postmaster runs.
func (c *Cluster) Running() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running != nil
}

// Stop shuts the cluster down in PostgreSQL's fast mode (open sessions are
// ended with an admin-shutdown error, as when an operator stops the
// server) and waits until it has exited. Stopping a stopped cluster does
// nothing.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	if err := c.stop(); err != nil {
		t.Fatal(err)
	}
}

// Restart starts a stopped cluster again, on the same port with the same
// data, and waits until it accepts connections. Starting a running cluster
// does nothing.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	if err := c.run(); err != nil {
		t.Fatal(err)
	}
}

// ownerFile is the file in a cluster's directory that the test binary
// owning the cluster holds locked (flock) while it runs: the kernel drops
// the lock when the binary exits or dies, whatever stopped it.
const ownerFile = "owner.lock"

// lockOwner creates and locks the owner file of dir; the lock lasts as
// long as the returned file is open.
func lockOwner(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, ownerFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("pgtest: lock %s: %w", f.Name(), err)
	}
	return f, nil
}

// staleAge is how old the directory of a cluster without an owner file
// must be before sweepStale removes it: it may be one that a test binary
// has only begun to make (or one made before owner files existed).
const staleAge = 30 * time.Minute

var sweepOnce sync.Once

// sweepStale removes the directories that clusters of test binaries that
// died (a panic, a timeout, a kill) left behind: their postmaster went
// with them, but not their files. A directory whose owner file is locked
// belongs to a binary that runs, and stays, however old it is and
// whether or not its cluster runs (a test may have stopped it).
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "pgtest-*"))
	for _, dir := range dirs {
		fi, err := os.Stat(dir)
		if err != nil || !fi.IsDir() {
			continue
		}
		owner, err := os.Open(filepath.Join(dir, ownerFile))
		switch {
		case err == nil:
			if syscall.Flock(int(owner.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
				owner.Close()
				continue // its test binary runs
			}
		case errors.Is(err, os.ErrNotExist) && time.Since(fi.ModTime()) >= staleAge:
		default:
			continue
		}
		if !postmasterGone(dir) {
			if owner != nil {
				owner.Close()
			}
			continue
		}
		os.RemoveAll(dir)
		if owner != nil {
			owner.Close()
		}
	}
}

// postmasterGone reports whether no postmaster runs on the cluster in dir
// (a pid that was reused counts as running: the directory is left alone).
func postmasterGone(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		return true
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	return pid <= 0 || syscall.Kill(pid, 0) == syscall.ESRCH
}

// start makes and starts a new cluster.
func start() (*Cluster, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	sweepOnce.Do(sweepStale)
	c := &Cluster{bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			return nil, fmt.Errorf("pgtest: PostgreSQL refuses to run as root and there is no user nobody to run it as: %w", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	}
	// Not t.TempDir: under root that is a directory nobody cannot enter.
	c.dir, err = os.MkdirTemp("", "pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	if c.owner, err = lockOwner(c.dir); err != nil {
		os.RemoveAll(c.dir)
		return nil, err
	}
	fail := func(err error) (*Cluster, error) {
		os.RemoveAll(c.dir)
		c.owner.Close()
		return nil, err
	}
	if c.cred != nil {
		if err := os.Chown(c.dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			return fail(fmt.Errorf("pgtest: %w", err))
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"),
		"--pgdata", c.dataDir(), "--username", "postgres", "--auth", "trust",
		"--encoding", "UTF8", "--locale", "C", "--no-sync", "--no-instructions")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	initdb.Env = append(os.Environ(), "LC_ALL=C")
	initdb.Dir = c.dir
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("pgtest: initdb: %v\n%s", err, out))
	}
	// A port that was free a moment ago may be taken by the time the
	// postmaster binds it; a few tries get past such a race.
	for attempt := 1; ; attempt++ {
		c.port, err = freePort()
		if err != nil {
			return fail(err)
		}
		err = c.run()
		if err == nil {
			return c, nil
		}
		if attempt == 5 || !strings.Contains(err.Error(), "could not bind") {
			return fail(err)
		}
	}
}

// binDir finds the directory of the PostgreSQL binaries.
func binDir() (string, error) {
	if d := os.Getenv(BinDirEnv); d != "" {
		if _, err := os.Stat(filepath.Join(d, "postgres")); err != nil {
			return "", fmt.Errorf("pgtest: $%s=%s has no postgres binary: %v", BinDirEnv, d, err)
		}
		return d, nil
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(found) == 0 {
		return "", fmt.Errorf("pgtest: PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres, and $%s is not set): install the Debian package %s (scripts/deps.sh does)", BinDirEnv, Package)
	}
	// Newest major version first: /usr/lib/postgresql/15 before /usr/lib/postgresql/9.6.
	version := func(p string) float64 {
		v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(filepath.Dir(p))), 64)
		return v
	}
	slices.SortFunc(found, func(a, b string) int {
		switch va, vb := version(a), version(b); {
		case va > vb:
			return -1
		case va < vb:
			return 1
		}
		return 0
	})
	return filepath.Dir(found[0]), nil
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: pick a port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }
func (c *Cluster) logFile() string { return filepath.Join(c.dir, "postgres.log") }

// run starts the postmaster, unless it runs, and waits until it accepts
// connections.
func (c *Cluster) run() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running != nil {
		return nil
	}
	logf, err := os.OpenFile(c.logFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer logf.Close()
	offset, _ := logf.Seek(0, 2)
	cmd := exec.Command(filepath.Join(c.bin, "postgres"),
		"-D", c.dataDir(),
		"-p", strconv.Itoa(c.port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+c.dir,
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=200",
		"-c", "shared_buffers=32MB",
		"-c", "max_wal_size=1GB",
		"-c", "log_min_messages=warning",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.Dir = c.dir
	// SIGQUIT on the death of the thread that started it is PostgreSQL's
	// immediate shutdown: the backends go too, and shared memory is freed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
	p := &process{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	// The parent-death signal fires when the starting thread ends, not the
	// process, so the goroutine that starts the postmaster keeps its
	// thread locked until the postmaster has exited. It unlocks the
	// thread before it returns: a goroutine that ends locked takes its
	// thread with it, and that thread may have started other children
	// before (Pebble, nginx, with parent-death signals of their own),
	// which the kernel would then kill in the middle of their tests.
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgx.Connect(cctx, c.URL("postgres"))
		ccancel()
		if err == nil {
			conn.Close(context.Background())
			c.running = p
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("pgtest: postgres exited at start (%v):\n%s", p.err, c.logSince(offset))
		case <-ctx.Done():
			cmd.Process.Signal(syscall.SIGQUIT)
			<-p.done
			return fmt.Errorf("pgtest: postgres did not accept connections within %v (last: %v):\n%s", startTimeout, err, c.logSince(offset))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// logSince returns the postmaster's log from offset on, for an error.
func (c *Cluster) logSince(offset int64) string {
	b, err := os.ReadFile(c.logFile())
	if err != nil || offset > int64(len(b)) {
		return ""
	}
	return string(b[offset:])
}

// CPU returns the CPU time (user and system) the running cluster's
// processes have used since it started: the postmaster's own, that of its
// children that have exited (backends of closed connections), and that
// of those still running. It reads /proc (Linux).
func (c *Cluster) CPU() (time.Duration, error) {
	c.mu.Lock()
	p := c.running
	c.mu.Unlock()
	if p == nil {
		return 0, errors.New("pgtest: the cluster is not running")
	}
	// Every process of a cluster is the postmaster or a child of it
	// (backends, the checkpointer, …): each child makes a session of its
	// own, so they share no process group.
	master := strconv.Itoa(p.cmd.Process.Pid)
	var ticks uint64
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("pgtest: %w", err)
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// Fields after the command (which may hold spaces) in
		// parentheses: state ppid pgrp session tty tpgid flags minflt
		// cminflt majflt cmajflt utime stime cutime cstime ...
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 15 || (e.Name() != master && f[1] != master) {
			continue
		}
		for k, field := range f[11:15] {
			if k >= 2 && e.Name() != master {
				break // waited-for children count only for the postmaster
			}
			n, _ := strconv.ParseUint(field, 10, 64)
			ticks += n
		}
	}
	// USER_HZ is 100 on every Linux this runs on.
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// stop shuts the postmaster down (fast mode) and waits for it.
func (c *Cluster) stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.running
	if p == nil {
		return nil
	}
	c.running = nil
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pgtest: stop postgres: %w", err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(stopTimeout):
	}
	// Stuck: immediate shutdown, then the hard way.
	p.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	return fmt.Errorf("pgtest: postgres did not stop within %v (fast shutdown); it was killed", stopTimeout)
}

// close stops the cluster and removes its files.
func (c *Cluster) close() error {
	err := c.stop()
	if rerr := os.RemoveAll(c.dir); rerr != nil {
		err = errors.Join(err, fmt.Errorf("pgtest: %w", rerr))
	}
	c.owner.Close()
	return err
}
