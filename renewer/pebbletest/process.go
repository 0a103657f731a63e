package pebbletest

import (
	"crypto/x509"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"go/build"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// launch writes Pebble's configuration with fresh ports, starts it and
// waits until its directory answers.
func (s *Server) launch(bin, dir string, ca *listenerCerts, opts Options) (*process, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	s.HTTPPort, s.TLSPort = opts.HTTPPort, opts.TLSPort
	if s.HTTPPort == 0 || s.TLSPort == 0 {
		more, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		if s.HTTPPort == 0 {
			s.HTTPPort = more[0]
		}
		if s.TLSPort == 0 {
			s.TLSPort = more[1]
		}
	}
	s.cfgPath = filepath.Join(dir, "pebble-config.json")
	acmeAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	mgmtAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	if err := writeConfig(s.cfgPath, acmeAddr, mgmtAddr, ca, s.HTTPPort, s.TLSPort, opts); err != nil {
		return nil, err
	}
	return s.run(bin, dir, acmeAddr, mgmtAddr, ca.pool, opts, os.O_TRUNC)
}

// run starts Pebble with the configuration written at s.cfgPath, whose
// listeners are acmeAddr and mgmtAddr, and waits until its directory
// answers. logFlag is os.O_TRUNC to start the log afresh, 0 to add to it.
func (s *Server) run(bin, dir, acmeAddr, mgmtAddr string, pool *x509.CertPool, opts Options, logFlag int) (*process, error) {
	cfgPath := s.cfgPath
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|logFlag|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-config", cfgPath, "-dnsserver", s.dnsAddr, "-strict=false")
	cmd.Dir = dir
	cmd.Env = pebbleEnv(opts)
	out := s.issued.writer(logFile)
	cmd.Stdout, cmd.Stderr = out, out
	setParentDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &process{
		cmd:     cmd,
		exited:  make(chan struct{}),
		acmeURL: "https://" + acmeAddr,
		mgmtURL: "https://" + mgmtAddr,
	}
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(p.exited)
	}()

	client := newClient(pool, 10*time.Second)
	deadline := time.Now().Add(startTimeout)
	for {
		if ready(client, p.acmeURL+"/dir") && ready(client, p.mgmtURL+"/roots/0") {
			return p, nil
		}
		select {
		case <-p.exited:
			if strings.Contains(s.logTail(20), "address already in use") {
				return nil, fmt.Errorf("pebble exited: %w", errPortTaken)
			}
			return nil, fmt.Errorf("pebble exited before answering (%s)", cmd.ProcessState)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("pebble did not answer on %s within %s", p.acmeURL, startTimeout)
		}
	}
}

func ready(c *http.Client, url string) bool {
	resp, err := c.Get(url)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// process is a running pebble.
type process struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	acmeURL string
	mgmtURL string
}

func (p *process) stop() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Restart starts a stopped Pebble again on the same ports, behind the
// same front, with the same options (a running one is stopped first). It
// forgets everything: accounts, orders, authorizations and its root and
// intermediates, which are new (Roots fetches them again). Its log goes
// on in the same file. It fails the test when Pebble does not come up.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.procMu.Lock()
	defer s.procMu.Unlock()
	acme, err := url.Parse(s.acmeURL)
	if err != nil {
		t.Fatalf("pebbletest: restart: %v", err)
	}
	mgmt, err := url.Parse(s.ManagementURL)
	if err != nil {
		t.Fatalf("pebbletest: restart: %v", err)
	}
	// The ports were free when Pebble took them first and nothing else
	// asks for them; a port another process took meanwhile fails here.
	p, err := s.run(s.bin, s.dir, acme.Host, mgmt.Host, s.tlsPool, s.opts, 0)
	if err != nil {
		t.Fatalf("pebbletest: restart: %v\n%s", err, s.logTail(40))
	}
	s.proc = p
	s.rootsMu.Lock()
	s.roots = nil
	s.rootsMu.Unlock()
}

