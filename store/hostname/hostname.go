// Package hostname normalizes and validates the DNS names certserver handles,
// once, at the edge: the certificate endpoint, the admin API, the CLI and the
// importer call it, and everything past them compares names byte for byte.
package hostname

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// Error reports a name that is not acceptable, naming the input and the rule
// it breaks. Its message reads: `invalid name "EXAMPLE..com": empty label`.
type Error struct {
	Input string // the name as given
	Rule  string // the rule it breaks, lowercase, no trailing punctuation
}

func (e *Error) Error() string { return "invalid name " + quote(e.Input) + ": " + e.Rule }

// Limits on names from RFC 1035 section 2.3.4 (as octets of the text form,
// without the trailing dot).
const (
	maxLabel = 63
	maxName  = 253
)

// aceProfile converts internationalized names to A-labels and validates
// A-labels. It is spelled out rather than taken from idna.Lookup, whose
// configuration may change between releases: stored names are compared byte
// for byte, so the mapping must not drift. It is UTS #46 lookup mapping
// (case folding, width and compatibility mappings, NFC), non-transitional
// as IDNA 2008 requires ("ß" stays "ß"), STD3 ASCII rules, the hyphen and
// joiner rules of RFC 5891 section 5.4 and the Bidi rule of RFC 5893.
// A Profile is immutable and safe for concurrent use.
var aceProfile = idna.New(
	idna.MapForLookup(),
	idna.Transitional(false),
	idna.StrictDomainName(true),
	idna.ValidateLabels(true),
	idna.CheckHyphens(true),
	idna.CheckJoiners(true),
	idna.BidiRule(),
)

// Normalize returns the canonical form of a host name: ASCII lowercase, one
// trailing dot removed, internationalized labels converted to A-labels
// (RFC 5891 section 4.4, with the UTS #46 tables), at most 253 octets with labels of 1 to 63 octets of
// letters, digits and hyphens (RFC 1035 section 2.3.1, RFC 1123 section 2.1),
// at least two labels, and a top-level label that is not all digits.
// IP literals (IPv4, IPv6 with or without brackets), empty names, wildcards
// and names with underscores are refused with an *Error.
//
// Normalize is the syntax rule for every name certserver looks up or
// serves: SNI names, the SANs of stored and imported certificates, the
// names of admin routes that look a record up. It does not apply the code
// point rules of IDNA2008 (RFC 5892), which CAs apply before they issue:
// a certificate issued for such a name before they did is still served.
// A name that is about to be ordered is also held to CheckOrderable.
//
// Normalize is idempotent: Normalize(Normalize(s)) == Normalize(s) for every
// accepted s. It is safe for concurrent use and does not allocate for a name
// that is already in canonical form.
func Normalize(s string) (string, error) { return normalize(s, false) }

// NormalizePattern is Normalize that also accepts a wildcard pattern: "*."
// followed by a name of at least two labels ("*.example.com"; not "*", not
// "*.com", not "a.*.example.com", not "*a.example.com").
func NormalizePattern(s string) (string, error) { return normalize(s, true) }

// CheckOrderable returns nil when name, a result of Normalize or
// NormalizePattern, is one a CA can issue for, else an *Error naming the
// label and the code point: every A-label must decode to a U-label whose
// code points are PVALID, or CONTEXTO in their context, in IDNA2008
// (RFC 5892). It is applied only where a name enters the set of names to
// order (the admin API's add, on-demand issuance), never to lookups, so
// that a stored certificate for a name that breaks it keeps being served.
// A wildcard must also stand above a registrable name: "*.co.uk" and
// "*.github.io" are refused ("wildcard over a public suffix"), by the
// Public Suffix List, its private part too, as CAs refuse them (Let's
// Encrypt's policy; CA/Browser Forum Baseline Requirements 3.2.2.6).
// It is safe for concurrent use and does not allocate for an ASCII name
// that is not a wildcard.
func CheckOrderable(name string) error {
	base, wild := strings.CutPrefix(name, "*.")
	if rule := checkALabels(base); rule != "" {
		return &Error{Input: name, Rule: rule}
	}
	if wild {
		if suffix, _ := publicsuffix.PublicSuffix(base); suffix == base {
			return &Error{Input: name, Rule: "wildcard over a public suffix (" + base + "): a CA issues wildcards only below a registrable domain"}
		}
	}
	return nil
}

// IsWildcard reports whether a normalized pattern is a wildcard ("*.…").
func IsWildcard(name string) bool { return len(name) > 2 && name[0] == '*' && name[1] == '.' }

// WildcardFor returns the wildcard pattern that covers a normalized host name
// one label up ("a.example.com" -> "*.example.com") and true, or "" and false
// when that pattern would cover a top-level domain ("example.com" -> none).
func WildcardFor(name string) (string, bool) {
	i := strings.IndexByte(name, '.')
	if i < 0 {
		return "", false
	}
	parent := name[i+1:]
	if strings.IndexByte(parent, '.') < 0 {
		return "", false
	}
	return "*." + parent, true
}

