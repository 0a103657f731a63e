package nginx_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
)

// binDir holds the certserver binary built for this package's tests.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "certserver-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// certserverBinary builds cmd/certserver once for all tests that need it.
func certserverBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(binDir, "certserver")
	buildOnce.Do(func() {
		cmd := exec.Command("go", "build", "-o", bin, "github.com/certserver/certserver/cmd/certserver")
		cmd.Dir = filepath.Dir(nginxtest.SnippetDir(t))
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/certserver: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}

// sidecar is a `certserver serve` process with its own store, socket and
// admin API. restart starts it again on the same configuration and store.
type sidecar struct {
	bin       string
	sock      string
	admin     string
	tokenFile string
	logFile   string
	conf      string
	waitAddrs []string // TCP addresses that must accept connections once started
	ready     bool     // started means /readyz answers 200, not only /healthz
	cmd       *exec.Cmd
	exited    chan struct{}
}

// sidecarOptions adds to the configuration startSidecarWith writes.
type sidecarOptions struct {
	// Socket is the certificate endpoint's unix socket. Default: a new
	// one in a short temporary directory.
	Socket string
	// MaxAge is [certs] max_age. Default "1s".
	MaxAge string
	// Extra is TOML appended to the configuration: further sections such
	// as [challenge], [acme], [renewer] and [on_demand].
	Extra string
	// WaitFor are TCP addresses (a challenge listener) that must accept
	// connections before the sidecar counts as started.
	WaitFor []string
	// Host is the loopback address of the admin API, for a test that
	// stands several hosts up. Default 127.0.0.1.
	Host string
	// Store is TOML added to the [store] section
	// (key_encryption_key_file).
	Store string
	// Ready makes start wait for GET /readyz rather than /healthz: a
	// fleet host is ready once its copy caught up.
	Ready bool
}

// startSidecar runs `certserver serve` with a generated configuration whose
// cache times are all 1s, and waits until its socket and admin API answer.
func startSidecar(t *testing.T, bin string) *sidecar {
	t.Helper()
	return startSidecarWith(t, bin, sidecarOptions{})
}

// startSidecarWith is startSidecar with opts added to the configuration.
func startSidecarWith(t testing.TB, bin string, opts sidecarOptions) *sidecar {
	t.Helper()
	dir := t.TempDir()
	host := opts.Host
	if host == "" {
		host = "127.0.0.1"
	}
	s := &sidecar{
		bin:       bin,
		sock:      opts.Socket,
		admin:     freeAddrOn(t, host),
		ready:     opts.Ready,
		tokenFile: filepath.Join(dir, "admin.token"),
		logFile:   filepath.Join(dir, "certserver.log"),
		conf:      filepath.Join(dir, "certserver.toml"),
		waitAddrs: opts.WaitFor,
	}
	if s.sock == "" {
		s.sock = filepath.Join(shortTempDir(t), "certs.sock")
	}
	maxAge := opts.MaxAge
	if maxAge == "" {
		maxAge = "1s"
	}
	extra := opts.Extra
	if !strings.Contains(extra, "[challenge]") {
		// serve's default challenge listener is the fixed 127.0.0.1:9402,
		// which another package's test may hold at the same moment.
		extra += "\n[challenge]\nlisten = \"\"\n"
	}
	token := make([]byte, 16)
	rand.Read(token)
	if err := os.WriteFile(s.tokenFile, []byte(hex.EncodeToString(token)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.conf, []byte(fmt.Sprintf(`
[store]
path = %q
%s
[certs]
socket = %q
max_age = %q
min_age = "1s"
not_found_max_age = "1s"

[admin]
listen = %q
token_file = %q

[log]
level = "debug"
`, filepath.Join(dir, "store"), opts.Store, s.sock, maxAge, s.admin, s.tokenFile)+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.cmd != nil {
			s.cmd.Process.Kill()
			<-s.exited
		}
		if t.Failed() {
			t.Logf("certserver log:\n%s", s.log())
		}
	})
	s.start(t)
	return s
}

// start runs `certserver serve` on s's configuration, its output appended
// to the log file, and waits until it answers.
func (s *sidecar) start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(s.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(s.bin, "serve", "--config", s.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "CERTSERVER_ADMIN_TOKEN=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited

	timeout := 10 * time.Second
	if s.ready {
		timeout = 3 * time.Minute // a new fleet host copies the fleet first
	}
	eventually(t, timeout, "certserver serve answers", func() error {
		select {
		case <-exited:
			t.Fatalf("certserver serve exited: %v\n%s", cmd.ProcessState, s.log())
		default:
		}
		c, err := net.Dial("unix", s.sock)
		if err != nil {
			return err
		}
		c.Close()
		for _, a := range s.waitAddrs {
			c, err := net.Dial("tcp", a)
			if err != nil {
				return err
			}
			c.Close()
		}
		path := "/healthz"
		if s.ready {
			path = "/readyz"
		}
		resp, err := http.Get("http://" + s.admin + path)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", path, resp.Status)
		}
		return nil
	})
}

// kill ends the sidecar with SIGKILL, as a crash or the OOM killer would,
// and waits until it is gone.
func (s *sidecar) kill(t testing.TB) {
	t.Helper()
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-s.exited
}

// restart starts the sidecar again, after stop or kill, on the same
// configuration, store and addresses.
func (s *sidecar) restart(t testing.TB) {
	t.Helper()
	select {
	case <-s.exited:
	default:
		t.Fatalf("restart: certserver serve is still running")
	}
	s.start(t)
}

func (s *sidecar) log() string {
	b, _ := os.ReadFile(s.logFile)
	return string(b)
}

// importLeaf imports l through `certserver import --cert --key` and fails
// unless the command reports it imported.
func (s *sidecar) importLeaf(t *testing.T, l leaf) {
	t.Helper()
	certFile, keyFile := l.writeFiles(t, t.TempDir(), "import")
	out, err := exec.Command(s.bin, "import", "--admin", "http://"+s.admin, "--token-file", s.tokenFile,
		"--cert", certFile, "--key", keyFile).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("imported")) {
		t.Fatalf("certserver import: %v\n%s", err, out)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (s *sidecar) stop(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("certserver serve did not stop within 15s of SIGTERM")
	}
	if !s.cmd.ProcessState.Success() {
		t.Errorf("certserver serve exited with %v after SIGTERM", s.cmd.ProcessState)
	}
}

func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	return freeAddrOn(t, "127.0.0.1")
}

// freeAddrOn returns an address of host whose port was free a moment
// ago, held for t (nginxtest.FreeAddr).
func freeAddrOn(t testing.TB, host string) string {
	t.Helper()
	return nginxtest.FreeAddr(t, host)
}

// TestIntegration is the end-to-end test of serving imported certificates:
// real nginx with the project's snippets and Lua module, the real sidecar
// with its store, and certificates imported with the real CLI, checked by a
// TLS client.
func TestIntegration(t *testing.T) {
	bin := certserverBinary(t)

	fbDir := t.TempDir()
	if out, err := exec.Command(bin, "fallback-cert", "--out", fbDir).CombinedOutput(); err != nil {
		t.Fatalf("certserver fallback-cert: %v\n%s", err, out)
	}
	fbCert, fbKey := filepath.Join(fbDir, "fallback.crt"), filepath.Join(fbDir, "fallback.key")
	fallbackDER := readLeafDER(t, fbCert)

	side := startSidecar(t, bin)
	ngx := nginxtest.Start(t, nginxtest.Options{
		Sidecar:      "unix:" + side.sock,
		FallbackCert: fbCert,
		FallbackKey:  fbKey,
	})
	addr := ngx.HTTPSAddr()
	masterPID := ngx.PID()

	ca := newTestCA(t)
	wild := ca.issue(t, "*.wild.test")
	idn := ca.issue(t, "xn--bcher-kva.test") // bücher.test
	plain := ca.issue(t, "www.plain.test")
	for _, l := range []leaf{wild, idn, plain} {
		side.importLeaf(t, l)
	}

	// verified checks that addr serves the leaf with serial want for sni
	// and that its chain verifies for sni against the test CA.
	verified := func(sni string, want leaf) func() error {
		return func() error {
			certs, err := handshake(addr, sni, ca.pool)
			if err != nil {
				return fmt.Errorf("%q: %w", sni, err)
			}
			if got := certs[0].SerialNumber; got.Cmp(want.serial) != 0 {
				return fmt.Errorf("%q served serial %v, want %v", sni, got, want.serial)
			}
			return nil
		}
	}
	fallback := func(sni string) func() error {
		return func() error {
			certs, err := handshake(addr, sni, nil)
			if err != nil {
				return fmt.Errorf("%q: %w", sni, err)
			}
			if !bytes.Equal(certs[0].Raw, fallbackDER) {
				return fmt.Errorf("%q served %q (serial %v), want the fallback", sni, certs[0].Subject, certs[0].SerialNumber)
			}
			return nil
		}
	}
	must := func(t *testing.T, check func() error) {
		t.Helper()
		if err := check(); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("each name gets its certificate", func(t *testing.T) {
		for _, tc := range []struct {
			desc string
			sni  string
			want leaf
		}{
			{desc: "plain name", sni: "www.plain.test", want: plain},
			{desc: "IDN in punycode", sni: "xn--bcher-kva.test", want: idn},
			{desc: "name under a wildcard", sni: "a.wild.test", want: wild},
			{desc: "another name under the wildcard", sni: "b.wild.test", want: wild},
			{desc: "upper case", sni: "WWW.Plain.Test", want: plain},
		} {
			t.Run(tc.desc, func(t *testing.T) { must(t, verified(tc.sni, tc.want)) })
		}
	})

	t.Run("other names get the fallback", func(t *testing.T) {
		for _, tc := range []struct {
			desc string
			sni  string
		}{
			{desc: "unknown name", sni: "unknown.test"},
			{desc: "wildcard's own domain", sni: "wild.test"},
			{desc: "two labels under the wildcard", sni: "a.b.wild.test"},
			{desc: "no SNI", sni: ""},
		} {
			t.Run(tc.desc, func(t *testing.T) { must(t, fallback(tc.sni)) })
		}
	})

	t.Run("a replaced certificate is served without a reload", func(t *testing.T) {
		renewed := ca.issue(t, "www.plain.test")
		side.importLeaf(t, renewed)
		eventually(t, 15*time.Second, "renewed certificate served", verified("www.plain.test", renewed))
		plain = renewed
		if pid := ngx.PID(); pid != masterPID {
			t.Errorf("nginx master PID %d, was %d", pid, masterPID)
		}
		if n := ngx.Reloads(); n != 0 {
			t.Errorf("nginx reloaded %d times", n)
		}
	})

	t.Run("with the sidecar stopped cached names are still served", func(t *testing.T) {
		// Every name below has been fetched; the caches hold them.
		cached := map[string]leaf{"www.plain.test": plain, "xn--bcher-kva.test": idn, "a.wild.test": wild}
		for sni, l := range cached {
			must(t, verified(sni, l))
		}
		side.stop(t)

		// For longer than the certificates' max-age (1s) plus the Lua
		// module's error back-off (2s), so every entry is stale and the
		// sidecar has been asked again and again.
		deadline := time.Now().Add(4 * time.Second)
		handshakes := 0
		for time.Now().Before(deadline) {
			for sni, l := range cached {
				must(t, verified(sni, l))
			}
			must(t, fallback("never-seen.test"))
			// Never asked about, but the wildcard that covers it is cached:
			// better than the fallback, which covers nothing.
			must(t, verified("c.wild.test", wild))
			handshakes += len(cached) + 2
		}

		log := ngx.ErrorLog()
		down := countLines(log, "certserver: sidecar at")
		errorLines := countLines(log, "[error]")
		t.Logf("%d handshakes with the sidecar down; %d sidecar-down lines, %d [error] lines in the nginx log", handshakes, down, errorLines)
		if down < 1 {
			t.Errorf("nginx error log does not report the stopped sidecar:\n%s", log)
		}
		// Once per outage, by the worker that found it; nginx's own
		// connect() lines only for requests already under way.
		if down > 1 || errorLines > 2 {
			t.Errorf("nginx error log is not rate-limited (%d sidecar-down lines, %d [error] lines for %d handshakes):\n%s", down, errorLines, handshakes, log)
		}
	})

	if n := ngx.Reloads(); n != 0 || ngx.PID() != masterPID {
		t.Errorf("nginx reloaded (%d) or restarted", n)
	}
	ngx.AssertCleanErrorLog(t)
	if t.Failed() {
		t.Logf("nginx error log:\n%s", ngx.ErrorLog())
	}
}

// readLeafDER returns the DER of the first certificate in a PEM file.
func readLeafDER(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s: no PEM certificate", path)
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return block.Bytes
}
