// Package nginxtest starts a real nginx for a test, configured with the
// project's own include snippets from nginx/ and the Lua module from lua/.
//
// Start writes an nginx.conf into the test's temporary directory that
// includes nginx/certserver-ssl.conf and nginx/certserver-acme.conf by path
// and a copy of nginx/certserver-http.conf in which only the three
// installation-specific values (the Lua path, the sidecar socket and the
// ACME upstream address) are replaced. With Options.TLSALPN it also
// includes, at the main level, a copy of nginx/certserver-stream.conf
// whose listen and upstream addresses are replaced, in front of the https
// server as the snippet's comment shows. Ports are picked at run time on
// 127.0.0.1 (or Options.Host). nginx runs with a master and two workers, in the foreground,
// and is stopped when the test ends.
//
// A missing nginx, lua module or lua-resty-core fails the test with what to
// install; it never skips.
package nginxtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ModulesDir is where Debian's libnginx-mod-http-lua and
// libnginx-mod-http-ndk put their dynamic modules.
const ModulesDir = "/usr/lib/nginx/modules"

const installHint = "install them with: apt-get install nginx-light " +
	"libnginx-mod-http-lua libnginx-mod-stream lua-resty-core lua-resty-lrucache " +
	"(make test does this)"

// The installation-specific values in nginx/certserver-http.conf that Start
// replaces. Each must appear exactly once in the snippet.
const (
	snippetLuaPath = `"/usr/share/certserver/lua/?.lua;;"`
	snippetSocket  = `"unix:/run/certserver/certs.sock"`
	snippetACME    = `server 127.0.0.1:9402;`
	// replaced when Options.CertsDict is set
	snippetCertsDict = `lua_shared_dict certserver_certs 128m;`
	// replaced in nginx/certserver-stream.conf when Options.TLSALPN is set
	streamListen  = "listen 443;"
	streamTLSALPN = "server 127.0.0.1:9403;"
	streamHTTPS   = "server 127.0.0.1:8443;"
)

// RemoteAddrHeader is the response header of the HTTPS server that holds
// the client's address as nginx sees it, "$remote_addr:$remote_port":
// behind the stream snippet, the address the PROXY protocol header gave.
const RemoteAddrHeader = "X-Remote-Addr"

// Options configures Start.
type Options struct {
	// Sidecar is the sidecar's certificate endpoint in the Lua module's
	// socket syntax: "unix:/path/certs.sock" or "127.0.0.1:PORT".
	// Required.
	Sidecar string

	// ACME is the host:port of the sidecar's HTTP-01 challenge listener
	// that the port-80 server proxies /.well-known/acme-challenge/ to.
	// Default: a loopback port nothing listens on.
	ACME string

	// FallbackCert and FallbackKey are PEM files nginx serves itself (its
	// ssl_certificate) when certserver has no certificate. Required.
	FallbackCert, FallbackKey string

	// StaticCert and StaticKey, when set, add a second TLS server that
	// serves this certificate through a plain ssl_certificate, without the
	// Lua hook, on StaticHTTPSAddr. For comparisons in benchmarks.
	StaticCert, StaticKey string

	// Workers is the number of worker processes. Default: 2.
	Workers int

	// CertsDict, when set, replaces the size of the certserver_certs
	// shared dict in certserver-http.conf ("128m"), e.g. "1m".
	CertsDict string

	// Configure, when set, is added to the options of the snippet's
	// configure call, e.g. "lru_size = 100,".
	Configure string

	// TLSALPN, when set, puts the project's stream snippet
	// (certserver-stream.conf) in front of the HTTPS server: HTTPSAddr is
	// then the stream server, which sends connections offering only
	// acme-tls/1 to TLSALPN (the sidecar's TLS-ALPN-01 responder,
	// "host:port") and the others, with a PROXY protocol header, to the
	// HTTPS server's proxy_protocol listener. The HTTPS server also
	// listens without the stream front on DirectHTTPSAddr, for
	// comparisons. Default "": no stream module, no front.
	TLSALPN string

	// Host is the loopback address nginx listens on, so that several
	// nginx of one test stand for several hosts (a fleet's:
	// "127.0.0.2", "127.0.0.3"). Default "127.0.0.1".
	Host string

	// Stats, when set, adds to the Lua TLS server the location StatsPath,
	// which answers the serving worker's resty.certserver stats() (see
	// ParseStats), after a full Lua garbage collection when asked with
	// "?gc=1", and only the counts, without the durations, when asked
	// with "?counts=1": writing out thousands of durations holds the
	// worker's event loop for milliseconds, which a benchmark polling
	// the counts while it measures handshakes would see in their tail.
	// For benchmarks and tests.
	Stats bool

	// HTTPPort is the port of the plain-HTTP server (the port-80 stand-in
	// with the ACME challenge snippet) on Host, for a fleet whose hosts
	// must all answer HTTP-01 on the one port Pebble validates on (see
	// FreePortOn). Default 0: a port free at start.
	HTTPPort int
}

