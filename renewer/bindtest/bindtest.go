// Package bindtest runs a real BIND 9 name server (Debian's bind9 package)
// for tests: authoritative for the zones the test gives, taking dynamic
// updates (RFC 2136) signed with a TSIG key (RFC 8945) made for the test,
// on 127.0.0.1 over UDP and TCP on a port picked at run time, stopped when
// the test ends.
//
// A zone may also be forwarded to another server of the test's own (a
// stub of a delegated zone, such as certserver's): BIND then recurses
// for it, and follows a CNAME from a zone it serves into it, as the
// resolver a CA asks would.
//
// Tests never skip for want of BIND: Start fails the test and says how to
// install it.
package bindtest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Install says how to install BIND on Debian.
const Install = "apt-get install bind9 (scripts/deps.sh does)"

// startTimeout bounds how long Start waits for named to answer.
const startTimeout = 60 * time.Second

// KeyName is the name of the TSIG key updates are signed with; its
// algorithm is hmac-sha256.
const KeyName = "certserver-test."

// Zone is one zone BIND serves.
type Zone struct {
	// Name is the zone's apex, "shop.example".
	Name string
	// Records are its records in zone file syntax, names relative to the
	// apex ("@ A 127.0.0.1", "_acme-challenge CNAME x.acme.hoster.example.").
	// The SOA and an NS record are added.
	Records []string
	// Forward, when set, makes the zone a forward zone to this
	// "host:port" instead: BIND asks that server for every name in the
	// zone. Records are ignored then.
	Forward string
}

// Server is a running named.
type Server struct {
	addr   string
	secret string // base64
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
}

// Addr returns the "127.0.0.1:port" named listens on, UDP and TCP.
func (s *Server) Addr() string { return s.addr }

// Secret returns the TSIG key's secret, base64, as tsig-keygen writes it.
func (s *Server) Secret() string { return s.secret }

// Dir returns the directory named runs in (its configuration, zone files,
// journals and log, named.log).
func (s *Server) Dir() string { return s.dir }

