package nginx_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
	"github.com/certserver/certserver/renewer/pebbletest"
)

// acmeEnv is the whole issuance path on loopback, every part real: Pebble
// with its own DNS server, nginx with the project's snippets (its port-80
// server is the port Pebble validates HTTP-01 on, and proxies to the
// sidecar's challenge listener), and `certserver serve` ordering from
// Pebble.
type acmeEnv struct {
	ca          *pebbletest.Server
	ngx         *nginxtest.Nginx
	side        *sidecar
	fallbackDER []byte
}

// acmeEnvOptions configures startACMEEnv.
type acmeEnvOptions struct {
	// Profiles are the profiles Pebble offers. Default
	// pebbletest.DefaultProfiles().
	Profiles map[string]pebbletest.Profile
	// Profile is [acme] profile, the profile every order asks for.
	// Default "default" (Pebble's 90-day profile): Pebble picks a random
	// profile for orders that name none.
	Profile string
	// Workers is [renewer] workers. Default 4.
	Workers int
	// NginxWorkers is nginx's worker processes. Default nginxtest's (2).
	NginxWorkers int
	// NoPreflight turns the sidecar's pre-flight off, so that a name DNS
	// knows nothing of reaches Pebble, whose words the test wants. Default
	// false: pre-flight on, asking Pebble's DNS server.
	NoPreflight bool
	// CAAIdentities is [acme] caa_identities: the CAA issuer names the
	// pre-flight takes to mean Pebble. Default none: CAA is not checked.
	CAAIdentities []string
	// TLSALPN validates orders over TLS-ALPN-01 only: nginx runs the
	// stream snippet in front of its https server, which is Pebble's
	// TLS-ALPN-01 port, and the sidecar's [tls_alpn] responder behind
	// it; Pebble's HTTP-01 port is one nothing listens on, and the
	// sidecar's challenge endpoint is off. Default false: HTTP-01 through
	// nginx's port 80.
	TLSALPN bool
	// Extra returns TOML to append to the sidecar's configuration, such
	// as an [on_demand] section; it is given the running Pebble (for its
	// DNS server's address). Default nil: nothing.
	Extra func(ca *pebbletest.Server) string
}

// startACMEEnv starts nginx, Pebble and the sidecar, in that order: nginx's
// port-80 listener is Pebble's HTTP-01 port, and the sidecar needs Pebble's
// directory. Everything stops when the test ends.
func startACMEEnv(t testing.TB, opts acmeEnvOptions) *acmeEnv {
	t.Helper()
	if opts.Profile == "" {
		opts.Profile = "default"
	}
	if opts.Workers == 0 {
		opts.Workers = 4
	}
	bin := certserverBinary(t)
	dir := t.TempDir()
	if out, err := exec.Command(bin, "fallback-cert", "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("certserver fallback-cert: %v\n%s", err, out)
	}
	fbCert, fbKey := filepath.Join(dir, "fallback.crt"), filepath.Join(dir, "fallback.key")

	sock := filepath.Join(shortTempDir(t), "certs.sock")
	challenge := freeLoopbackAddr(t)
	var responder string
	if opts.TLSALPN {
		responder = freeLoopbackAddr(t)
	}
	ngx := nginxtest.Start(t, nginxtest.Options{
		Sidecar:      "unix:" + sock,
		ACME:         challenge,
		FallbackCert: fbCert,
		FallbackKey:  fbKey,
		Workers:      opts.NginxWorkers,
		TLSALPN:      responder,
	})
	pebbleOpts := pebbletest.Options{HTTPPort: addrPort(t, ngx.HTTPAddr()), Profiles: opts.Profiles}
	challengeTOML := fmt.Sprintf("[challenge]\nlisten = %q\n", challenge)
	waitFor := []string{challenge}
	if opts.TLSALPN {
		// Nothing answers HTTP-01: Pebble's HTTP-01 port is free, and
		// the sidecar's challenge endpoint is off.
		pebbleOpts.HTTPPort = addrPort(t, freeLoopbackAddr(t))
		pebbleOpts.TLSPort = addrPort(t, ngx.HTTPSAddr())
		challengeTOML = fmt.Sprintf("[challenge]\nlisten = \"\"\n\n[tls_alpn]\nlisten = %q\n", responder)
		waitFor = []string{responder}
	}
	ca := pebbletest.Start(t, pebbleOpts)
	caRoots := filepath.Join(dir, "pebble-listener.pem")
	writeListenerPEM(t, ca, caRoots)
	extra := fmt.Sprintf("\n[preflight]\nresolvers = [%q]\n", ca.DNS.Addr())
	if opts.NoPreflight {
		extra = "\n[preflight]\nenabled = false\n"
	}
	if opts.Extra != nil {
		extra += opts.Extra(ca)
	}

	side := startSidecarWith(t, bin, sidecarOptions{
		Socket:  sock,
		WaitFor: waitFor,
		Extra: challengeTOML + fmt.Sprintf(`
[acme]
directory = %q
agree_terms = true
ca_roots = %q
profile = %q
timeout = "1m"
caa_identities = %s

[renewer]
workers = %d
idle_wait = "1s"
`, ca.DirectoryURL, caRoots, opts.Profile, tomlStrings(opts.CAAIdentities), opts.Workers) + extra,
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nginx error log:\n%s", ngx.ErrorLog())
		}
	})
	return &acmeEnv{
		ca:          ca,
		ngx:         ngx,
		side:        side,
		fallbackDER: readLeafDER(t, fbCert),
	}
}