// StatsPath is the location Options.Stats adds. Its answer has one line
// per step of the module's stats(): the step, the count, then the last
// durations in seconds, separated by spaces; and a line LuaHeapStat.
const StatsPath = "/certserver-stats"

// LuaHeapStat is the line of StatsPath's answer whose count is the size
// of the worker's Lua heap in bytes (collectgarbage("count")), after the
// collection when one was asked for.
const LuaHeapStat = "lua_heap"

// Stats is one step of the Lua module's stats() in one worker: how many
// times it ran and its last durations.
type Stats struct {
	N       int
	Samples []time.Duration
}

// ParseStats reads an answer of StatsPath.
func ParseStats(body string) (map[string]Stats, error) {
	m := make(map[string]Stats)
	for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			return nil, fmt.Errorf("stats line %q: %w", line, err)
		}
		st := Stats{N: n}
		for _, v := range f[2:] {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return nil, fmt.Errorf("stats line %q: %w", line, err)
			}
			st.Samples = append(st.Samples, time.Duration(x*float64(time.Second)))
		}
		m[f[0]] = st
	}
	return m, nil
}

// WorkerHeader is the response header of the HTTPS server that holds the
// process ID of the worker that served the request (and its handshake).
const WorkerHeader = "X-Nginx-Worker"

// Nginx is a running nginx master started by Start. Its methods are safe for
// concurrent use.
type Nginx struct {
	dir        string
	errLog     string
	cmd        *exec.Cmd
	exited     chan struct{}
	exitErr    error
	workers    int
	httpsAddr  string
	httpAddr   string
	staticAddr string
	// with Options.TLSALPN: the HTTPS server's own listeners
	backendAddr, directAddr string
}

