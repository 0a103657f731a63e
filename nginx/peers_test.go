package nginx_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/nginx/nginxtest"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/certtest"
)

// The three servers BenchmarkPeers compares, and what it needs to
// measure them: the certificates, each server's start and its way of
// taking a new certificate, and the CPU and memory of a set of
// processes from /proc.

var peerDialer = &net.Dialer{Timeout: 10 * time.Second}

// peerStartBound bounds a server's start, and the serving of a new
// certificate: nginx with a server block per name reads them all at
// start and again on reload, about 2 to 5 ms a block with OpenSSL 3.0
// on these CPUs (minutes at 50,000).
const peerStartBound = 20 * time.Minute

// peerLeaf is one name's certificate.
type peerLeaf struct {
	name     string
	serial   *big.Int
	chainPEM []byte // the leaf, then the intermediate
	keyPEM   []byte
	file     string // chainPEM then keyPEM, one file
}

// peerSet is the certificates every server of BenchmarkPeers serves, and
// nginx's fallback certificate.
type peerSet struct {
	dir                 string
	leaves              []peerLeaf
	fallbackCert, fbKey string
	certDir             string // the leaves' files, name.pem
}

// newPeerSet mints n certificates for random names (ECDSA P-256, each
// with its own key, signed by one ECDSA intermediate) and writes each as
// one PEM file, chain then key.
func newPeerSet(b *testing.B, n int) *peerSet {
	b.Helper()
	root := certtest.New(b, certtest.Template{CommonName: "certserver peers root", IsCA: true}, nil)
	inter := certtest.New(b, certtest.Template{CommonName: "certserver peers E1", IsCA: true}, root)
	s := &peerSet{dir: b.TempDir(), leaves: make([]peerLeaf, n)}
	s.certDir = filepath.Join(s.dir, "certs")
	if err := os.Mkdir(s.certDir, 0o755); err != nil {
		b.Fatal(err)
	}
	fb := certtest.New(b, certtest.Template{DNSNames: []string{"fallback.invalid"}}, nil)
	s.fallbackCert, s.fbKey = filepath.Join(s.dir, "fallback.crt"), filepath.Join(s.dir, "fallback.key")
	if err := errors.Join(os.WriteFile(s.fallbackCert, fb.CertPEM, 0o600), os.WriteFile(s.fbKey, fb.KeyPEM, 0o600)); err != nil {
		b.Fatal(err)
	}

	names := make(map[string]bool, n)
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	for i := range s.leaves {
		for {
			var l [12]byte
			for j := range l {
				l[j] = letters[rand.IntN(len(letters))]
			}
			name := string(l[:]) + ".peers.test"
			if !names[name] {
				names[name] = true
				s.leaves[i].name = name
				break
			}
		}
	}
	workers := runtime.GOMAXPROCS(0)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				l := &s.leaves[i]
				c, err := certtest.Mint(certtest.Template{DNSNames: []string{l.name}}, inter)
				if err == nil {
					l.serial = c.Cert.SerialNumber
					l.chainPEM = append(append([]byte(nil), c.CertPEM...), inter.CertPEM...)
					l.keyPEM = c.KeyPEM
					l.file = filepath.Join(s.certDir, l.name+".pem")
					err = os.WriteFile(l.file, append(append([]byte(nil), l.chainPEM...), l.keyPEM...), 0o600)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return s
}

// writeStore writes the leaves into a new Badger store in dir, as
// imported certificates, through the Store interface.
func (s *peerSet) writeStore(b *testing.B, dir string) {
	b.Helper()
	st, err := store.OpenBadger(dir, store.BadgerOptions{Logger: slog.New(slog.DiscardHandler), NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	const batch = 500
	for from := 0; from < len(s.leaves) && err == nil; from += batch {
		var cs []*store.Certificate
		for _, l := range s.leaves[from:min(from+batch, len(s.leaves))] {
			c, perr := store.ParseCertificate(l.chainPEM, l.keyPEM, now)
			if perr != nil {
				err = perr
				break
			}
			c.Source, c.Origin, c.StoredAt = store.SourceImport, "bench", now
			cs = append(cs, c)
		}
		if err == nil {
			err = st.PutCertificates(context.Background(), cs)
		}
	}
	if err := errors.Join(err, st.Close()); err != nil {
		b.Fatalf("write the store: %v", err)
	}
}

// waitServed polls until addr serves l's certificate, failing b after
// bound or when exited is closed.
func waitServed(b *testing.B, what, addr string, l peerLeaf, exited <-chan struct{}, bound time.Duration, log func() string) {
	b.Helper()
	deadline := time.Now().Add(bound)
	for {
		_, err := peerClient{}.handshake(addr, l)
		if err == nil {
			return
		}
		select {
		case <-exited:
			b.Fatalf("%s exited before serving %s:\n%s", what, l.name, log())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: %s not served within %v: %v\n%s", what, l.name, bound, err, log())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// peerCertserver is certserver's side: `certserver serve` and nginx.
type peerCertserver struct {
	*peer
	ngx    *nginxtest.Nginx
	admin  string
	side   *exec.Cmd
	routes workerPorts // local ports that reach each nginx worker
}

const peerToken = "peers-bench-admin-token-0123456789"

// startPeerCertserver writes the set into a store, runs `certserver
// serve` on it with the default configuration but for its addresses,
// and nginx with the project's snippets in front, and waits until a name
// is served.
func startPeerCertserver(b *testing.B, set *peerSet) *peerCertserver {
	b.Helper()
	bin := certserverBinary(b)
	dir := b.TempDir()
	storeDir := filepath.Join(dir, "store")
	set.writeStore(b, storeDir)
	sock := filepath.Join(shortTempDir(b), "certs.sock")
	p := &peerCertserver{peer: &peer{name: "certserver"}, admin: freeAddrOn(b, "127.0.0.1")}
	conf := filepath.Join(dir, "certserver.toml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, `
[store]
path = %q
[certs]
socket = %q
[challenge]
listen = ""
[admin]
listen = %q
`, storeDir, sock, p.admin), 0o600); err != nil {
		b.Fatal(err)
	}
	logPath := filepath.Join(dir, "certserver.log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	readLog := func() string { out, _ := os.ReadFile(logPath); return string(out) }

	start := time.Now()
	p.side = exec.Command(bin, "serve", "--config", conf)
	p.side.Env = append(os.Environ(), "CERTSERVER_ADMIN_TOKEN="+peerToken)
	p.side.Stdout, p.side.Stderr = logf, logf
	if err := p.side.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { p.side.Wait(); close(exited) }()
	b.Cleanup(func() {
		p.side.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			p.side.Process.Kill()
			<-exited
		}
	})
	// Stats: the parse counters of each worker, for the warm-up.
	p.ngx = nginxtest.Start(b, nginxtest.Options{Sidecar: "unix:" + sock, FallbackCert: set.fallbackCert, FallbackKey: set.fbKey, Stats: true})
	p.addr = p.ngx.HTTPSAddr()
	waitServed(b, "certserver", p.addr, set.leaves[0], exited, 2*time.Minute, func() string {
		return "certserver log:\n" + readLog() + "\nnginx error log:\n" + p.ngx.ErrorLog()
	})
	p.start = time.Since(start)
	p.pids = func() []int { return append(processTree(p.ngx.PID()), p.side.Process.Pid) }
	if p.routes, err = findWorkerPorts(p.addr, p.ngx.Workers(), 4); err != nil {
		b.Fatalf("certserver: %v", err)
	}
	return p
}

// add imports l through the admin API.
func (p *peerCertserver) add(l peerLeaf) error {
	body, err := json.Marshal(api.ImportRequest{ChainPEM: string(l.chainPEM), KeyPEM: string(l.keyPEM), Source: "import", Origin: "bench"})
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+p.admin+"/v1/certificates", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+peerToken)
	req.Header.Set("Content-Type", "application/json")
	return peerPost(req)
}

// peerPost sends req and wants a 2xx answer.
func peerPost(req *http.Request) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s %s", req.Method, req.URL, resp.Status, out)
	}
	return nil
}

// peerStatic is nginx with a server block per name.
type peerStatic struct {
	*peer
	dir string
	cmd *exec.Cmd
}

// startPeerStatic starts nginx with one server {} block per name (listen,
// server_name, ssl_certificate and ssl_certificate_key of the name's
// file) and a directory of further blocks included after them, and
// waits until it serves a name. Its server_names_hash is sized for the
// names, as nginx asks when it is not.
func startPeerStatic(b *testing.B, set *peerSet) *peerStatic {
	b.Helper()
	bin := nginxtest.Binary(b)
	p := &peerStatic{peer: &peer{name: "static", addr: freeAddrOn(b, "127.0.0.1")}, dir: b.TempDir()}
	for _, d := range []string{"logs", "tmp", "sites"} {
		if err := os.Mkdir(filepath.Join(p.dir, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	var sites bytes.Buffer
	for i, l := range set.leaves {
		sites.WriteString(staticServer(p.addr, l, i == 0))
	}
	if err := os.WriteFile(filepath.Join(p.dir, "servers.conf"), sites.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	hash := 1024
	for hash < 2*len(set.leaves) {
		hash *= 2
	}
	var c strings.Builder
	fmt.Fprintf(&c, "daemon off;\nmaster_process on;\nworker_processes 2;\n")
	if os.Geteuid() == 0 {
		c.WriteString("user root;\n")
	}
	fmt.Fprintf(&c, "pid %s;\nerror_log %s notice;\nevents { worker_connections 1024; }\nhttp {\n    access_log off;\n",
		filepath.Join(p.dir, "logs", "nginx.pid"), filepath.Join(p.dir, "logs", "error.log"))
	for _, d := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&c, "    %s_temp_path %s;\n", d, filepath.Join(p.dir, "tmp", d))
	}
	fmt.Fprintf(&c, "    server_names_hash_max_size %d;\n    server_names_hash_bucket_size 64;\n    include %s;\n    include %s;\n}\n",
		hash, filepath.Join(p.dir, "servers.conf"), filepath.Join(p.dir, "sites", "*.conf"))
	conf := filepath.Join(p.dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(c.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	logPath := filepath.Join(p.dir, "logs", "error.log")
	out, err := os.Create(filepath.Join(p.dir, "logs", "stderr.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()

	start := time.Now()
	p.cmd = exec.Command(bin, "-p", p.dir+"/", "-c", conf, "-e", logPath)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { p.cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		pid := p.cmd.Process.Pid
		syscall.Kill(pid, syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
		syscall.Kill(-pid, syscall.SIGKILL)
		<-exited
	})
	waitServed(b, "static nginx", p.addr, set.leaves[0], exited, peerStartBound, func() string {
		l, _ := os.ReadFile(logPath)
		return "nginx error log:\n" + string(l)
	})
	p.start = time.Since(start)
	p.pids = func() []int { return processTree(p.cmd.Process.Pid) }
	return p
}

// staticServer is the server block of one name.
func staticServer(addr string, l peerLeaf, first bool) string {
	opts := ""
	if first {
		opts = " reuseport" // once per address; each worker its own socket
	}
	return fmt.Sprintf("server {\n    listen %s ssl%s;\n    server_name %s;\n    ssl_certificate %s;\n    ssl_certificate_key %s;\n    location / { return 200 \"static\\n\"; }\n}\n",
		addr, opts, l.name, l.file, l.file)
}

// add writes a server block for l and reloads nginx (SIGHUP).
func (p *peerStatic) add(l peerLeaf) error {
	if err := os.WriteFile(l.file, append(append([]byte(nil), l.chainPEM...), l.keyPEM...), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(p.dir, "sites", l.name+".conf"), []byte(staticServer(p.addr, l, false)), 0o644); err != nil {
		return err
	}
	return p.cmd.Process.Signal(syscall.SIGHUP)
}

// caddyBin is the Caddy binary BenchmarkPeers runs, and its version.
type caddyBin struct{ path, version string }

// caddyBinary returns CERTSERVER_BENCH_CADDY, else caddy on the PATH,
// failing b with how to get one when there is none.
func caddyBinary(b *testing.B) caddyBin {
	b.Helper()
	path := os.Getenv("CERTSERVER_BENCH_CADDY")
	if path == "" {
		p, err := exec.LookPath("caddy")
		if err != nil {
			b.Fatal("BenchmarkPeers needs Caddy: set CERTSERVER_BENCH_CADDY to a caddy binary, or install Debian's caddy package (scripts/deps.sh does); " +
				"scripts/bench.sh builds v2.11.9 with go install")
		}
		path = p
	}
	out, err := exec.Command(path, "version").Output()
	if err != nil {
		b.Fatalf("%s version: %v", path, err)
	}
	version := strings.TrimSpace(string(out))
	// A go install'ed Caddy says "unknown"; its build information names
	// the module's version.
	if info, err := buildinfo.ReadFile(path); err == nil && info.Main.Version != "" {
		version = info.Main.Path + " " + info.Main.Version
	}
	return caddyBin{path: path, version: version}
}

// peerCaddy is Caddy serving the folder of certificates.
type peerCaddy struct {
	*peer
	admin  string
	config []byte
	cmd    *exec.Cmd
}

// startPeerCaddy runs Caddy with an HTTPS server that serves the
// certificates loaded from the set's folder (automatic HTTPS off: no
// ACME, no redirects), and waits until it serves a name.
func startPeerCaddy(b *testing.B, caddy caddyBin, set *peerSet) *peerCaddy {
	b.Helper()
	dir := b.TempDir()
	p := &peerCaddy{peer: &peer{name: "caddy", addr: freeAddrOn(b, "127.0.0.1")}, admin: freeAddrOn(b, "127.0.0.1")}
	cfg := map[string]any{
		"admin":   map[string]any{"listen": p.admin},
		"storage": map[string]any{"module": "file_system", "root": filepath.Join(dir, "data")},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "WARN"}}},
		"apps": map[string]any{
			"http": map[string]any{"servers": map[string]any{"bench": map[string]any{
				"listen":                  []string{p.addr},
				"protocols":               []string{"h1", "h2"},
				"automatic_https":         map[string]any{"disable": true},
				"tls_connection_policies": []any{map[string]any{}},
				"routes":                  []any{map[string]any{"handle": []any{map[string]any{"handler": "static_response", "body": "caddy\n"}}}},
			}}},
			"tls": map[string]any{
				"certificates": map[string]any{"load_folders": []string{set.certDir}},
				"cache":        map[string]any{"capacity": len(set.leaves) + 100},
			},
		},
	}
	var err error
	if p.config, err = json.Marshal(cfg); err != nil {
		b.Fatal(err)
	}
	conf := filepath.Join(dir, "caddy.json")
	if err := os.WriteFile(conf, p.config, 0o600); err != nil {
		b.Fatal(err)
	}
	logPath := filepath.Join(dir, "caddy.log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()

	start := time.Now()
	p.cmd = exec.Command(caddy.path, "run", "--config", conf)
	p.cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "xdg-data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "xdg-config"))
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { p.cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-exited
		}
	})
	waitServed(b, "caddy", p.addr, set.leaves[0], exited, peerStartBound, func() string {
		l, _ := os.ReadFile(logPath)
		return "caddy log:\n" + string(l)
	})
	p.start = time.Since(start)
	p.pids = func() []int { return []int{p.cmd.Process.Pid} }
	return p
}

// add puts l's file in the folder (it is there already: the set wrote
// every file) and makes Caddy load its configuration again, which reads
// the folder.
func (p *peerCaddy) add(l peerLeaf) error {
	if err := os.WriteFile(l.file, append(append([]byte(nil), l.chainPEM...), l.keyPEM...), 0o600); err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPost, "http://"+p.admin+"/load", bytes.NewReader(p.config))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	// The same configuration is not loaded again unless asked to.
	req.Header.Set("Cache-Control", "must-revalidate")
	return peerPost(req)
}

// processTree returns pid and its descendants (an nginx master and its
// workers).
func processTree(pid int) []int {
	pids := []int{pid}
	for i := 0; i < len(pids); i++ {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pids[i], pids[i]))
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				pids = append(pids, c)
			}
		}
	}
	return pids
}

// processCPU returns the CPU time, user and system, that the processes
// have used so far.
func processCPU(b *testing.B, pids []int) time.Duration {
	b.Helper()
	var total time.Duration
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			b.Fatalf("CPU of process %d: %v", pid, err)
		}
		// After the command, in parentheses: utime and stime are the
		// 12th and 13th fields.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		for _, s := range f[11:13] {
			ticks, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				b.Fatalf("CPU of process %d: %v", pid, err)
			}
			total += time.Duration(ticks) * 10 * time.Millisecond // USER_HZ 100
		}
	}
	return total
}

// peerMemory is the memory of a set of processes in MB (10^6 bytes),
// summed over them from /proc/PID/smaps_rollup.
type peerMemory struct{ rss, pss, pssAnon, pssFile, pssShmem, anon float64 }

func (m peerMemory) String() string {
	return fmt.Sprintf("Pss %.0f MB (anonymous %.0f, file %.0f, shared memory %.0f), Rss %.0f MB",
		m.pss, m.pssAnon, m.pssFile, m.pssShmem, m.rss)
}

// processMemory sums the smaps_rollup of the processes.
func processMemory(b *testing.B, pids []int) peerMemory {
	b.Helper()
	var m peerMemory
	for _, pid := range pids {
		f, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			b.Fatalf("memory of process %d: %v", pid, err)
		}
		for line := range strings.SplitSeq(string(f), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			var dst *float64
			switch k {
			case "Rss":
				dst = &m.rss
			case "Pss":
				dst = &m.pss
			case "Pss_Anon":
				dst = &m.pssAnon
			case "Pss_File":
				dst = &m.pssFile
			case "Pss_Shmem":
				dst = &m.pssShmem
			case "Anonymous":
				dst = &m.anon
			default:
				continue
			}
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			if err != nil {
				b.Fatalf("smaps_rollup of %d: %q: %v", pid, line, err)
			}
			*dst += kb * 1024 / 1e6
		}
	}
	return m
}

// The warm-up of certserver's side: every nginx worker keeps its own
// parsed copy of each name, so a handshake per name parses each name in
// one worker only (whichever the kernel gave the connection). The
// warm-up goes on until every worker has parsed every name, checked with
// the Lua module's parse counters (nginxtest Options.Stats), and sends
// each handshake to the worker it is meant for: the listening sockets
// are nginx's reuseport ones, one per worker, and Linux picks among them
// by a hash of the connection's addresses, so a connection from a given
// local port always reaches the same worker.

// peerPortBase is the first local port tried for the connections routed
// to one worker. Below the ephemeral range (ip_local_port_range,
// 32768-60999 by default), so no connect() elsewhere is given one of
// them between their discovery and their use.
const peerPortBase = 20000

// workerPorts maps each nginx worker's process ID to local ports on
// 127.0.0.1 whose connections to its HTTPS address reach that worker.
type workerPorts map[string][]int

// findWorkerPorts asks addr for "/" from local ports peerPortBase and up
// (skipping the ones taken) until each of the workers has perWorker
// ports, and checks that a second connection from each port reaches the
// same worker.
func findWorkerPorts(addr string, workers, perWorker int) (workerPorts, error) {
	routes := make(workerPorts)
	full := 0
	for port := peerPortBase + rand.IntN(2000); port < 32768 && full < workers; port++ {
		pid, _, err := workerRequest(port, addr, "/")
		if errors.Is(err, syscall.EADDRINUSE) || errors.Is(err, syscall.EADDRNOTAVAIL) {
			continue // another process's
		}
		if err != nil {
			return nil, fmt.Errorf("find the worker of local port %d: %w", port, err)
		}
		if len(routes[pid]) < perWorker {
			routes[pid] = append(routes[pid], port)
			if len(routes[pid]) == perWorker {
				full++
			}
		}
	}
	if full < workers {
		return nil, fmt.Errorf("local ports %d to 32767 reached %d of %d workers %d times each: %v", peerPortBase, full, workers, perWorker, routes)
	}
	for pid, ports := range routes {
		for _, port := range ports {
			again, _, err := workerRequest(port, addr, "/")
			if err != nil {
				return nil, fmt.Errorf("local port %d again: %w", port, err)
			}
			if again != pid {
				return nil, fmt.Errorf("local port %d reached worker %s, then %s: the kernel does not route by address (no reuseport?)", port, pid, again)
			}
		}
	}
	return routes, nil
}

// dialFrom opens a TLS connection to addr from 127.0.0.1:port (0: any
// port) and makes the handshake. A connection from a chosen port closes
// with a reset (SO_LINGER 0) so that no TIME_WAIT keeps the port from
// the next one.
func dialFrom(port int, addr string, cfg *tls.Config) (*tls.Conn, error) {
	if port == 0 {
		return tls.DialWithDialer(peerDialer, "tcp", addr, cfg)
	}
	d := *peerDialer
	d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if err := raw.(*net.TCPConn).SetLinger(0); err != nil {
		raw.Close()
		return nil, err
	}
	conn := tls.Client(raw, cfg)
	conn.SetDeadline(time.Now().Add(d.Timeout))
	if err := conn.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

// workerRequest asks addr for path over a new TLS connection without SNI
// (nginx's own certificate, no lookup) from local port port, and returns
// the worker that answered (nginxtest.WorkerHeader) and the body.
func workerRequest(port int, addr, path string) (pid, body string, err error) {
	conn, err := dialFrom(port, addr, &tls.Config{InsecureSkipVerify: true, SessionTicketsDisabled: true})
	if err != nil {
		return "", "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: peers\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", "", fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", "", fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	pid = resp.Header.Get(nginxtest.WorkerHeader)
	if pid == "" {
		return "", "", fmt.Errorf("GET %s: no %s header", path, nginxtest.WorkerHeader)
	}
	return pid, string(b), nil
}

// workerParses are the records a worker of the Lua module has parsed:
// on the handshake path, and in all (with the pre-warm's timers).
type workerParses struct{ handshake, all int }

// parses reads every worker's parse counters through its ports.
func (r workerPorts) parses(addr string) (map[string]workerParses, error) {
	out := make(map[string]workerParses, len(r))
	for pid, ports := range r {
		got, body, err := workerRequest(ports[0], addr, nginxtest.StatsPath)
		if err != nil {
			return nil, fmt.Errorf("stats of worker %s: %w", pid, err)
		}
		if got != pid {
			return nil, fmt.Errorf("stats from local port %d: worker %s answered, not %s", ports[0], got, pid)
		}
		st, err := nginxtest.ParseStats(body)
		if err != nil {
			return nil, fmt.Errorf("stats of worker %s: %w", pid, err)
		}
		hs := st["parse_handshake"].N
		out[pid] = workerParses{handshake: hs, all: hs + st["parse_timer"].N}
	}
	return out, nil
}

// pids returns the workers' process IDs, in order.
func (r workerPorts) pids() []string {
	pids := slices.Collect(maps.Keys(r))
	slices.SortFunc(pids, func(a, b string) int {
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return x - y
	})
	return pids
}