// FindBinary returns the path of named: $NAMED_BIN, else named on $PATH,
// else /usr/sbin/named.
func FindBinary() (string, error) {
	if p := os.Getenv("NAMED_BIN"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("named"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/named"); err == nil {
		return "/usr/sbin/named", nil
	}
	return "", errors.New("named (BIND 9) is not installed: " + Install)
}

// Start starts named serving zones, and stops it in t.Cleanup. It fails
// the test when named is missing or does not come up.
func Start(t testing.TB, zones ...Zone) *Server {
	t.Helper()
	bin, err := FindBinary()
	if err != nil {
		t.Fatalf("bindtest: %v", err)
	}
	dir, err := os.MkdirTemp("", "bindtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	s := &Server{secret: base64.StdEncoding.EncodeToString(secret), dir: dir}
	for attempt := 1; ; attempt++ {
		err = s.launch(bin, zones)
		if err == nil {
			break
		}
		// The port was picked by listening on :0 and closing; another
		// process may have taken it meanwhile. Try again with another.
		if attempt == 3 || !strings.Contains(s.log(), "address in use") {
			t.Fatalf("bindtest: %v\nnamed's log:\n%s", err, s.log())
		}
	}
	t.Cleanup(s.stop)
	return s
}

// launch writes the configuration with a fresh port, starts named and
// waits until every zone answers.
func (s *Server) launch(bin string, zones []Zone) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	conf, err := s.writeConfig(port, zones)
	if err != nil {
		return err
	}
	args := []string{"-g", "-c", conf}
	if os.Geteuid() == 0 {
		// named refuses to keep root; it runs as bind, which must own
		// the directory to write its journals.
		if err := chownTree(s.dir, "bind"); err != nil {
			return err
		}
		args = append(args, "-u", "bind")
	}
	logFile, err := os.OpenFile(filepath.Join(s.dir, "named.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", bin, err)
	}
	s.exited = make(chan struct{})
	go func() {
		_ = s.cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	deadline := time.Now().Add(startTimeout)
	for _, z := range zones {
		if z.Forward != "" {
			continue // its server may not run yet
		}
		for !s.answers(z.Name) {
			select {
			case <-s.exited:
				return errors.New("named exited at start")
			default:
			}
			if time.Now().After(deadline) {
				s.stop()
				return fmt.Errorf("named did not answer for %s within %v", z.Name, startTimeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// answers reports whether named answers a SOA query for zone.
func (s *Server) answers(zone string) bool {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(zone), dns.TypeSOA)
	c := &dns.Client{Timeout: time.Second}
	r, _, err := c.Exchange(m, s.addr)
	return err == nil && r.Rcode == dns.RcodeSuccess
}

// writeConfig writes named.conf and the zone files, and returns the path
// of named.conf.
func (s *Server) writeConfig(port int, zones []Zone) (string, error) {
	recursion := "no"
	var zc strings.Builder
	for _, z := range zones {
		name := strings.TrimSuffix(z.Name, ".")
		if z.Forward != "" {
			host, fport, err := net.SplitHostPort(z.Forward)
			if err != nil {
				return "", fmt.Errorf("zone %s: forward %q: %w", name, z.Forward, err)
			}
			recursion = "yes"
			fmt.Fprintf(&zc, "zone %q { type forward; forward only; forwarders { %s port %s; }; };\n", name, host, fport)
			continue
		}
		file := filepath.Join(s.dir, name+".zone")
		var zf bytes.Buffer
		fmt.Fprintf(&zf, "$ORIGIN %s.\n$TTL 1\n", name)
		fmt.Fprintf(&zf, "@ SOA ns.%s. hostmaster.%s. 1 3600 600 86400 1\n", name, name)
		fmt.Fprintf(&zf, "@ NS ns.%s.\nns A 127.0.0.1\n", name)
		for _, r := range z.Records {
			zf.WriteString(r + "\n")
		}
		if err := os.WriteFile(file, zf.Bytes(), 0o644); err != nil {
			return "", err
		}
		fmt.Fprintf(&zc, "zone %q { type primary; file %q; allow-update { key %q; }; };\n", name, file, KeyName)
	}
	conf := fmt.Sprintf(`options {
	directory %q;
	pid-file none;
	listen-on port %d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion %s;
	allow-recursion { 127.0.0.1; };
	allow-query { any; };
	dnssec-validation no;
	notify no;
	max-cache-ttl 1;
	max-ncache-ttl 1;
};
controls { };
key %q { algorithm hmac-sha256; secret %q; };
%s`, s.dir, port, recursion, KeyName, s.secret, zc.String())
	path := filepath.Join(s.dir, "named.conf")
	return path, os.WriteFile(path, []byte(conf), 0o644)
}

// stop kills named and waits for it to exit.
func (s *Server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// log returns what named wrote so far.
func (s *Server) log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "named.log"))
	return string(b)
}

// Add adds records (zone file syntax with absolute names,
// "_acme-challenge.shop.example. 1 IN CNAME x.acme.hoster.example.") to
// zone with a dynamic update signed with the test's key, failing the
// test when named refuses it.
func (s *Server) Add(t testing.TB, zone string, records ...string) {
	t.Helper()
	m := new(dns.Msg)
	m.SetUpdate(dns.Fqdn(zone))
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatalf("bindtest: record %q: %v", r, err)
		}
		m.Insert([]dns.RR{rr})
	}
	m.SetTsig(KeyName, dns.HmacSHA256, 300, time.Now().Unix())
	c := &dns.Client{Timeout: 10 * time.Second, TsigSecret: map[string]string{KeyName: s.secret}}
	r, _, err := c.Exchange(m, s.addr)
	if err != nil || r.Rcode != dns.RcodeSuccess {
		t.Fatalf("bindtest: update of %s: %v %v", zone, r, err)
	}
}

// FreePort returns a port free on 127.0.0.1 for both UDP and TCP now,
// for a DNS server of the test's own that a zone is forwarded to.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// freePort returns a port free on 127.0.0.1 for both UDP and TCP now.
func freePort() (int, error) {
	for range 10 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, errors.New("no port free for both UDP and TCP")
}

// chownTree gives dir and what it holds to the user name.
func chownTree(dir, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		return fmt.Errorf("named runs as %s, who does not exist: %w (%s)", name, err, Install)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, gid)
	})
}