// Start writes the configuration, starts nginx and waits until its ports
// accept connections. nginx is stopped (SIGQUIT, then SIGKILL after 10s)
// in t.Cleanup. Any failure fails the test.
func Start(t testing.TB, opts Options) *Nginx {
	t.Helper()
	bin := Binary(t)
	if opts.Sidecar == "" || opts.FallbackCert == "" || opts.FallbackKey == "" {
		t.Fatalf("nginxtest: Options.Sidecar, FallbackCert and FallbackKey are required")
	}
	if (opts.StaticCert == "") != (opts.StaticKey == "") {
		t.Fatalf("nginxtest: set both Options.StaticCert and StaticKey, or neither")
	}
	if opts.Workers == 0 {
		opts.Workers = 2
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.ACME == "" {
		opts.ACME = FreeAddr(t, opts.Host)
	}
	nginxDir := SnippetDir(t)

	dir := t.TempDir()
	for _, d := range []string{"logs", "tmp"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatalf("nginxtest: %v", err)
		}
	}
	n := &Nginx{
		dir:       dir,
		errLog:    filepath.Join(dir, "logs", "error.log"),
		exited:    make(chan struct{}),
		workers:   opts.Workers,
		httpsAddr: FreeAddr(t, opts.Host),
		httpAddr:  FreeAddr(t, opts.Host),
	}
	if opts.HTTPPort != 0 {
		n.httpAddr = net.JoinHostPort(opts.Host, strconv.Itoa(opts.HTTPPort))
	}
	if opts.StaticCert != "" {
		n.staticAddr = FreeAddr(t, opts.Host)
	}
	var streamSnippet string
	if opts.TLSALPN != "" {
		n.backendAddr, n.directAddr = FreeAddr(t, opts.Host), FreeAddr(t, opts.Host)
		streamSnippet = StreamSnippet(t, dir, n.httpsAddr, opts.TLSALPN, n.backendAddr)
	}

	httpSnippet := HTTPSnippet(t, dir, opts.Sidecar, opts.ACME)
	if opts.CertsDict != "" || opts.Configure != "" {
		b, err := os.ReadFile(httpSnippet)
		if err != nil {
			t.Fatalf("nginxtest: %v", err)
		}
		s := string(b)
		size := opts.CertsDict
		if size == "" {
			size = "128m"
		}
		for _, r := range []struct{ old, new string }{
			{snippetCertsDict, "lua_shared_dict certserver_certs " + size + ";"},
			{strconv.Quote(opts.Sidecar) + ",", strconv.Quote(opts.Sidecar) + ", " + opts.Configure},
		} {
			if strings.Count(s, r.old) != 1 {
				t.Fatalf("nginxtest: %s holds %s %d times, want once; update nginxtest with the snippet", httpSnippet, r.old, strings.Count(s, r.old))
			}
			s = strings.Replace(s, r.old, r.new, 1)
		}
		if err := os.WriteFile(httpSnippet, []byte(s), 0o644); err != nil {
			t.Fatalf("nginxtest: %v", err)
		}
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(n.config(opts, httpSnippet, streamSnippet, nginxDir)), 0o644); err != nil {
		t.Fatalf("nginxtest: %v", err)
	}

	stderr, err := os.Create(filepath.Join(dir, "logs", "stderr.log"))
	if err != nil {
		t.Fatalf("nginxtest: %v", err)
	}
	defer stderr.Close()
	n.cmd = exec.Command(bin, "-p", dir+"/", "-c", conf, "-e", n.errLog)
	n.cmd.Stdout = stderr
	n.cmd.Stderr = stderr
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("nginxtest: start %s: %v", bin, err)
	}
	go func() {
		n.exitErr = n.cmd.Wait()
		close(n.exited)
	}()
	t.Cleanup(n.stop)

	addrs := []string{n.httpsAddr, n.httpAddr}
	if n.staticAddr != "" {
		addrs = append(addrs, n.staticAddr)
	}
	if n.backendAddr != "" {
		addrs = append(addrs, n.backendAddr, n.directAddr)
	}
	if err := n.waitListening(addrs, 10*time.Second); err != nil {
		t.Fatalf("nginxtest: nginx did not come up: %v\nconfig %s\nerror log:\n%s", err, conf, n.ErrorLog())
	}
	return n
}

