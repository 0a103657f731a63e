// Package pebbletest runs Pebble, the ACME test CA, for integration tests:
// a real pebble process on loopback with ports picked at run time, its own
// DNS server (dnstest) that points test names wherever the test wants, and
// a counting front in front of its ACME API so that tests can assert how
// many orders reached the CA.
//
// Tests never skip for want of Pebble: Start fails the test and says how to
// install it (`make test` does).
//
// Typical use:
//
//	port := pebbletest.StartResponder(t, lookupKeyAuth) // nginx's port 80
//	ca := pebbletest.Start(t, pebbletest.Options{HTTPPort: port})
//	ca.DNS.SetA("www.example.test", netip.MustParseAddr("127.0.0.1"))
//	// … point the ACME client at ca.DirectoryURL with ca.HTTPClient() …
//	err := ca.VerifyChain(t, chainPEM, "www.example.test")
package pebbletest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/dnstest"
)

// Version is the Pebble release the harness is written for.
const Version = "v2.10.1"

// Install is the command that installs Pebble at Version.
const Install = "go install github.com/letsencrypt/pebble/v2/cmd/pebble@" + Version

// ShortLivedValidity is the validity of the "shortlived" profile of
// DefaultProfiles.
const ShortLivedValidity = 5 * time.Minute

// startTimeout bounds how long Start waits for Pebble to answer.
const startTimeout = 30 * time.Second

// Profile is a certificate profile Pebble offers (draft-ietf-acme-profiles).
type Profile struct {
	Description string
	// Validity is the lifetime of the certificates issued under the
	// profile, whole seconds. Pebble's NotAfter is NotBefore+Validity-1s.
	Validity time.Duration
}

// DefaultProfiles returns the profiles Start offers unless told otherwise:
// "default", 90 days, and "shortlived", ShortLivedValidity.
func DefaultProfiles() map[string]Profile {
	return map[string]Profile{
		"default":    {Description: "90-day certificates", Validity: 90 * 24 * time.Hour},
		"shortlived": {Description: "certificates valid for minutes", Validity: ShortLivedValidity},
	}
}

// Options configures Start. The zero value is ready to use.
type Options struct {
	// HTTPPort is the port Pebble connects to on a name's address to
	// validate HTTP-01 challenges: the test's substitute for nginx's port
	// 80. Start the responder first (StartResponder, or the sidecar's
	// challenge endpoint) and pass its port. Default 0: Start picks a free
	// port, found in Server.HTTPPort, that the test must then listen on.
	HTTPPort int
	// TLSPort is the port Pebble connects to for TLS-ALPN-01. Default 0: a
	// free port nobody listens on.
	TLSPort int
	// DNS is the server Pebble resolves names with. Default nil: Start
	// starts a dnstest.Server where every name is NXDOMAIN until the test
	// sets records (Server.DNS), unless DNSAddr is set.
	DNS *dnstest.Server
	// DNSAddr is the "host:port" of another DNS server Pebble resolves
	// names with (a real BIND: renewer/bindtest), in place of DNS.
	// Server.DNS is nil then. Default "".
	DNSAddr string
	// Profiles are the profiles Pebble offers. Default DefaultProfiles().
	// Beware: Pebble gives an order that names no profile a profile picked
	// at random; tests that check lifetimes name one.
	Profiles map[string]Profile
	// BlockedDomains are refused by Pebble's policy with a
	// rejectedIdentifier problem, names below them too. Default none.
	BlockedDomains []string
	// AlternateRoots is the number of alternate root hierarchies
	// (PEBBLE_ALTERNATE_ROOTS). Default 0.
	AlternateRoots int
	// ChainLength is the number of intermediates in a chain
	// (PEBBLE_CHAIN_LENGTH). Default 0: Pebble's own default, one.
	ChainLength int
	// AuthzReuse is the percentage of orders in which Pebble reuses an
	// account's valid authorization instead of asking for a new challenge
	// (PEBBLE_AUTHZREUSE). Default 0, so every order is validated; Pebble
	// on its own reuses half of them.
	AuthzReuse int
	// EABKeys, when set, makes Pebble require external account binding
	// (RFC 8555 section 7.3.4), as ZeroSSL and Google Trust Services do,
	// and accept these keys: key identifier to HMAC key, base64url.
	// Default nil: no binding required.
	EABKeys map[string]string
	// HideRenewalInfo takes renewalInfo out of the directory the front
	// serves, so that Pebble looks like a CA without ARI (RFC 9773);
	// Pebble still answers it, for those who know where. Default false.
	HideRenewalInfo bool
}

