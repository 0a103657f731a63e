package nginx_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/nginx/nginxtest"
	"github.com/certserver/certserver/store/certtest"
)

// The leaf format of the certificate endpoint (certserver.LeafFormat) as
// the fake sidecar speaks it: the Lua module asks for it, keeps each
// intermediate once per nginx and parses it once per worker.

// leafAnswer rewrites a 200 answer whose body is PEM certificates then a
// PEM key into the leaf format on w's headers, registering the
// intermediates it names (unless registered already, so that a test can
// register wrong content). It returns the answer to send.
func (f *fakeSidecar) leafAnswer(w http.ResponseWriter, a answer) answer {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.leafFormat {
		return a
	}
	var leaf, key []byte
	var digests []string
	for rest := a.body; ; {
		b, r := pem.Decode(rest)
		if b == nil {
			break
		}
		block := pem.EncodeToMemory(b)
		switch {
		case b.Type != "CERTIFICATE":
			key = block
		case leaf == nil:
			leaf = block
		default:
			sum := sha256.Sum256(b.Bytes)
			d := hex.EncodeToString(sum[:])
			if f.chains == nil {
				f.chains = map[string][]byte{}
			}
			if _, ok := f.chains[d]; !ok {
				f.chains[d] = block
			}
			digests = append(digests, d)
		}
		rest = r
	}
	if leaf == nil || key == nil {
		return a // not PEM: the first format, as the real sidecar does
	}
	kb, _ := pem.Decode(key)
	ks := sha256.Sum256(kb.Bytes)
	w.Header().Set("Content-Type", certserver.LeafFormat)
	w.Header().Set(certserver.ChainHeader, strings.Join(digests, " "))
	w.Header().Set(certserver.KeyHeader, hex.EncodeToString(ks[:]))
	a.body = append(leaf, key...)
	return a
}

// serveChain answers GET /v1/chains/{d}, counted in hits as "chain:" + d.
func (f *fakeSidecar) serveChain(w http.ResponseWriter, d string) {
	f.mu.Lock()
	f.hits["chain:"+d]++
	p, ok := f.chains[d]
	status := f.chainStatus[d]
	delay := f.chainDelay
	f.mu.Unlock()
	time.Sleep(delay)
	if status == 0 && !ok {
		status = http.StatusNotFound
	}
	if status != 0 {
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(p)))
	w.Write(p)
}

func (f *fakeSidecar) setChainStatus(d string, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.chainStatus == nil {
		f.chainStatus = map[string]int{}
	}
	if status == 0 {
		delete(f.chainStatus, d)
	} else {
		f.chainStatus[d] = status
	}
}

func (f *fakeSidecar) setChain(d string, p []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.chains == nil {
		f.chains = map[string][]byte{}
	}
	f.chains[d] = p
}

// chainPKI is a root, an intermediate it signed, and leaves under the
// intermediate, as a public CA's are: the root is not sent, so a client
// that trusts only the root verifies a leaf only when the intermediate
// comes with it.
type chainPKI struct {
	root, inter *certtest.Cert
	roots       *x509.CertPool
}

func newChainPKI(t testing.TB, cn string) *chainPKI {
	t.Helper()
	root := certtest.New(t, certtest.Template{CommonName: cn + " root", IsCA: true}, nil)
	inter := certtest.New(t, certtest.Template{CommonName: cn + " intermediate", IsCA: true}, root)
	roots := x509.NewCertPool()
	roots.AddCert(root.Cert)
	return &chainPKI{root: root, inter: inter, roots: roots}
}

// issue returns a leaf for name under the intermediate (with key, when
// given) and the body of its answer: leaf, intermediate, key.
func (p *chainPKI) issue(t testing.TB, name string, key *certtest.Cert) (*certtest.Cert, []byte) {
	t.Helper()
	tmpl := certtest.Template{DNSNames: []string{name}, Serial: big.NewInt(5000 + lastSerial.Add(1))}
	if key != nil {
		tmpl.Key = key.Key
	}
	c := certtest.New(t, tmpl, p.inter)
	body := append(append(append([]byte{}, c.CertPEM...), p.inter.CertPEM...), c.KeyPEM...)
	return c, body
}

func (p *chainPKI) interDigest() string {
	sum := sha256.Sum256(p.inter.Cert.Raw)
	return hex.EncodeToString(sum[:])
}

// patient is the Configure of the tests below that count requests or
// parses: timeouts no loaded machine reaches, so that no slow answer
// turns into a fallback, a retry or a worker that gives up waiting on
// the one that asks.
const patient = "connect_timeout_ms = 10000, read_timeout_ms = 10000, lock_timeout_ms = 30000,"