func (n *Nginx) config(opts Options, httpSnippet, streamSnippet, nginxDir string) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("daemon off;")
	p("master_process on;")
	p("worker_processes %d;", opts.Workers)
	if os.Geteuid() == 0 {
		// Workers would run as nobody, which cannot reach a sidecar
		// socket in a test's private temporary directory.
		p("user root;")
	}
	p("pid %s;", filepath.Join(n.dir, "logs", "nginx.pid"))
	p("error_log %s notice;", n.errLog)
	p("load_module %s;", filepath.Join(ModulesDir, "ndk_http_module.so"))
	p("load_module %s;", filepath.Join(ModulesDir, "ngx_http_lua_module.so"))
	if streamSnippet != "" {
		p("load_module %s;", filepath.Join(ModulesDir, "ngx_stream_module.so"))
		p("include %s;", streamSnippet)
	}
	p("events { worker_connections 1024; }")
	p("http {")
	p("    access_log off;")
	for _, d := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		p("    %s_temp_path %s;", d, filepath.Join(n.dir, "tmp", d))
	}
	p("    include %s;", httpSnippet)
	p("    server {")
	// reuseport: each worker has a listening socket of its own and the
	// kernel spreads connections over them by their ports, so a run of
	// connections reaches every worker, not only whichever accepts first.
	if streamSnippet != "" {
		// As certserver-stream.conf's comment tells: the stream front
		// owns the public address; the server listens with
		// proxy_protocol where the front sends it.
		p("        listen %s ssl proxy_protocol reuseport;", n.backendAddr)
		p("        listen %s ssl reuseport;", n.directAddr)
		p("        set_real_ip_from %s;", hostOf(n.backendAddr))
		p("        real_ip_header proxy_protocol;")
	} else {
		p("        listen %s ssl reuseport;", n.httpsAddr)
	}
	p("        add_header %s $remote_addr:$remote_port always;", RemoteAddrHeader)
	p("        ssl_certificate %s;", opts.FallbackCert)
	p("        ssl_certificate_key %s;", opts.FallbackKey)
	p("        include %s;", filepath.Join(nginxDir, "certserver-ssl.conf"))
	p("        add_header %s $pid always;", WorkerHeader)
	if opts.Stats {
		p("        location = %s {", StatsPath)
		p("            content_by_lua_block {")
		p("                if ngx.var.arg_gc then collectgarbage() collectgarbage() end")
		p("                local counts = ngx.var.arg_counts")
		p("                for step, st in pairs(require(\"resty.certserver\").stats()) do")
		p("                    if counts then")
		p("                        ngx.say(step, \" \", st.n)")
		p("                    else")
		p("                        ngx.say(step, \" \", st.n, \" \", table.concat(st.samples, \" \"))")
		p("                    end")
		p("                end")
		p("                ngx.say(\"%s \", math.floor(collectgarbage(\"count\") * 1024))", LuaHeapStat)
		p("            }")
		p("        }")
	}
	p("        location / { return 200 \"lua\\n\"; }")
	p("    }")
	p("    server {")
	p("        listen %s;", n.httpAddr)
	p("        include %s;", filepath.Join(nginxDir, "certserver-acme.conf"))
	p("        location / { return 404; }")
	p("    }")
	if opts.StaticCert != "" {
		p("    server {")
		p("        listen %s ssl;", n.staticAddr)
		p("        ssl_certificate %s;", opts.StaticCert)
		p("        ssl_certificate_key %s;", opts.StaticKey)
		p("        location / { return 200 \"static\\n\"; }")
		p("    }")
	}
	p("}")
	return b.String()
}

// HTTPSnippet writes the project's nginx/certserver-http.conf into dir
// with its installation-specific values replaced: the Lua path by this
// source tree's lua/ directory, the sidecar socket by sidecar (in the Lua
// module's syntax, "unix:/path" or "127.0.0.1:PORT") and the ACME upstream
// by acme ("host:port"). It returns the path of the copy, to include in
// http {}. It fails the test if the snippet no longer holds each value
// exactly once.
func HTTPSnippet(t testing.TB, dir, sidecar, acme string) string {
	t.Helper()
	nginxDir := SnippetDir(t)
	src := filepath.Join(nginxDir, "certserver-http.conf")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("nginxtest: %v", err)
	}
	s := string(b)
	luaDir := filepath.Join(filepath.Dir(nginxDir), "lua")
	for _, r := range []struct{ old, new string }{
		{snippetLuaPath, strconv.Quote(filepath.Join(luaDir, "?.lua") + ";;")},
		{snippetSocket, strconv.Quote(sidecar)},
		{snippetACME, "server " + acme + ";"},
	} {
		if c := strings.Count(s, r.old); c != 1 {
			t.Fatalf("nginxtest: %s holds %s %d times, want once; update nginxtest with the snippet", src, r.old, c)
		}
		s = strings.Replace(s, r.old, r.new, 1)
	}
	dst := filepath.Join(dir, "certserver-http.conf")
	if err := os.WriteFile(dst, []byte(s), 0o644); err != nil {
		t.Fatalf("nginxtest: %v", err)
	}
	return dst
}

