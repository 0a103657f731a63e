package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The files of Debian's libnginx-mod-http-lua and libnginx-mod-http-ndk.
const (
	ndkModule = "/usr/lib/nginx/modules/ndk_http_module.so"
	luaModule = "/usr/lib/nginx/modules/ngx_http_lua_module.so"
)

// nginxDefaultUser is whom nginx's workers run as when its master runs as
// root and the configuration has no user directive (nginx's built-in
// default, also that of Debian's build).
const nginxDefaultUser = "nobody"

// nginxMaster is a running nginx master process.
type nginxMaster struct {
	pid    int
	uid    int
	bin    string
	conf   string // its -c, "" for the built-in default
	prefix string // its -p
}

// procEffectiveUID matches the effective user ID in /proc/PID/status.
var procEffectiveUID = regexp.MustCompile(`(?m)^Uid:\s+\d+\s+(\d+)`)

// nginxMasters lists the running nginx masters, from /proc: a master
// rewrites its command line to "nginx: master process BIN ARGS...".
func nginxMasters() []nginxMaster {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []nginxMaster
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil {
			continue
		}
		cmd, ok := strings.CutPrefix(strings.TrimRight(strings.ReplaceAll(string(b), "\x00", " "), " "), "nginx: master process ")
		if !ok {
			continue
		}
		m := nginxMaster{}
		m.pid, _ = strconv.Atoi(filepath.Base(dir))
		fields := strings.Fields(cmd)
		if len(fields) > 0 {
			m.bin = fields[0]
		}
		for i := 1; i+1 < len(fields); i++ {
			switch fields[i] {
			case "-c":
				m.conf = fields[i+1]
			case "-p":
				m.prefix = fields[i+1]
			}
		}
		if m.conf != "" && !filepath.IsAbs(m.conf) {
			m.conf = filepath.Join(m.prefix, m.conf)
		}
		if status, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
			if f := procEffectiveUID.FindSubmatch(status); f != nil {
				m.uid, _ = strconv.Atoi(string(f[1]))
			}
		}
		out = append(out, m)
	}
	return out
}

// nginxRun is one `nginx -T` of a configuration.
type nginxRun struct {
	conf, prefix string
	master       *nginxMaster
	stdout       string
	stderr       string
	err          error
}