// pointHere makes names resolve to 127.0.0.1 in Pebble's DNS, where nginx's
// port-80 listener is.
func (e *acmeEnv) pointHere(names ...string) {
	for _, n := range names {
		e.ca.DNS.SetA(n, netip.MustParseAddr("127.0.0.1"))
	}
}

// served makes a TLS handshake with nginx for sni and returns the
// certificates it sent, unverified.
func (e *acmeEnv) served(sni string) ([]*x509.Certificate, error) {
	return handshake(e.ngx.HTTPSAddr(), sni, nil)
}

// issued is a condition for eventually: nginx serves sni a chain that
// verifies for sni against Pebble's roots now. It stores the leaf in *leaf
// when leaf is not nil.
func (e *acmeEnv) issued(t testing.TB, sni string, leaf **x509.Certificate) func() error {
	return func() error {
		certs, err := e.served(sni)
		if err != nil {
			return err
		}
		if bytes.Equal(certs[0].Raw, e.fallbackDER) {
			return fmt.Errorf("%s: nginx serves the fallback", sni)
		}
		if err := e.ca.VerifyCerts(t, certs, sni); err != nil {
			return fmt.Errorf("%s: served chain does not verify against Pebble's roots: %w", sni, err)
		}
		if leaf != nil {
			*leaf = certs[0]
		}
		return nil
	}
}

// isFallback reports whether certs is nginx's fallback certificate.
func (e *acmeEnv) isFallback(certs []*x509.Certificate) bool {
	return len(certs) > 0 && bytes.Equal(certs[0].Raw, e.fallbackDER)
}

// assertNoReload fails t if nginx was reloaded or restarted since it
// started with masterPID.
func (e *acmeEnv) assertNoReload(t testing.TB, masterPID int) {
	t.Helper()
	if pid := e.ngx.PID(); pid != masterPID {
		t.Errorf("nginx master PID %d, was %d", pid, masterPID)
	}
	if n := e.ngx.Reloads(); n != 0 {
		t.Errorf("nginx reloaded %d times", n)
	}
}

// issuedCount counts the certificates Pebble has issued, from its log
// ("Issued certificate serial S for order O", one line per certificate).
func (e *acmeEnv) issuedCount() int {
	return strings.Count(e.ca.Log(), "Issued certificate serial ")
}

// cli runs a certserver client command against the sidecar's admin API,
// found through CERTSERVER_ADMIN and CERTSERVER_ADMIN_TOKEN_FILE, and
// returns its standard output, and its standard error in err.
func (s *sidecar) cli(args ...string) ([]byte, error) {
	cmd := exec.Command(s.bin, args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CERTSERVER_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "CERTSERVER_ADMIN=http://"+s.admin, "CERTSERVER_ADMIN_TOKEN_FILE="+s.tokenFile)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("certserver %s: %v: %s%s", strings.Join(args, " "), err, stderr.Bytes(), stdout.Bytes())
	}
	return stdout.Bytes(), nil
}

