package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"
)

const doctorHelp = `
Checks that this host's certserver and nginx work together, and says what
to change when they do not. Each check prints one line, "ok", "warn" or
"FAIL", with what it found; a failure is followed by the line to change
(file:line where there is one). "skip" marks a check an earlier failure
keeps from running.

  config          the configuration file reads (--config)
  nginx           nginx -t passes for the nginx that includes the snippets:
                  --nginx-conf, else that of the running nginx master whose
                  snippet asks serve's socket, else of one with the snippets,
                  else nginx's default configuration
  lua module      ngx_http_lua_module and lua-resty-core load, and
                  resty/certserver.lua is on lua_package_path
  snippets        certserver-http.conf is in http {} and certserver-ssl.conf
                  in at least one TLS server {}
  socket path     the snippet's socket is where serve listens
  worker user     the user nginx's workers run as (nginx's user directive)
  socket access   that user can connect to the socket: the socket's group and
                  mode (socket_group, socket_mode) and every directory above it
  fallback cert   the ssl_certificate of each server with the snippet exists,
                  matches its key and has not expired
  handshake       a TLS handshake through nginx (--https, else the first
                  "listen ... ssl" of those servers, on loopback) for a name
                  certserver holds a certificate for (--name, else one the
                  admin API lists as valid, else one of the first names it
                  lists) gets that certificate, not the fallback

Run it as root (it reads nginx's configuration and the socket's
permissions as nginx does), after a change to either side and whenever
names get nginx's fallback certificate.

Exit codes: 0 every check passed (warnings allowed); 1 a check failed;
2 bad command line.
` + adminHelp + `
Examples:
  certserver doctor
  certserver doctor --nginx-conf /etc/nginx/nginx.conf --name shop.example.com
  certserver doctor --json | jq '.checks[] | select(.status == "FAIL")'
`

// Results of a check.
const (
	checkOK   = "ok"
	checkWarn = "warn"
	checkFail = "FAIL"
	checkSkip = "skip" // could not be checked because an earlier check failed
)

// checkResult is one line of doctor's report.
type checkResult struct {
	Check  string `json:"check"`
	Status string `json:"status"`
	Found  string `json:"found"`
	// Fix is the change to make, starting with file:line where there is
	// one; "" when the check passed.
	Fix string `json:"fix,omitempty"`
}

// doctorReport is what doctor prints, and its --json document.
type doctorReport struct {
	OK     bool          `json:"ok"`
	Checks []checkResult `json:"checks"`
}

func runDoctor(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("doctor", "[flags]", doctorHelp)
	nginxBin := fs.String("nginx", "", "the nginx `binary` (default: nginx on $PATH, else /usr/sbin/nginx)")
	nginxConf := fs.String("nginx-conf", "", "nginx's configuration `file` (default: that of a running nginx master that includes the snippets, else nginx's default)")
	https := fs.String("https", "", "make the test handshake with nginx at `host:port` (default: the first listen ... ssl of a server with the snippet, on loopback)")
	name := fs.String("name", "", "make the test handshake for this `name` (default: a valid name from the admin API)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	af := addAdminFlags(fs)
	if code, ok := fs.parseNone(e, args); !ok {
		return code
	}
	d := &doctor{e: e, af: af, nginxBin: *nginxBin, nginxConf: *nginxConf, https: *https, name: *name}
	d.cfgPath = *af.config
	if d.cfgPath == "" {
		d.cfgPath = defaultConfigPath
	}
	d.run(ctx)
	rep := doctorReport{OK: true, Checks: d.results}
	for _, r := range d.results {
		if r.Status == checkFail {
			rep.OK = false
		}
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fail(e, fs.Name(), err)
		}
	} else {
		printDoctor(e.stdout, rep)
	}
	if !rep.OK {
		return exitFailure
	}
	return exitOK
}

// printDoctor prints one line per check, and the fix under a failure.
func printDoctor(w io.Writer, rep doctorReport) {
	failed, warned := 0, 0
	for _, r := range rep.Checks {
		fmt.Fprintf(w, "%-4s  %-13s  %s\n", r.Status, r.Check, r.Found)
		if r.Fix != "" {
			fmt.Fprintf(w, "%19s  fix: %s\n", "", r.Fix)
		}
		switch r.Status {
		case checkFail:
			failed++
		case checkWarn:
			warned++
		}
	}
	verdict := "every check passed"
	if failed > 0 {
		verdict = plural(failed, "check") + " failed"
	}
	if warned > 0 {
		verdict += ", " + plural(warned, "warning")
	}
	fmt.Fprintf(w, "\n%s\n", verdict)
}