// Server is a running Pebble. Its methods are safe for concurrent use.
type Server struct {
	// DirectoryURL is the ACME directory, served through the counting
	// front: "https://127.0.0.1:PORT/dir".
	DirectoryURL string
	// ManagementURL is the base of Pebble's management API
	// ("https://127.0.0.1:PORT"): /roots/0, /intermediates/0, ….
	ManagementURL string
	// HTTPPort and TLSPort are the ports Pebble validates HTTP-01 and
	// TLS-ALPN-01 challenges on.
	HTTPPort int
	TLSPort  int
	// DNS is the DNS server Pebble resolves names with; nil when
	// Options.DNSAddr named another.
	DNS *dnstest.Server
	// dnsAddr is the address of the DNS server Pebble resolves with.
	dnsAddr string

	tlsPool        *x509.CertPool
	logPath        string
	alternateRoots int
	front          *front
	issued         *issuance // from Pebble's output, for the front

	rootsMu sync.Mutex
	roots   *x509.CertPool // cached by Roots

	// What Restart needs to start Pebble again as it was.
	bin, dir, cfgPath string
	acmeURL           string // Pebble's own ACME listener, behind the front
	opts              Options

	procMu sync.Mutex
	proc   *process // nil while stopped
}

// Start starts Pebble and stops it in t.Cleanup. It fails the test when the
// pebble binary is missing (naming what is missing and how to install it)
// or Pebble does not come up; it never skips.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	bin, err := FindBinary()
	if err != nil {
		t.Fatalf("pebbletest: %v", err)
	}
	if v := BinaryVersion(bin); v != "" && v != Version && v != "(devel)" {
		t.Logf("pebbletest: %s is pebble %s; the harness is written for %s (%s)", bin, v, Version, Install)
	}
	if opts.DNS == nil && opts.DNSAddr == "" {
		opts.DNS = dnstest.Start(t, dnstest.Options{})
	}
	if opts.Profiles == nil {
		opts.Profiles = DefaultProfiles()
	}
	dir := t.TempDir()
	ca, err := newListenerCerts(dir)
	if err != nil {
		t.Fatalf("pebbletest: listener certificate: %v", err)
	}

	dnsAddr := opts.DNSAddr
	if dnsAddr == "" {
		dnsAddr = opts.DNS.Addr()
	}
	s := &Server{DNS: opts.DNS, dnsAddr: dnsAddr, tlsPool: ca.pool, logPath: filepath.Join(dir, "pebble.log"), alternateRoots: opts.AlternateRoots,
		issued: newIssuance()}
	var p *process
	for attempt := 1; ; attempt++ {
		p, err = s.launch(bin, dir, ca, opts)
		if err == nil {
			break
		}
		// Ports are picked by listening on :0 and closing; another process
		// may take one before Pebble binds it. Try again with new ports.
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			t.Fatalf("pebbletest: %v\n%s", err, s.logTail(40))
		}
	}
	s.proc, s.bin, s.dir, s.opts, s.acmeURL = p, bin, dir, opts, p.acmeURL
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("pebbletest: last lines of the Pebble log (%s):\n%s", s.logPath, s.logTail(60))
		}
	})

	f, err := startFront(t, p.acmeURL, ca, s.logPath, s.issued, opts.HideRenewalInfo)
	if err != nil {
		t.Fatalf("pebbletest: front: %v", err)
	}
	s.front = f
	s.DirectoryURL = f.url + "/dir"
	s.ManagementURL = p.mgmtURL
	return s
}

// DNSAddr returns the "host:port" of the DNS server Pebble resolves
// names with: DNS's, or Options.DNSAddr.
func (s *Server) DNSAddr() string { return s.dnsAddr }

// errPortTaken is returned by launch when Pebble could not bind a port.
var errPortTaken = errors.New("port taken")

// Stop kills Pebble, as a CA that goes down. The front stays up and
// answers every request 502 Bad Gateway, as a load balancer in front of a
// CA that is down does. Stopping a stopped Pebble does nothing.
func (s *Server) Stop() {
	s.procMu.Lock()
	defer s.procMu.Unlock()
	if s.proc != nil {
		s.proc.stop()
		s.proc = nil
	}
}

// requestTimeout bounds one request to Pebble. A Pebble that is merely
// slow (a loaded machine, every package's tests running beside it)
// answers within it; a stuck one is what a test's own watchdog or
// deadline reports, with more to say than a client timeout.
const requestTimeout = 2 * time.Minute

// Log returns what Pebble has written to its standard output and error.
func (s *Server) Log() string {
	data, _ := os.ReadFile(s.logPath)
	return string(data)
}

