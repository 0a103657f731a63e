// Package dnszone is certserver's own delegated DNS zone for DNS-01
// challenges (RFC 8555 section 8.4), a better acme-dns: a customer creates
// one record once,
//
//	_acme-challenge.shop.example. CNAME <label>.acme.hoster.example.
//
// and certserver answers the TXT query for <label>.acme.hoster.example
// authoritatively, with every value of every order in flight for the name
// at once (the wildcard and the apex of one order validate together, two
// values under one label).
//
// The parts:
//
//   - Zone (this file): the zone's name and the label of each managed name.
//   - Server (server.go, answer.go): the authoritative server, miekg/dns
//     over UDP and TCP.
//   - Provider (provider.go): lego's challenge.Provider that writes the TXT
//     values as store challenge records and removes them.
//   - renewer.Preflight.CheckZoneCNAME: the pre-flight check that the customer's
//     CNAME is in place, naming the record to create when it is not.
//
// The values live in the store's challenge records (store.PutChallenge),
// under the token "dns-01:<label>:<value>", so that every host of a fleet
// answers them from its copy; the server reads them with
// store.ChallengeLister.
package dnszone

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strings"

	"github.com/certserver/certserver/store/hostname"
	"github.com/miekg/dns"
)

// LabelLen is the length of a label: 16 base32 characters, the first 80
// bits of a SHA-256 digest.
const LabelLen = 16

// labelEncoding is base32 (RFC 4648 section 6) in lowercase, without
// padding: letters and the digits 2-7, one DNS label.
var labelEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Label returns the label under which the zone answers the DNS-01
// challenges of name, a normalized host name or wildcard
// (hostname.NormalizePattern): the first 80 bits of the SHA-256 digest of
// the name without its "*." (a wildcard and its apex validate at the same
// _acme-challenge node, RFC 8555 section 8.4), base32 in lowercase without
// padding, 16 characters. It is stable: the same name has the same label
// on every host and after every restart, so the customer's CNAME never
// changes.
func Label(name string) string {
	sum := sha256.Sum256([]byte(strings.TrimPrefix(name, "*.")))
	return labelEncoding.EncodeToString(sum[:10])
}

// isLabel reports whether s could be a Label (of any name).
func isLabel(s string) bool {
	if len(s) != LabelLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '2' <= c && c <= '7') {
			return false
		}
	}
	return true
}

// Zone is the delegated zone: its name, and the records customers point
// at it. The zero value is not usable; make one with NewZone.
type Zone struct {
	name string // lowercase, without the final dot
}

// NewZone returns the Zone named name ("acme.hoster.example"), which must
// be a host name of at least two labels, not a wildcard, and short enough
// that a label and the zone make a valid name.
func NewZone(name string) (Zone, error) {
	n, err := hostname.Normalize(strings.TrimSuffix(name, "."))
	if err != nil {
		return Zone{}, fmt.Errorf("dns01 zone name %q: %w", name, err)
	}
	if !strings.Contains(n, ".") {
		return Zone{}, fmt.Errorf("dns01 zone name %q: want a name delegated from a parent zone, like acme.hoster.example", name)
	}
	if len(n)+1+LabelLen+1 > 253 {
		return Zone{}, fmt.Errorf("dns01 zone name %q: too long for a %d-character label under it", name, LabelLen)
	}
	return Zone{name: n}, nil
}

// Name returns the zone's name, lowercase, without the final dot.
func (z Zone) Name() string { return z.name }

// Target returns where the _acme-challenge CNAME of name must point:
// "<label>.<zone>", without the final dot.
func (z Zone) Target(name string) string { return Label(name) + "." + z.name }

// ChallengeName returns the name the CA asks for the TXT records of name
// (a host name or wildcard): "_acme-challenge.<name without *.>"
// (RFC 8555 section 8.4).
func ChallengeName(name string) string { return "_acme-challenge." + strings.TrimPrefix(name, "*.") }

// Record returns the record the customer creates once for name, in zone
// file form: "_acme-challenge.shop.example. CNAME <label>.acme.hoster.example.".
// The same record serves the name, its wildcard and both in one order.
func (z Zone) Record(name string) string {
	return dns.Fqdn(ChallengeName(name)) + " CNAME " + dns.Fqdn(z.Target(name))
}