// doctor runs the checks in order; later checks use what earlier ones
// found.
type doctor struct {
	e         *env
	af        *adminFlags
	nginxBin  string
	nginxConf string
	https     string
	name      string
	results   []checkResult

	cfgPath string
	cfg     config
	cfgRead bool // the file was read (else cfg holds the defaults)

	master  *nginxMaster      // the running master using nginxConf, if any
	conf    []*nginxDirective // nginx's configuration, includes expanded
	workers *account          // whom nginx's workers run as
	servers []*nginxServer    // the TLS servers with certserver's hook
}

func (d *doctor) add(check, status, found, fix string) {
	d.results = append(d.results, checkResult{Check: check, Status: status, Found: found, Fix: fix})
}

func (d *doctor) run(ctx context.Context) {
	d.checkConfig()
	if !d.checkNginx(ctx) {
		for _, c := range []string{"snippets", "socket path", "worker user", "socket access", "fallback cert", "handshake"} {
			d.add(c, checkSkip, "needs nginx's configuration", "")
		}
		return
	}
	d.checkSnippets()
	d.checkWorkerUser()
	d.checkSocketAccess()
	d.checkFallback()
	d.checkHandshake(ctx)
}

// checkConfig reads the configuration file; without one, the defaults
// stand in for it.
func (d *doctor) checkConfig() {
	d.cfg = defaultConfig()
	cfg, err := loadConfig(d.cfgPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		d.add("config", checkFail, fmt.Sprintf("no configuration file at %s; checking with the defaults (socket %s, socket_group \"\")", d.cfgPath, d.cfg.Certs.Socket),
			fmt.Sprintf(`install -D -m 0644 deploy/certserver.toml %s, then set socket_group in [certs] to the group of nginx's workers`, d.cfgPath))
		return
	case err != nil:
		d.add("config", checkFail, err.Error(), d.cfgPath+": correct the key the error names (deploy/certserver.toml documents every key)")
		return
	}
	d.cfg, d.cfgRead = cfg, true
	c := cfg.Certs
	found := d.cfgPath + ":"
	if c.Socket != "" {
		group := c.SocketGroup
		if group == "" {
			group = `"" (certserver's own group)`
		}
		found += fmt.Sprintf(" socket %s, socket_group %s, socket_mode %s", c.Socket, group, c.SocketMode)
	}
	if c.Listen != "" {
		found += " listen " + c.Listen
	}
	d.add("config", checkOK, found, "")
}

// configLine returns "file:line" of key in section of the configuration
// file, or of the section, with whether the key itself was found; "" when
// neither is in the file.
func (d *doctor) configLine(section, key string) (string, bool) {
	b, err := os.ReadFile(d.cfgPath)
	if err != nil {
		return "", false
	}
	cur, sectionLine := "", 0
	for i, line := range strings.Split(string(b), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[") {
			cur = strings.Trim(t, "[] ")
			if cur == section {
				sectionLine = i + 1
			}
			continue
		}
		if cur == section {
			if k, _, ok := strings.Cut(t, "="); ok && strings.TrimSpace(k) == key {
				return fmt.Sprintf("%s:%d", d.cfgPath, i+1), true
			}
		}
	}
	if sectionLine > 0 {
		return fmt.Sprintf("%s:%d", d.cfgPath, sectionLine), false
	}
	return "", false
}

// configFix says how to set key in section to value: at its line, under
// its section, or in a new section.
func (d *doctor) configFix(section, key, value string) string {
	setting := fmt.Sprintf("%s = %s", key, value)
	switch where, found := d.configLine(section, key); {
	case found:
		return where + ": " + setting
	case where != "":
		return fmt.Sprintf("%s: add %s under [%s]", where, setting, section)
	case d.cfgRead:
		return fmt.Sprintf("%s: add [%s] with %s", d.cfgPath, section, setting)
	default:
		return fmt.Sprintf("create %s (from deploy/certserver.toml) with %s in [%s]", d.cfgPath, setting, section)
	}
}

// socketEndpoint is the certificate endpoint in the Lua module's syntax.
func (d *doctor) socketEndpoint() string {
	if d.cfg.Certs.Socket != "" {
		return "unix:" + d.cfg.Certs.Socket
	}
	return d.cfg.Certs.Listen
}

// plainUnixSocket returns the path of a "unix:" endpoint, or "".
func plainUnixSocket(endpoint string) string {
	p, _ := strings.CutPrefix(endpoint, "unix:")
	if p == endpoint {
		return ""
	}
	return p
}

// statOwner returns the owner and group of fi.
func statOwner(fi fs.FileInfo) (uid, gid int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return -1, -1
}

// handshakeTimeout bounds the test handshake and the certificate request
// that goes with it.
const handshakeTimeout = 10 * time.Second
