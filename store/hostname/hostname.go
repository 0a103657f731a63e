// Package hostname normalizes and validates the DNS names certserver handles,
// once, at the edge: the certificate endpoint, the admin API, the CLI and the
// importer call it, and everything past them compares names byte for byte.
package hostname

// Error reports a name that is not acceptable, naming the input and the rule
// it breaks. Its message reads: `invalid name "EXAMPLE..com": empty label`.
type Error struct {
	Input string // the name as given
	Rule  string // the rule it breaks, lowercase, no trailing punctuation
}

func (e *Error) Error() string { return "invalid name " + quote(e.Input) + ": " + e.Rule }

// Normalize returns the canonical form of a host name: ASCII lowercase, one
// trailing dot removed, internationalized labels converted to A-labels
// (IDNA 2008, RFC 5891), at most 253 octets with labels of 1 to 63 octets of
// letters, digits and hyphens (RFC 1035 section 2.3.1, RFC 1123 section 2.1),
// at least two labels, and a top-level label that is not all digits.
// IP literals (IPv4, IPv6 with or without brackets), empty names, wildcards
// and names with underscores are refused with an *Error.
//
// Normalize is idempotent: Normalize(Normalize(s)) == Normalize(s) for every
// accepted s.
func Normalize(s string) (string, error) { panic("TODO: store owner") }

// NormalizePattern is Normalize that also accepts a wildcard pattern: "*."
// followed by a name of at least two labels ("*.example.com"; not "*", not
// "*.com", not "a.*.example.com", not "*a.example.com").
func NormalizePattern(s string) (string, error) { panic("TODO: store owner") }

// IsWildcard reports whether a normalized pattern is a wildcard ("*.…").
func IsWildcard(name string) bool { return len(name) > 2 && name[0] == '*' && name[1] == '.' }

// WildcardFor returns the wildcard pattern that covers a normalized host name
// one label up ("a.example.com" -> "*.example.com") and true, or "" and false
// when that pattern would cover a top-level domain ("example.com" -> none).
func WildcardFor(name string) (string, bool) { panic("TODO: store owner") }

func quote(s string) string { panic("TODO: store owner") }