// addDomains runs `certserver domains add NAME...` and fails t unless it
// succeeds.
func (s *sidecar) addDomains(t testing.TB, names ...string) {
	t.Helper()
	if _, err := s.cli(append([]string{"domains", "add"}, names...)...); err != nil {
		t.Fatal(err)
	}
}

// domainDoc is `certserver domains show NAME --json`, the admin API's
// GET /v1/domains/{name}. Times are kept as the API writes them (RFC 3339);
// parse them with parseTime.
type domainDoc struct {
	Name         string   `json:"name"`
	State        string   `json:"state"`
	Profile      string   `json:"profile"`
	Source       string   `json:"source"`
	NextAttempt  string   `json:"next_attempt"`
	Failures     int      `json:"failures"`
	LastError    string   `json:"last_error"`
	FailingSince string   `json:"failing_since"`
	AddedAt      string   `json:"added_at"`
	UpdatedAt    string   `json:"updated_at"`
	Certificate  *certDoc `json:"certificate"`
}

type certDoc struct {
	ID        string   `json:"id"`
	Names     []string `json:"names"`
	Serial    string   `json:"serial"`
	Issuer    string   `json:"issuer"`
	NotBefore string   `json:"not_before"`
	NotAfter  string   `json:"not_after"`
	RenewAt   string   `json:"renew_at"`
	KeyType   string   `json:"key_type"`
	Source    string   `json:"source"`
	Origin    string   `json:"origin"`
}

// showDomain runs `certserver domains show NAME --json`.
func (s *sidecar) showDomain(name string) (*domainDoc, error) {
	out, err := s.cli("domains", "show", name, "--json")
	if err != nil {
		return nil, err
	}
	var d domainDoc
	if err := json.Unmarshal(out, &d); err != nil {
		return nil, fmt.Errorf("domains show %s --json: %v\n%s", name, err, out)
	}
	return &d, nil
}

// domainState is a condition for eventually: `domains show` reports name
// in state want. It stores the document in *doc when doc is not nil.
func (s *sidecar) domainState(name, want string, doc **domainDoc) func() error {
	return func() error {
		d, err := s.showDomain(name)
		if err != nil {
			return err
		}
		if doc != nil {
			*doc = d
		}
		if d.State != want {
			return fmt.Errorf("%s is %s (failures %d, last error %q), want %s", name, d.State, d.Failures, d.LastError, want)
		}
		return nil
	}
}

// parseTime parses a time of the admin API, failing t naming the field.
func parseTime(t testing.TB, field, v string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		t.Fatalf("%s: %q is not an RFC 3339 time: %v", field, v, err)
	}
	return ts
}

// sameSerial reports whether the serial as the admin API writes it (hex,
// with or without colons and leading zeros, any case) is n.
func sameSerial(api string, n *big.Int) bool {
	api = strings.ToLower(strings.ReplaceAll(api, ":", ""))
	v, ok := new(big.Int).SetString(api, 16)
	return ok && v.Cmp(n) == 0
}

// writeListenerPEM writes, as [acme] ca_roots, the certificate Pebble (and
// the counting front before it) serves its HTTPS with, after checking it
// against the pebbletest throwaway CA. pebbletest keeps that CA's PEM to
// itself, but Go trusts a server certificate that is itself in the roots.
func writeListenerPEM(t testing.TB, ca *pebbletest.Server, path string) {
	t.Helper()
	u, err := url.Parse(ca.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: ca.CertPool()})
	if err != nil {
		t.Fatalf("TLS handshake with Pebble's front %s: %v", u.Host, err)
	}
	certs := conn.ConnectionState().PeerCertificates
	conn.Close()
	var buf bytes.Buffer
	for _, c := range certs {
		pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// addrPort returns the port of a host:port address.
func addrPort(t testing.TB, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// tomlStrings writes list as a TOML array of strings.
func tomlStrings(list []string) string {
	q := make([]string, len(list))
	for i, v := range list {
		q[i] = strconv.Quote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