// verifiedBy makes one full TLS handshake with addr for sni that must
// verify against roots, then one request (to path), and returns the
// certificates served, the worker that served them and the answer's body.
func verifiedBy(addr, sni string, roots *x509.CertPool, path string) ([]*x509.Certificate, string, string, error) {
	cfg := &tls.Config{ServerName: sni, RootCAs: roots, SessionTicketsDisabled: true}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, "", "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	certs := conn.ConnectionState().PeerCertificates
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, sni); err != nil {
		return nil, "", "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", "", err
	}
	return certs, resp.Header.Get(nginxtest.WorkerHeader), string(b), nil
}

// TestLuaLeafFormat: with the leaf format, the chain served holds the
// intermediate (a client trusting only the root verifies it), the
// intermediate is fetched from the sidecar once for all names under it
// and all workers, each name once per nginx, and a worker parses one key
// for the names that share it.
func TestLuaLeafFormat(t *testing.T) {
	pki := newChainPKI(t, "leaf format")
	fb := newTestCA(t).issue(t, "fallback.invalid")
	dir := t.TempDir()
	fbCert, fbKey := fb.writeFiles(t, dir, "fallback")
	side := startFakeSidecar(t)
	side.leafFormat = true
	one, oneBody := pki.issue(t, "one.chain.test", nil)
	two, twoBody := pki.issue(t, "two.chain.test", nil)
	three, threeBody := pki.issue(t, "three.chain.test", one) // one's key
	side.set("one.chain.test", answer{status: 200, body: oneBody, maxAge: 3600})
	side.set("two.chain.test", answer{status: 200, body: twoBody, maxAge: 3600})
	side.set("three.chain.test", answer{status: 200, body: threeBody, maxAge: 3600})
	ngx := nginxtest.Start(t, nginxtest.Options{Sidecar: "unix:" + side.sock, FallbackCert: fbCert, FallbackKey: fbKey, Stats: true,
		Configure: patient})
	side.feedSettled(t, ngx.HTTPSAddr(), 2)

	leaves := map[string]*certtest.Cert{"one.chain.test": one, "two.chain.test": two, "three.chain.test": three}
	// Until every worker has served every name, each handshake verified
	// against the root alone.
	served := map[string]map[string]bool{}
	stats := map[string]map[string]nginxtest.Stats{}
	eventually(t, 60*time.Second, "every worker serves every name", func() error {
		for name, leaf := range leaves {
			certs, pid, body, err := verifiedBy(ngx.HTTPSAddr(), name, pki.roots, nginxtest.StatsPath)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err) // a loaded machine: try again
			}
			if len(certs) != 2 || !bytes.Equal(certs[0].Raw, leaf.Cert.Raw) || !bytes.Equal(certs[1].Raw, pki.inter.Cert.Raw) {
				t.Fatalf("%s: served %d certificates, want the leaf then the intermediate", name, len(certs))
			}
			if served[pid] == nil {
				served[pid] = map[string]bool{}
			}
			served[pid][name] = true
			if stats[pid], err = nginxtest.ParseStats(body); err != nil {
				t.Fatal(err)
			}
		}
		if len(served) < ngx.Workers() {
			return fmt.Errorf("%d workers served so far", len(served))
		}
		for pid, names := range served {
			if len(names) < len(leaves) {
				return fmt.Errorf("worker %s served %d names", pid, len(names))
			}
		}
		return nil
	})

	if got := side.hitsFor("chain:" + pki.interDigest()); got != 1 {
		t.Errorf("the intermediate was fetched %d times, want once for the nginx", got)
	}
	for name := range leaves {
		if got := side.hitsFor(name); got != 1 {
			t.Errorf("%s fetched %d times, want once for the nginx", name, got)
		}
	}
	// Each worker parsed each leaf once, the intermediate once (from the
	// sidecar or the shared dict), and two keys for three names.
	for pid, st := range stats {
		if st["cert"].N != 3 || st["intermediate"].N != 1 || st["key"].N != 2 || st["chain"].N != 3 {
			t.Errorf("worker %s parsed leaves %d, intermediates %d, keys %d, built chains %d; want 3, 1, 2, 3",
				pid, st["cert"].N, st["intermediate"].N, st["key"].N, st["chain"].N)
		}
	}
	ngx.AssertCleanErrorLog(t)
}