// pebbleEnv is the environment of the pebble process: the test's own minus
// every PEBBLE_ variable (a developer's PEBBLE_VA_ALWAYS_VALID must not
// make tests pass), plus no sleeps before validation and no rejected nonces.
func pebbleEnv(opts Options) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PEBBLE_") {
			env = append(env, kv)
		}
	}
	env = append(env,
		"PEBBLE_VA_NOSLEEP=1",
		"PEBBLE_WFE_NONCEREJECT=0",
		"PEBBLE_AUTHZREUSE="+strconv.Itoa(opts.AuthzReuse),
		"PEBBLE_ALTERNATE_ROOTS="+strconv.Itoa(opts.AlternateRoots),
	)
	if opts.ChainLength > 0 {
		env = append(env, "PEBBLE_CHAIN_LENGTH="+strconv.Itoa(opts.ChainLength))
	}
	return env
}

// writeConfig writes Pebble's JSON configuration (cmd/pebble/main.go's
// config struct).
func writeConfig(path, acmeAddr, mgmtAddr string, ca *listenerCerts, httpPort, tlsPort int, opts Options) error {
	type profile struct {
		Description    string `json:"description"`
		ValidityPeriod uint64 `json:"validityPeriod"`
	}
	profiles := make(map[string]profile, len(opts.Profiles))
	for name, p := range opts.Profiles {
		secs := uint64(p.Validity / time.Second)
		if secs == 0 {
			return fmt.Errorf("profile %q: validity %s is under a second", name, p.Validity)
		}
		profiles[name] = profile{Description: p.Description, ValidityPeriod: secs}
	}
	blocked := opts.BlockedDomains
	if blocked == nil {
		blocked = []string{}
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  acmeAddr,
		"managementListenAddress":        mgmtAddr,
		"certificate":                    ca.certPath,
		"privateKey":                     ca.keyPath,
		"httpPort":                       httpPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": len(opts.EABKeys) > 0,
		"externalAccountMACKeys":         opts.EABKeys,
		"domainBlocklist":                blocked,
		// Whole seconds are all Retry-After can say; 1 keeps lego's polls
		// short (without the header it waits 5 seconds).
		"retryAfter":   map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm": "ecdsa",
		"profiles":     profiles,
	}}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// FindBinary returns the path of the pebble executable: $PEBBLE_BIN when
// set, else the first pebble found in $PATH, $GOBIN, $GOPATH/bin (default
// ~/go/bin) and /tmp/gobin. The error names every place looked at and the
// command that installs Pebble.
func FindBinary() (string, error) {
	if p := os.Getenv("PEBBLE_BIN"); p != "" {
		if isExecutable(p) {
			return p, nil
		}
		return "", fmt.Errorf("PEBBLE_BIN=%s is not an executable file; install Pebble with: %s", p, Install)
	}
	looked := []string{"$PATH"}
	if p, err := exec.LookPath("pebble"); err == nil {
		return p, nil
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	for _, gopath := range filepath.SplitList(build.Default.GOPATH) {
		dirs = append(dirs, filepath.Join(gopath, "bin"))
	}
	dirs = append(dirs, "/tmp/gobin")
	for _, d := range dirs {
		p := filepath.Join(d, "pebble")
		if isExecutable(p) {
			return p, nil
		}
		looked = append(looked, d)
	}
	return "", fmt.Errorf("pebble %s not found (looked in $PEBBLE_BIN, %s); install it with: %s",
		Version, strings.Join(looked, ", "), Install)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// BinaryVersion returns the module version the pebble binary at path was
// built from ("v2.10.1"), or "" when the binary does not say.
func BinaryVersion(path string) string {
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return ""
	}
	return info.Main.Version
}

// freePorts returns n distinct TCP ports that were free on 127.0.0.1 a
// moment ago.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