// normalize implements Normalize and, with pattern set, NormalizePattern.
func normalize(s string, pattern bool) (string, error) {
	fail := func(rule string) (string, error) { return "", &Error{Input: s, Rule: rule} }
	if s == "" {
		return fail("empty name")
	}
	if isIP(s) {
		return fail("ip address, not a host name")
	}
	if rule := checkASCIIChars(s); rule != "" {
		return fail(rule)
	}

	name, wild, mapped := s, false, false
	if strings.HasPrefix(name, "*.") {
		wild, name = true, name[2:]
	}
	if strings.IndexByte(name, '*') >= 0 {
		if s == "*" {
			return fail("wildcard without a name")
		}
		return fail(`wildcard "*" must be the whole first label`)
	}
	if wild && !pattern {
		return fail("wildcard not allowed")
	}

	if !isASCII(name) {
		a, err := aceProfile.ToASCII(name)
		if err != nil {
			return fail("invalid internationalized name: " + strings.TrimPrefix(err.Error(), "idna: "))
		}
		name, mapped = a, true
	}
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		if wild {
			return fail("wildcard without a name")
		}
		return fail("empty name")
	}
	name = lowerASCII(name)

	labels, ace, rule := checkLabels(name)
	if rule != "" {
		return fail(rule)
	}
	if labels < 2 {
		if wild {
			return fail("wildcard covers a top-level domain")
		}
		return fail("fewer than two labels")
	}
	if ace {
		// Every A-label must decode to a valid U-label that encodes back to
		// the same A-label, and the name as a whole must satisfy the Bidi
		// rule: converting it again must change nothing.
		if a, err := aceProfile.ToASCII(name); err != nil {
			return fail("invalid internationalized name: " + strings.TrimPrefix(err.Error(), "idna: "))
		} else if a != name {
			return fail("a-label is not in canonical form")
		}
	}
	if mapped {
		in := s
		if wild {
			in = s[2:]
		}
		if rule := mappingRule(in, name); rule != "" {
			return fail(rule)
		}
	}
	if wild {
		name = "*." + name
	}
	if len(name) > maxName {
		return fail("name longer than 253 octets")
	}
	return name, nil
}

// isIP reports whether s is an IPv4 or IPv6 address, optionally in brackets
// or followed by one dot. It only parses what could be an address.
func isIP(s string) bool {
	if strings.IndexByte(s, ':') < 0 && strings.Trim(s, "0123456789.") != "" {
		return false
	}
	s = strings.TrimSuffix(s, ".")
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		s = s[1 : len(s)-1]
	}
	_, err := netip.ParseAddr(s)
	return err == nil
}

// checkASCIIChars returns the rule broken by the first ASCII character of s
// that can appear in no name or pattern, or "". Non-ASCII characters are left
// to the IDNA mapping.
func checkASCIIChars(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '*', c >= 0x80:
		case c == '_':
			return "underscore not allowed"
		default:
			return "invalid character " + strconv.QuoteRune(rune(c))
		}
	}
	return ""
}

// checkLabels checks the labels of a lowercase ASCII name without a trailing
// dot. It returns how many labels there are, whether any is an A-label
// ("xn--…"), and the first rule broken ("" when none).
func checkLabels(name string) (labels int, ace bool, rule string) {
	for rest := name; ; {
		label, tail, more := strings.Cut(rest, ".")
		labels++
		switch {
		case label == "":
			return labels, ace, "empty label"
		case len(label) > maxLabel:
			return labels, ace, "label longer than 63 octets"
		case label[0] == '-':
			return labels, ace, "label starts with a hyphen"
		case label[len(label)-1] == '-':
			return labels, ace, "label ends with a hyphen"
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return labels, ace, "invalid character " + strconv.QuoteRune(rune(c))
			}
		}
		if len(label) >= 4 && label[2] == '-' && label[3] == '-' {
			if !strings.HasPrefix(label, "xn--") {
				return labels, ace, "hyphens in third and fourth positions of a label not starting with \"xn--\""
			}
			ace = true
		}
		if !more {
			if strings.Trim(label, "0123456789") == "" {
				return labels, ace, "top-level label is all digits"
			}
			return labels, ace, ""
		}
		rest = tail
	}
}

// isASCII reports whether s holds only ASCII characters.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// lowerASCII returns s with ASCII letters lowercased, s itself when there is
// nothing to change.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// maxQuoted bounds how much of an input an error message repeats, so that
// hostile input cannot flood a log line.
const maxQuoted = 256

// quote returns s as a Go string literal, cut after maxQuoted bytes.
func quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:maxQuoted]) + fmt.Sprintf("... (%d bytes)", len(s))
}
