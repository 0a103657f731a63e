package certserver

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"sync"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/valyala/fasthttp"
)

// LeafFormat is the media type of the certificate endpoint's second answer
// format, which a caller asks for with "Accept: LeafFormat" on
// GET /v1/certs/{sni}. A caller that does not ask (certserver doctor, an
// older Lua module) gets the first format, application/x-pem-file: the
// whole PEM chain then the key.
//
// The body of a LeafFormat answer is the PEM of the leaf alone, then the
// PEM of its private key. ChainHeader lists the SHA-256 digests of the
// DER of the intermediates that follow the leaf, in chain order (lowercase
// hex, separated by spaces; empty for a leaf alone), each of which
// GET /v1/chains/{digest} answers; KeyHeader holds the SHA-256 digest
// of the DER of the key, so that a cache can keep one parsed copy of a
// key several certificates share. Cache-Control, RecordHeader and
// MatchHeader are as in the first format. The answer's Content-Type says
// which format was sent: a stored chain that is not a sequence of PEM
// certificates is sent in the first format even when LeafFormat was asked
// for.
const LeafFormat = "application/vnd.certserver.leaf+pem"

// ChainHeader and KeyHeader are the response headers of a LeafFormat
// answer (see LeafFormat).
const (
	ChainHeader = "X-Certserver-Chain"
	KeyHeader   = "X-Certserver-Key"
)

// ChainPathPrefix is the path under which the certificate endpoint serves
// intermediates by digest: GET /v1/chains/{digest}, with digest the
// lowercase hex SHA-256 of the certificate's DER as ChainHeader gives it.
// It answers 200 with the certificate's PEM (application/x-pem-file) and
// a max-age of a day, the content never changing for a digest; 400 for a
// digest that is not 64 lowercase hex digits; 404 for one the endpoint
// has not seen in a chain it served since it started (the caller asks for
// the certificate again, which makes its intermediates known).
const ChainPathPrefix = "/v1/chains/"

// chainMaxAge is the max-age of an answer of ChainPathPrefix.
const chainMaxAge = 24 * time.Hour

// maxIntermediates bounds the intermediates an endpoint remembers; when
// full it forgets them all and starts over. A CA has a handful.
const maxIntermediates = 4096

// intermediate is one certificate of a chain after the leaf.
type intermediate struct {
	digest string // lowercase hex SHA-256 of the DER
	pem    []byte // the PEM block as stored, ending in a newline
}

// intermediates remembers the intermediates of the chains the endpoint
// served, by their PEM text and by digest, so that an answer does not
// decode and hash them each time and GET /v1/chains/{digest} finds them.
// It is safe for concurrent use.
type intermediates struct {
	mu       sync.RWMutex
	byPEM    map[string]*intermediate
	byDigest map[string]*intermediate
}

// lookup returns the intermediate whose PEM block is block (as stored,
// without the trailing newline), decoding and hashing it when it is new;
// nil when block is not a PEM certificate.
func (c *intermediates) lookup(block []byte) *intermediate {
	c.mu.RLock()
	in := c.byPEM[string(block)]
	c.mu.RUnlock()
	if in != nil {
		return in
	}
	p, rest := pem.Decode(block)
	if p == nil || p.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		return nil
	}
	sum := sha256.Sum256(p.Bytes)
	in = &intermediate{digest: hex.EncodeToString(sum[:]), pem: append(append(make([]byte, 0, len(block)+1), block...), '\n')}
	c.mu.Lock()
	if len(c.byPEM) >= maxIntermediates || c.byPEM == nil {
		c.byPEM = make(map[string]*intermediate)
		c.byDigest = make(map[string]*intermediate)
	}
	c.byPEM[string(block)] = in
	c.byDigest[in.digest] = in
	c.mu.Unlock()
	return in
}

// byDigestPEM returns the PEM of the intermediate with digest d, or nil.
func (c *intermediates) byDigestPEM(d string) []byte {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if in := c.byDigest[d]; in != nil {
		return in.pem
	}
	return nil
}