// StreamSnippet writes the project's nginx/certserver-stream.conf into dir
// with its addresses replaced: the stream server's listen by front, the
// TLS-ALPN-01 responder upstream by tlsALPN and the https upstream by
// https (each "host:port"). It returns the path of the copy, to include
// at the main level of nginx.conf. It fails the test if the snippet no
// longer holds each value exactly once.
func StreamSnippet(t testing.TB, dir, front, tlsALPN, https string) string {
	t.Helper()
	src := filepath.Join(SnippetDir(t), "certserver-stream.conf")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("nginxtest: %v", err)
	}
	s := string(b)
	for _, r := range []struct{ old, new string }{
		{streamListen, "listen " + front + " reuseport;"},
		{streamTLSALPN, "server " + tlsALPN + ";"},
		{streamHTTPS, "server " + https + ";"},
	} {
		if c := strings.Count(s, r.old); c != 1 {
			t.Fatalf("nginxtest: %s holds %s %d times, want once; update nginxtest with the snippet", src, r.old, c)
		}
		s = strings.Replace(s, r.old, r.new, 1)
	}
	dst := filepath.Join(dir, "certserver-stream.conf")
	if err := os.WriteFile(dst, []byte(s), 0o644); err != nil {
		t.Fatalf("nginxtest: %v", err)
	}
	return dst
}

// hostOf returns the host of a host:port address.
func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}

// Binary returns the path of the nginx binary, failing the test with
// install instructions when nginx, the lua module, the NDK, lua-resty-core
// or lua-resty-lrucache is missing.
func Binary(t testing.TB) string {
	t.Helper()
	var missing []string
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
			bin = "/usr/sbin/nginx"
		} else {
			missing = append(missing, "the nginx binary (package nginx-light)")
		}
	}
	for _, f := range []struct{ path, what string }{
		{filepath.Join(ModulesDir, "ndk_http_module.so"), "libnginx-mod-http-ndk"},
		{filepath.Join(ModulesDir, "ngx_http_lua_module.so"), "libnginx-mod-http-lua"},
		{filepath.Join(ModulesDir, "ngx_stream_module.so"), "libnginx-mod-stream"},
		{"/usr/share/lua/5.1/ngx/ssl.lua", "lua-resty-core"},
		{"/usr/share/lua/5.1/resty/lrucache.lua", "lua-resty-lrucache"},
	} {
		if _, err := os.Stat(f.path); err != nil {
			missing = append(missing, f.path+" (package "+f.what+")")
		}
	}
	if len(missing) > 0 {
		t.Fatalf("nginxtest: missing %s; %s", strings.Join(missing, ", "), installHint)
	}
	return bin
}

// SnippetDir returns the source tree's nginx/ directory, which holds the
// snippets (its sibling lua/ holds the Lua module).
func SnippetDir(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatalf("nginxtest: cannot locate the source tree")
	}
	nginxDir := filepath.Dir(filepath.Dir(file))
	for _, f := range []string{
		filepath.Join(nginxDir, "certserver-http.conf"),
		filepath.Join(filepath.Dir(nginxDir), "lua", "resty", "certserver.lua"),
	} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("nginxtest: the source tree is not where it was built (-trimpath?): %v", err)
		}
	}
	return nginxDir
}

func (n *Nginx) waitListening(addrs []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-n.exited:
				return fmt.Errorf("nginx exited: %v", n.exitErr)
			default:
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s does not accept connections: %v", a, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func (n *Nginx) stop() {
	pid := n.cmd.Process.Pid
	select {
	case <-n.exited:
	default:
		_ = syscall.Kill(pid, syscall.SIGQUIT)
		select {
		case <-n.exited:
		case <-time.After(10 * time.Second):
		}
	}
	// Workers left behind by a master that died or hung.
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		fmt.Fprintf(os.Stderr, "nginxtest: kill nginx process group %d: %v\n", pid, err)
	}
	<-n.exited
}

// HTTPSAddr is the host:port of the TLS server that has nginx's fallback
// certificate and the certserver Lua hook; with Options.TLSALPN, the
// stream server in front of it.
func (n *Nginx) HTTPSAddr() string { return n.httpsAddr }