// TestLuaLeafFormatConcurrent: new names under one intermediate asked for
// at once, in both workers, while the sidecar takes its time to answer
// for the intermediate, still cost one request for it.
func TestLuaLeafFormatConcurrent(t *testing.T) {
	pki := newChainPKI(t, "concurrent")
	fb := newTestCA(t).issue(t, "fallback.invalid")
	fbCert, fbKey := fb.writeFiles(t, t.TempDir(), "fallback")
	side := startFakeSidecar(t)
	side.leafFormat = true
	side.chainDelay = 300 * time.Millisecond
	var names []string
	for i := range 8 {
		name := "c" + strconv.Itoa(i) + ".chain.test"
		_, body := pki.issue(t, name, nil)
		side.set(name, answer{status: 200, body: body, maxAge: 3600})
		names = append(names, name)
	}
	ngx := nginxtest.Start(t, nginxtest.Options{Sidecar: "unix:" + side.sock, FallbackCert: fbCert, FallbackKey: fbKey,
		Configure: patient})
	side.feedSettled(t, ngx.HTTPSAddr(), 2)
	pids := make(chan string, len(names))
	errs := make(chan error, len(names))
	for _, name := range names {
		go func() {
			_, pid, _, err := verifiedBy(ngx.HTTPSAddr(), name, pki.roots, "/")
			if err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
			pids <- pid
		}()
	}
	workers := map[string]bool{}
	for range names {
		workers[<-pids] = true
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := side.hitsFor("chain:" + pki.interDigest()); got != 1 {
		t.Errorf("the intermediate was fetched %d times by %d workers, want once", got, len(workers))
	}
	ngx.AssertCleanErrorLog(t)
}

// TestLuaLeafFormatMissingIntermediate: a name whose intermediate the
// sidecar does not have, or whose chain route fails or answers another
// certificate, gets the fallback (never its leaf with an incomplete
// chain), with one log line however often it is asked; once the route
// answers, the name is served with its full chain.
func TestLuaLeafFormatMissingIntermediate(t *testing.T) {
	ca := newTestCA(t)
	fb := ca.issue(t, "fallback.invalid")
	dir := t.TempDir()
	fbCert, fbKey := fb.writeFiles(t, dir, "fallback")
	side := startFakeSidecar(t)
	side.leafFormat = true
	lost, wrong, failing := newChainPKI(t, "lost"), newChainPKI(t, "wrong"), newChainPKI(t, "failing")
	lostLeaf, lostBody := lost.issue(t, "lost.chain.test", nil)
	_, wrongBody := wrong.issue(t, "wrong.chain.test", nil)
	_, failingBody := failing.issue(t, "failing.chain.test", nil)
	side.set("lost.chain.test", answer{status: 200, body: lostBody, maxAge: 3600})
	side.set("wrong.chain.test", answer{status: 200, body: wrongBody, maxAge: 3600})
	side.set("failing.chain.test", answer{status: 200, body: failingBody, maxAge: 3600})
	side.setChainStatus(lost.interDigest(), http.StatusNotFound)
	side.setChain(wrong.interDigest(), wrong.root.CertPEM) // another certificate
	side.setChainStatus(failing.interDigest(), http.StatusInternalServerError)
	ngx := nginxtest.Start(t, nginxtest.Options{Sidecar: "unix:" + side.sock, FallbackCert: fbCert, FallbackKey: fbKey,
		// One log line per kind however long the loop below takes.
		Workers: 1, Configure: "error_ttl = 0.05, log_interval = 3600,"})
	side.feedSettled(t, ngx.HTTPSAddr(), 1)

	for _, tc := range []struct {
		name   string
		digest string
	}{
		{"lost.chain.test", lost.interDigest()},
		{"wrong.chain.test", wrong.interDigest()},
		{"failing.chain.test", failing.interDigest()},
	} {
		// Asked again every error_ttl: each time the fallback.
		eventually(t, 60*time.Second, tc.name+" asked for its intermediate 3 times", func() error {
			if got := servedSerial(t, ngx.HTTPSAddr(), tc.name); got.Cmp(fb.serial) != 0 {
				t.Fatalf("%s served serial %v, want the fallback's %v", tc.name, got, fb.serial)
			}
			if n := side.hitsFor("chain:" + tc.digest); n < 3 {
				return fmt.Errorf("intermediate asked %d times", n)
			}
			return nil
		})
	}
	log := ngx.ErrorLog()
	// One line for the three names and nine failures: rate-limited.
	if n := countLines(log, "certserver: bad answer for "); n != 1 {
		t.Errorf("%d log lines of bad answers, want 1:\n%s", n, log)
	}
	if n := countLines(log, "bad answer for lost.chain.test: sidecar answered 404 for intermediate "+lost.interDigest()); n != 1 {
		t.Errorf("no log line for the missing intermediate:\n%s", log)
	}

	side.setChainStatus(lost.interDigest(), 0)
	side.setChain(lost.interDigest(), lost.inter.CertPEM)
	eventually(t, 30*time.Second, "lost.chain.test served once its intermediate is back", func() error {
		certs, err := handshake(ngx.HTTPSAddr(), "lost.chain.test", lost.roots)
		if err != nil {
			return err
		}
		if !bytes.Equal(certs[0].Raw, lostLeaf.Cert.Raw) {
			return fmt.Errorf("served serial %v", certs[0].SerialNumber)
		}
		return nil
	})
	ngx.AssertCleanErrorLog(t)
}

// TestLuaFirstFormat: a sidecar that does not speak the leaf format (an
// older one, during an upgrade) answers the whole chain, which is served
// as it comes.
func TestLuaFirstFormat(t *testing.T) {
	pki := newChainPKI(t, "first format")
	fb := newTestCA(t).issue(t, "fallback.invalid")
	fbCert, fbKey := fb.writeFiles(t, t.TempDir(), "fallback")
	side := startFakeSidecar(t) // leafFormat false
	leaf, body := pki.issue(t, "old.chain.test", nil)
	side.set("old.chain.test", answer{status: 200, body: body, maxAge: 3600})
	ngx := nginxtest.Start(t, nginxtest.Options{Sidecar: "unix:" + side.sock, FallbackCert: fbCert, FallbackKey: fbKey,
		Configure: patient})
	eventually(t, 60*time.Second, "old.chain.test served with its chain", func() error {
		certs, err := handshake(ngx.HTTPSAddr(), "old.chain.test", pki.roots)
		if err != nil {
			return err
		}
		if len(certs) != 2 || !bytes.Equal(certs[0].Raw, leaf.Cert.Raw) {
			t.Fatalf("served %d certificates, want the leaf and the intermediate", len(certs))
		}
		return nil
	})
	ngx.AssertCleanErrorLog(t)
}

// TestLeafFormatWithSidecar: the real sidecar answers the Lua module in
// the leaf format: certificates imported with their intermediate are
// served with it (a client trusting only the root verifies them), each
// chain built from the leaf and the worker's one parse of the
// intermediate, and each key from its scalar and point.
func TestLeafFormatWithSidecar(t *testing.T) {
	bin := certserverBinary(t)
	pki := newChainPKI(t, "sidecar")
	fb := newTestCA(t).issue(t, "fallback.invalid")
	fbCert, fbKey := fb.writeFiles(t, t.TempDir(), "fallback")
	side := startSidecar(t, bin)
	ngx := nginxtest.Start(t, nginxtest.Options{Sidecar: "unix:" + side.sock, FallbackCert: fbCert, FallbackKey: fbKey,
		Workers: 1, Stats: true, Configure: patient})
	leaves := map[string]*certtest.Cert{}
	for _, name := range []string{"a.sidecar.test", "b.sidecar.test"} {
		c, _ := pki.issue(t, name, nil)
		side.importLeaf(t, leaf{serial: c.Cert.SerialNumber, keyPEM: c.KeyPEM,
			chainPEM: append(append([]byte{}, c.CertPEM...), pki.inter.CertPEM...)})
		leaves[name] = c
	}
	var st map[string]nginxtest.Stats
	for name, c := range leaves {
		eventually(t, 30*time.Second, name+" served with its intermediate", func() error {
			certs, _, body, err := verifiedBy(ngx.HTTPSAddr(), name, pki.roots, nginxtest.StatsPath)
			if err != nil {
				return err
			}
			if len(certs) != 2 || !bytes.Equal(certs[0].Raw, c.Cert.Raw) || !bytes.Equal(certs[1].Raw, pki.inter.Cert.Raw) {
				return fmt.Errorf("served %d certificates, want the leaf then the intermediate", len(certs))
			}
			st, err = nginxtest.ParseStats(body)
			return err
		})
	}
	if st["intermediate"].N != 1 || st["chain"].N != 2 || st["chain_fetch"].N != 1 {
		t.Errorf("the worker parsed %d intermediates (want 1), fetched %d (want 1), built %d chains (want 2)",
			st["intermediate"].N, st["chain_fetch"].N, st["chain"].N)
	}
	// The P-256 keys the sidecar sends are built from their scalar and
	// point, not through OpenSSL's decoder.
	if st["key_fast"].N != 2 || st["key_pem"].N != 0 {
		t.Errorf("the worker built %d keys from scalar and point (want 2), parsed %d from PEM (want 0)", st["key_fast"].N, st["key_pem"].N)
	}
	ngx.AssertCleanErrorLog(t)
}