// DumpAndStop makes Pebble write every goroutine's stack to its log and
// exit (SIGQUIT), and returns the dump: for a test that found Pebble no
// longer answering, to say where it is stuck. Pebble is gone afterwards.
func (s *Server) DumpAndStop() string {
	s.procMu.Lock()
	p := s.proc
	s.procMu.Unlock()
	if p == nil {
		return "(pebble is stopped)"
	}
	if err := p.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		return "(cannot signal pebble: " + err.Error() + ")"
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
	}
	log := s.Log()
	if i := strings.Index(log, "SIGQUIT"); i >= 0 {
		return log[i:]
	}
	return s.logTail(40)
}

// logTail returns the last n lines of Pebble's log.
func (s *Server) logTail(n int) string {
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Orders returns the newOrder requests that reached the front so far, in
// the order they arrived, including those answered with an injected Fault.
func (s *Server) Orders() []Order { return s.front.orders() }

// OrderCount returns how many newOrder requests reached the front: each
// one is an ACME order the client tried to create. A request is counted
// before it is passed on, so the count is exact as soon as the client has
// its answer.
func (s *Server) OrderCount() int { return len(s.front.orders()) }

// OrdersFor returns how many newOrder requests named name among their
// identifiers.
func (s *Server) OrdersFor(name string) int {
	n := 0
	for _, o := range s.front.orders() {
		for _, id := range o.Names {
			if strings.EqualFold(id, name) {
				n++
				break
			}
		}
	}
	return n
}

// Requests returns how many POST requests reached the directory resource
// named resource ("newAccount", "newOrder", "revokeCert", "keyChange"):
// Requests("newAccount") counts account registrations and look-ups.
func (s *Server) Requests(resource string) int { return s.front.requestCount(resource) }

// SetRenewalInfo makes Pebble suggest the window start to end (RFC 9773
// section 4.2) for the certificate whose leaf starts chainPEM, through the
// management API (/set-renewal-info/). A window in the past asks for
// renewal now, as a CA does for a certificate it is about to revoke. It
// fails the test when Pebble refuses.
func (s *Server) SetRenewalInfo(t testing.TB, chainPEM []byte, start, end time.Time) {
	t.Helper()
	certs, err := parsePEMCerts(chainPEM)
	if err != nil {
		t.Fatalf("pebbletest: SetRenewalInfo: %v", err)
	}
	window, err := json.Marshal(map[string]any{"suggestedWindow": map[string]time.Time{"start": start.UTC(), "end": end.UTC()}})
	if err != nil {
		t.Fatalf("pebbletest: SetRenewalInfo: %v", err)
	}
	body, err := json.Marshal(map[string]string{
		"Certificate": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs[0].Raw})),
		"ARIResponse": string(window),
	})
	if err != nil {
		t.Fatalf("pebbletest: SetRenewalInfo: %v", err)
	}
	resp, err := s.HTTPClient().Post(s.ManagementURL+"/set-renewal-info/", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("pebbletest: SetRenewalInfo: %v", err)
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("pebbletest: SetRenewalInfo: %s: %s", resp.Status, msg)
	}
}

// CertStatus is what Pebble's management API says of a certificate
// (GET /cert-status-by-serial/SERIAL).
type CertStatus struct {
	Status string // "Valid" or "Revoked"
	Reason *int   // the revocation reason code (RFC 5280 section 5.3.1), when revoked
}

// CertStatus asks Pebble's management API about the certificate with the
// given serial (lowercase hex). Any failure fails the test.
func (s *Server) CertStatus(t testing.TB, serial string) CertStatus {
	t.Helper()
	resp, err := s.HTTPClient().Get(s.ManagementURL + "/cert-status-by-serial/" + serial)
	if err != nil {
		t.Fatalf("pebbletest: CertStatus: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("pebbletest: cert-status-by-serial/%s: %s", serial, resp.Status)
	}
	var st CertStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("pebbletest: cert-status-by-serial/%s: %v", serial, err)
	}
	return st
}

// FailNewOrders makes the front answer the next n newOrder requests with f
// instead of passing them to Pebble, to test how clients handle a CA that
// rate-limits or fails.
func (s *Server) FailNewOrders(n int, f Fault) { s.front.addFaults(n, f) }

// StartResponder serves HTTP-01 challenge responses on a free loopback port
// until the test ends and returns the port (pass it as Options.HTTPPort).
// GET /.well-known/acme-challenge/TOKEN answers keyAuth(ctx, TOKEN) as
// text/plain, or 404 when it returns an error.
func StartResponder(t testing.TB, keyAuth func(ctx context.Context, token string) (string, error)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pebbletest: responder: %v", err)
	}
	const prefix = "/.well-known/acme-challenge/"
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+prefix+"{token}", func(w http.ResponseWriter, r *http.Request) {
		ka, err := keyAuth(r.Context(), r.PathValue("token"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, ka)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}