// DirectHTTPSAddr is, with Options.TLSALPN, the host:port where the TLS
// server of HTTPSAddr also listens without the stream front (and without
// PROXY protocol); "" without.
func (n *Nginx) DirectHTTPSAddr() string { return n.directAddr }

// Workers is the number of worker processes nginx runs.
func (n *Nginx) Workers() int { return n.workers }

// HTTPAddr is the host:port of the plain-HTTP server with the ACME
// challenge snippet.
func (n *Nginx) HTTPAddr() string { return n.httpAddr }

// StaticHTTPSAddr is the host:port of the TLS server that serves
// Options.StaticCert without Lua, or "" when there is none.
func (n *Nginx) StaticHTTPSAddr() string { return n.staticAddr }

// PID is the process ID of the nginx master.
func (n *Nginx) PID() int { return n.cmd.Process.Pid }

// Dir is the nginx prefix directory holding nginx.conf and logs/.
func (n *Nginx) Dir() string { return n.dir }

// WorkerCPU returns the CPU time (user and system) the current worker
// processes have used so far, from /proc (Linux only). Workers replaced by
// a reload take their time with them.
func (n *Nginx) WorkerCPU() (time.Duration, error) {
	pid := n.cmd.Process.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0, fmt.Errorf("worker processes of %d: %w", pid, err)
	}
	var total time.Duration
	for _, w := range strings.Fields(string(b)) {
		stat, err := os.ReadFile("/proc/" + w + "/stat")
		if err != nil {
			return 0, fmt.Errorf("worker %s: %w", w, err)
		}
		// Fields after the command, which is in parentheses and may
		// hold spaces: state is field 3, utime and stime 14 and 15.
		i := strings.LastIndexByte(string(stat), ')')
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 13 {
			return 0, fmt.Errorf("worker %s: short /proc stat", w)
		}
		for _, s := range f[11:13] {
			ticks, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("worker %s: %w", w, err)
			}
			total += time.Duration(ticks) * time.Second / clockTicks
		}
	}
	return total, nil
}

// clockTicks is Linux's USER_HZ, the unit of /proc/PID/stat times; 100 on
// every architecture Go supports.
const clockTicks = 100

// ErrorLog returns the error log as written so far.
func (n *Nginx) ErrorLog() string {
	b, err := os.ReadFile(n.errLog)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", n.errLog, err)
	}
	return string(b)
}

// Reloads counts the configuration reloads (SIGHUP) the master has logged.
func (n *Nginx) Reloads() int {
	// One reload logs "signal 1 (SIGHUP) received from N, reconfiguring"
	// and then "N#N: reconfiguring".
	return strings.Count(n.ErrorLog(), ": reconfiguring\n")
}

// Reload makes nginx re-read its configuration (SIGHUP) and waits until
// the new workers have started.
func (n *Nginx) Reload(t testing.TB) {
	t.Helper()
	reloads := n.Reloads()
	started := strings.Count(n.ErrorLog(), "start worker process ")
	if err := n.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("nginxtest: reload: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		log := n.ErrorLog()
		if n.Reloads() > reloads && strings.Count(log, "start worker process ") >= started+n.workers {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginxtest: reload did not finish within 10s; error log:\n%s", log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// badLogMarks are what AssertCleanErrorLog rejects: nginx's severe levels,
// Lua errors, and the module's report of an error it caught.
var badLogMarks = []string{
	"[alert]",
	"[crit]",
	"[emerg]",
	"runtime error",
	"lua entry thread aborted",
	"stack traceback",
	"certserver: internal error",
}

// AssertCleanErrorLog fails t for every error log line that shows an nginx
// alert, crit or emerg, or a Lua error. Ordinary [error] lines, such as the
// module reporting a stopped sidecar, pass.
func (n *Nginx) AssertCleanErrorLog(t testing.TB) {
	t.Helper()
	for _, line := range strings.Split(n.ErrorLog(), "\n") {
		for _, m := range badLogMarks {
			if strings.Contains(line, m) {
				t.Errorf("nginx error log: %s", line)
				break
			}
		}
	}
}