var pemEnd = []byte("-----END CERTIFICATE-----")

// splitChain splits a PEM chain into the leaf's block and the
// intermediates, each block without its trailing newline. ok is false when
// chain is not a sequence of PEM certificates (then the caller sends the
// first format).
func (c *intermediates) splitChain(chain []byte, chainBuf []*intermediate) (leaf []byte, chain2 []*intermediate, ok bool) {
	rest := bytes.TrimSpace(chain)
	first := true
	for len(rest) > 0 {
		i := bytes.Index(rest, pemEnd)
		if i < 0 {
			return nil, nil, false
		}
		block := rest[:i+len(pemEnd)]
		rest = bytes.TrimLeft(rest[i+len(pemEnd):], " \t\r\n")
		if first {
			if !bytes.HasPrefix(block, []byte("-----BEGIN CERTIFICATE-----")) {
				return nil, nil, false
			}
			leaf, first = block, false
			continue
		}
		in := c.lookup(block)
		if in == nil {
			return nil, nil, false
		}
		chainBuf = append(chainBuf, in)
	}
	if first {
		return nil, nil, false
	}
	return leaf, chainBuf, true
}

// keyDigest returns the lowercase hex SHA-256 of the DER of a PEM private
// key, or "" when keyPEM is not one PEM block.
func keyDigest(keyPEM []byte) string {
	p, _ := pem.Decode(keyPEM)
	if p == nil {
		return ""
	}
	sum := sha256.Sum256(p.Bytes)
	return hex.EncodeToString(sum[:])
}

// wantsLeafFormat tells whether the request asks for LeafFormat.
func wantsLeafFormat(rc *fasthttp.RequestCtx) bool {
	return bytes.Contains(rc.Request.Header.Peek("Accept"), []byte(LeafFormat))
}

// writeLeafFormat writes the body and headers of a LeafFormat answer for
// c, or returns false (having written nothing) when c's chain or key
// cannot be sent in it.
func (e *CertEndpoint) writeLeafFormat(rc *fasthttp.RequestCtx, c *store.Certificate) bool {
	var buf [4]*intermediate
	leaf, chain, ok := e.chains.splitChain(c.ChainPEM, buf[:0])
	if !ok {
		return false
	}
	kd := keyDigest(c.KeyPEM)
	if kd == "" {
		return false
	}
	var hb [4 * 65]byte
	h := hb[:0]
	for i, in := range chain {
		if i > 0 {
			h = append(h, ' ')
		}
		h = append(h, in.digest...)
	}
	rc.SetContentType(LeafFormat)
	rc.Response.Header.SetBytesV(ChainHeader, h)
	rc.Response.Header.Set(KeyHeader, kd)
	rc.Write(leaf)
	rc.WriteString("\n")
	writeLine(rc, c.KeyPEM)
	return true
}

// validDigest tells whether d is 64 lowercase hex digits.
func validDigest(d string) bool {
	if len(d) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(d); i++ {
		if b := d[i]; (b < '0' || b > '9') && (b < 'a' || b > 'f') {
			return false
		}
	}
	return true
}

// handleChain answers GET /v1/chains/{digest}.
func (e *CertEndpoint) handleChain(rc *fasthttp.RequestCtx) {
	d, ok := pathParam(rc, ChainPathPrefix)
	if !ok {
		return
	}
	if !validDigest(d) {
		rc.Error("not a certificate digest (64 lowercase hex digits): "+truncate(d, 80)+"\n", fasthttp.StatusBadRequest)
		return
	}
	p := e.chains.byDigestPEM(d)
	if p == nil {
		rc.Error("no intermediate "+d+" in a chain served since the endpoint started\n", fasthttp.StatusNotFound)
		rc.Response.Header.Set("Cache-Control", "no-store")
		return
	}
	rc.SetStatusCode(fasthttp.StatusOK)
	rc.SetContentType("application/x-pem-file")
	setMaxAge(rc, chainMaxAge)
	rc.SetBody(p)
}

// truncate returns s cut to at most n bytes, marked when cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