// nginxTest runs `nginx -T` on conf ("" for the built-in default), with
// errors to its standard error rather than nginx's log files.
func (d *doctor) nginxTest(ctx context.Context, conf, prefix string) *nginxRun {
	args := []string{"-T", "-q", "-e", "stderr"}
	if prefix != "" {
		args = append(args, "-p", prefix)
	}
	if conf != "" {
		args = append(args, "-c", conf)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, d.nginxBin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return &nginxRun{conf: conf, prefix: prefix, stdout: stdout.String(), stderr: stderr.String(), err: err}
}

// pickNginx returns the run whose configuration has certserver's hook
// and asks socket, else the first with the hook, else def.
func pickNginx(runs []*nginxRun, def *nginxRun, socket string) *nginxRun {
	var hooked *nginxRun
	for _, r := range runs {
		if !r.hasHook() {
			continue
		}
		if strings.Contains(r.stdout, strconv.Quote(socket)) {
			return r
		}
		if hooked == nil {
			hooked = r
		}
	}
	if hooked != nil {
		return hooked
	}
	return def
}

// hasHook reports whether an nginx -T dump loads certserver's Lua module.
func (r *nginxRun) hasHook() bool {
	return r.err == nil && strings.Contains(r.stdout, "resty.certserver")
}

// checkNginx finds nginx's configuration, runs nginx -t on it and reads
// it, reporting the nginx and lua module checks. It returns false when
// there is no configuration to read.
func (d *doctor) checkNginx(ctx context.Context) bool {
	if d.nginxBin == "" {
		if p, err := exec.LookPath("nginx"); err == nil {
			d.nginxBin = p
		} else {
			d.nginxBin = "/usr/sbin/nginx"
		}
	}
	if _, err := os.Stat(d.nginxBin); err != nil {
		d.add("nginx", checkFail, fmt.Sprintf("no nginx binary at %s", d.nginxBin),
			"apt-get install nginx-light libnginx-mod-http-lua lua-resty-core lua-resty-lrucache, or give the binary with --nginx")
		d.add("lua module", checkSkip, "needs nginx", "")
		return false
	}

	var run *nginxRun
	masters := nginxMasters()
	if d.nginxConf != "" {
		conf, _ := filepath.Abs(d.nginxConf)
		for i, m := range masters {
			if m.conf == conf {
				run = d.nginxTest(ctx, conf, m.prefix)
				run.master = &masters[i]
				break
			}
		}
		if run == nil {
			run = d.nginxTest(ctx, conf, "")
		}
	} else {
		// The running master whose configuration asks serve's socket,
		// else one with certserver's hook, else nginx's default
		// configuration (with its master, if it runs).
		var runs []*nginxRun
		var def *nginxRun
		for i, m := range masters {
			r := d.nginxTest(ctx, m.conf, m.prefix)
			r.master = &masters[i]
			runs = append(runs, r)
			if m.conf == "" && def == nil {
				def = r
			}
		}
		if def == nil {
			def = d.nginxTest(ctx, "", "")
			runs = append(runs, def)
		}
		run = pickNginx(runs, def, d.socketEndpoint())
	}
	d.master = run.master
	what := run.conf
	if _, main := splitNginxDump(run.stdout); what == "" && main != "" {
		what = main
	} else if what == "" {
		what = "nginx's default configuration"
	}
	if run.master != nil {
		what += fmt.Sprintf(" (the running master, pid %d)", run.master.pid)
	}

	if run.err != nil {
		d.nginxFailed(run, what)
		return d.readFromDisk(run)
	}
	files, main := splitNginxDump(run.stdout)
	conf, err := parseNginxConfig(files, main)
	if err != nil {
		d.add("nginx", checkFail, fmt.Sprintf("nginx -t passes for %s but its configuration cannot be read: %v", what, err), "")
		d.add("lua module", checkSkip, "needs nginx's configuration", "")
		return false
	}
	d.conf = conf
	d.add("nginx", checkOK, fmt.Sprintf("nginx -t passes for %s", what), "")
	if strings.Contains(run.stdout, "resty.certserver") {
		d.add("lua module", checkOK, "ngx_http_lua_module, lua-resty-core and resty.certserver load (nginx -t runs init_by_lua)", "")
	} else {
		d.add("lua module", checkSkip, "nothing in nginx's configuration loads resty.certserver (see snippets)", "")
	}
	return true
}

// nginxEmerg matches nginx's report of what stopped it: "[emerg] MESSAGE
// in FILE:LINE".
var nginxEmerg = regexp.MustCompile(`\[(?:emerg|alert|error)\] (?:\d+#\d+: )?(.*?)(?: in (\S+:\d+))?\n`)

// nginxFailed reports a failed nginx -t as the nginx and lua module
// checks, with the change that fixes it where the message says.
func (d *doctor) nginxFailed(run *nginxRun, what string) {
	msg := strings.TrimSpace(run.stderr)
	where := ""
	if m := nginxEmerg.FindStringSubmatch(run.stderr + "\n"); m != nil {
		msg, where = m[1], m[2]
	}
	if msg == "" {
		msg = run.err.Error()
	}
	at := func(s string) string {
		if where == "" {
			return s
		}
		return where + ": " + s
	}
	main := run.conf
	if main == "" {
		main = stockNginxConf
	}
	lua := ""
	var luaFix string
	switch {
	case regexp.MustCompile(`unknown directive "(lua_\w+|\w+_by_lua\w*)"`).MatchString(msg):
		lua = "the Lua module is not loaded: " + msg
		if _, err := os.Stat(luaModule); err != nil {
			luaFix = "apt-get install libnginx-mod-http-lua lua-resty-core lua-resty-lrucache"
		} else {
			luaFix = fmt.Sprintf("%s: add at the top, before events {}: load_module %s; load_module %s; (Debian's stock nginx.conf does this with include /etc/nginx/modules-enabled/*.conf;)", main, ndkModule, luaModule)
		}
	case strings.Contains(run.stderr, "resty.core"):
		lua = "lua-resty-core does not load: " + firstLine(run.stderr, "resty.core")
		luaFix = "apt-get install lua-resty-core lua-resty-lrucache"
	case strings.Contains(run.stderr, "module 'resty.certserver' not found"):
		lua = "resty/certserver.lua is on no lua_package_path directory"
		luaFix = at("lua_package_path must name the directory that holds resty/certserver.lua: install -D -m 0644 lua/resty/certserver.lua /usr/share/certserver/lua/resty/certserver.lua")
	}
	if lua != "" {
		d.add("nginx", checkFail, fmt.Sprintf("nginx -t fails for %s", what), "")
		d.add("lua module", checkFail, lua, luaFix)
		return
	}
	d.add("nginx", checkFail, fmt.Sprintf("nginx -t fails for %s: %s", what, msg), at("correct what nginx names"))
	d.add("lua module", checkSkip, "needs nginx -t to pass", "")
}

// firstLine returns the first line of s that contains sub, trimmed.
func firstLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// readFromDisk reads the configuration nginx -t refused from its files,
// so that the other checks still say what they can.
func (d *doctor) readFromDisk(run *nginxRun) bool {
	main := run.conf
	if main == "" {
		main = stockNginxConf
	}
	conf, err := parseNginxConfig(diskFiles{}, main)
	if err != nil {
		return false
	}
	d.conf = conf
	return true
}

// nginxServer is a server {} of nginx's configuration that has
// certserver's ssl_certificate_by_lua hook.
type nginxServer struct {
	block   *nginxDirective
	cert    *nginxDirective // its ssl_certificate (or the inherited one), nil if none
	key     *nginxDirective
	listens []*nginxDirective // its listen ... ssl directives
}

// checkSnippets finds certserver-http.conf's configure call and the TLS
// servers with certserver-ssl.conf's hook, and compares the socket the
// configure call names with the one serve listens on.
func (d *doctor) checkSnippets() {
	var configure *nginxDirective
	var httpBlock *nginxDirective
	for _, h := range children(d.conf, "http") {
		httpBlock = h
		for _, dd := range h.block {
			if strings.HasPrefix(dd.name, "init_by_lua") && strings.Contains(d.luaOf(dd), "resty.certserver") {
				configure = dd
			}
		}
	}
	httpHook := false
	var hooked []*nginxServer
	if httpBlock != nil {
		for _, dd := range httpBlock.block {
			if isCertserverHook(dd) {
				httpHook = true
			}
		}
		for _, srv := range children(httpBlock.block, "server") {
			s := &nginxServer{block: srv}
			hook := httpHook
			for _, dd := range srv.block {
				switch {
				case isCertserverHook(dd):
					hook = true
				case dd.name == "ssl_certificate":
					s.cert = dd
				case dd.name == "ssl_certificate_key":
					s.key = dd
				case dd.name == "listen" && len(dd.args) > 0 && containsArg(dd.args[1:], "ssl"):
					s.listens = append(s.listens, dd)
				}
			}
			if s.cert == nil {
				s.cert = child(httpBlock.block, "ssl_certificate")
				s.key = child(httpBlock.block, "ssl_certificate_key")
			}
			if hook {
				hooked = append(hooked, s)
			}
		}
	}
	d.servers = hooked
	main := "nginx.conf"
	if len(d.conf) > 0 {
		main = d.conf[0].file
	}

	switch {
	case configure == nil && httpBlock == nil:
		d.add("snippets", checkFail, "nginx's configuration has no http {}", main+": add http { include /etc/nginx/snippets/certserver-http.conf; ... }")
	case configure == nil:
		d.add("snippets", checkFail, "no init_by_lua in http {} configures resty.certserver (certserver-http.conf is not included)",
			httpBlock.where()+": add include /etc/nginx/snippets/certserver-http.conf; inside http {}")
	case len(hooked) == 0:
		d.add("snippets", checkFail, fmt.Sprintf("certserver-http.conf is included (%s), but no server {} has the ssl_certificate_by_lua hook", configure.where()),
			"add include /etc/nginx/snippets/certserver-ssl.conf; to each TLS server {} (listen ... ssl)")
	default:
		var ws []string
		for _, s := range hooked {
			ws = append(ws, s.block.where())
		}
		d.add("snippets", checkOK, fmt.Sprintf("resty.certserver configured at %s; the hook is in %s: %s",
			configure.where(), plural(len(hooked), "server"), strings.Join(ws, ", ")), "")
	}
	if configure == nil {
		d.add("socket path", checkSkip, "needs certserver-http.conf", "")
		return
	}

	// The configure call's socket, the module's default when not set.
	lua := d.luaOf(configure)
	socket, line := "unix:/run/certserver/certs.sock", configure.luaLine
	where := configure.where()
	if m := regexp.MustCompile(`socket\s*=\s*(["'])(.*?)["']`).FindStringSubmatchIndex(lua); m != nil {
		socket = lua[m[4]:m[5]]
		if configure.luaLine > 0 {
			line += strings.Count(lua[:m[0]], "\n")
			where = fmt.Sprintf("%s:%d", configure.file, line)
		}
	}
	want := d.socketEndpoint()
	if socket == want || d.cfg.Certs.Listen != "" && socket == d.cfg.Certs.Listen {
		d.add("socket path", checkOK, fmt.Sprintf("nginx asks %s (%s), where serve listens", socket, where), "")
		return
	}
	other := "certs.listen to " + socket
	if p := plainUnixSocket(socket); p != "" {
		other = "certs.socket to " + p
	}
	d.add("socket path", checkFail, fmt.Sprintf("nginx asks %s (%s), but serve listens on %s (%s)", socket, where, want, d.cfgPath),
		fmt.Sprintf("%s: socket = %q, (or set %s in %s)", where, want, other, d.cfgPath))
}

// luaOf returns the Lua code of an init_by_lua* directive: the block, or
// the file init_by_lua_file names.
func (d *doctor) luaOf(dd *nginxDirective) string {
	switch {
	case strings.HasSuffix(dd.name, "_by_lua_block"):
		return dd.lua
	case strings.HasSuffix(dd.name, "_by_lua_file") && len(dd.args) == 1:
		b, err := os.ReadFile(dd.args[0])
		if err != nil {
			return ""
		}
		return string(b)
	case len(dd.args) == 1:
		return dd.args[0]
	}
	return ""
}

// isCertserverHook reports whether dd is certserver-ssl.conf's hook.
func isCertserverHook(dd *nginxDirective) bool {
	return strings.HasPrefix(dd.name, "ssl_certificate_by_lua") &&
		(strings.Contains(dd.lua, "resty.certserver") || containsArg(dd.args, "resty.certserver"))
}

func containsArg(args []string, s string) bool {
	for _, a := range args {
		if strings.Contains(a, s) {
			return true
		}
	}
	return false
}

// checkWorkerUser finds whom nginx's workers run as: the master's user
// when it does not run as root, else the user directive, else nginx's
// default.
func (d *doctor) checkWorkerUser() {
	if d.master != nil && d.master.uid != 0 {
		a, err := lookupAccount(strconv.Itoa(d.master.uid), "")
		if err != nil {
			d.add("worker user", checkWarn, fmt.Sprintf("the nginx master (pid %d) runs as uid %d, who cannot be looked up: %v", d.master.pid, d.master.uid, err), "")
			return
		}
		d.workers = a
		d.add("worker user", checkOK, fmt.Sprintf("nginx's workers run as %s, like their master (pid %d), which does not run as root", a.name, d.master.pid), "")
		return
	}
	u := child(d.conf, "user")
	name, group, where := nginxDefaultUser, "", "no user directive: nginx's default"
	if u != nil && len(u.args) > 0 {
		name, where = u.args[0], "user at "+u.where()
		// Without a group, nginx takes the group named like the user.
		group = u.args[0]
		if len(u.args) > 1 {
			group = u.args[1]
		}
	}
	a, err := lookupAccount(name, group)
	if err != nil {
		fix := "create the user, or name an existing one in the user directive"
		if u != nil {
			fix = u.where() + ": user www-data; (or another user that exists)"
		}
		d.add("worker user", checkFail, fmt.Sprintf("nginx's workers run as %s (%s), who does not exist: %v", name, where, err), fix)
		return
	}
	d.workers = a
	d.add("worker user", checkOK, fmt.Sprintf("nginx's workers run as %s (%s)", a.name, where), "")
}
