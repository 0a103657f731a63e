package hostname

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"unicode"

	"golang.org/x/net/idna"
)

// FuzzNormalize checks that Normalize and NormalizePattern are idempotent,
// that what they accept obeys the rules (checked by validName, written apart
// from the implementation), and that what they refuse is an *Error naming
// the input.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		"example.com", "WWW.Example.COM.", "bücher.example", "xn--bcher-kva.example",
		"*.example.com", "*", "*.com", "a.*.example.com", "*a.example.com", "-a.example",
		"a..b", " example.com", "_dmarc.example.com", "192.0.2.1", "[::1]", "2001:db8::1",
		"straße.de", "ｅｘａｍｐｌｅ.com", "bücher。example", "xn--ls8h.example",
		"ab--cd.example", "example.123", "a\u200db.example", "xn--mgbh0fb.1a",
		label(63) + ".example", label(64) + ".example", nameOf(253), nameOf(254),
		"", ".", "..", "*.", "*..", "xn--.example", "\xff.example",
		"xn--n3h.example.com", "ex\u200bample.com", "l·l.example", "a·l.example", "bu\u0308cher.example",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, pattern := range []bool{false, true} {
			fn, normalize := "Normalize", Normalize
			if pattern {
				fn, normalize = "NormalizePattern", NormalizePattern
			}
			got, err := normalize(s)
			if err != nil {
				var e *Error
				if !errors.As(err, &e) || e.Input != s || e.Rule == "" {
					t.Fatalf("%s(%q) error %#v is not an *Error naming the input and a rule", fn, s, err)
				}
				if got != "" {
					t.Fatalf("%s(%q) returned %q with an error", fn, s, got)
				}
				continue
			}
			if err := validName(got, pattern, CheckOrderable(got) == nil); err != nil {
				t.Fatalf("%s(%q) = %q, which breaks a rule: %v", fn, s, got, err)
			}
			again, err := normalize(got)
			if err != nil || again != got {
				t.Fatalf("%s(%q) = %q, but %s(%q) = %q, %v", fn, s, got, fn, got, again, err)
			}
			if !pattern {
				if p, err := NormalizePattern(s); err != nil || p != got {
					t.Fatalf("Normalize(%q) = %q, but NormalizePattern = %q, %v", s, got, p, err)
				}
			}
		}
	})
}

// validName reports the first rule a normalized name breaks, or nil; with
// orderable, also IDNA2008's code point rules (what CheckOrderable adds).
// It is deliberately written without the package's helpers.
func validName(name string, pattern, orderable bool) error {
	if len(name) == 0 || len(name) > 253 {
		return fmt.Errorf("length %d", len(name))
	}
	if net.ParseIP(name) != nil {
		return errors.New("ip address")
	}
	labels := strings.Split(name, ".")
	if labels[0] == "*" {
		if !pattern {
			return errors.New("wildcard from Normalize")
		}
		labels = labels[1:]
	}
	if len(labels) < 2 {
		return errors.New("fewer than two labels")
	}
	for _, l := range labels {
		if len(l) < 1 || len(l) > 63 {
			return fmt.Errorf("label %q has length %d", l, len(l))
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("label %q holds %q", l, r)
			}
		}
		if strings.HasPrefix(l, "-") || strings.HasSuffix(l, "-") {
			return fmt.Errorf("label %q starts or ends with a hyphen", l)
		}
		if len(l) >= 4 && l[2:4] == "--" {
			if !strings.HasPrefix(l, "xn--") {
				return fmt.Errorf("label %q has hyphens in positions 3 and 4", l)
			}
			u, err := idna.Lookup.ToUnicode(l)
			if err != nil {
				return fmt.Errorf("a-label %q does not decode: %v", l, err)
			}
			if a, err := idna.Lookup.ToASCII(u); err != nil || a != l {
				return fmt.Errorf("a-label %q decodes to %q, which encodes to %q, %v", l, u, a, err)
			}
			// IDNA2008 (RFC 5892) takes letters, marks and digits: no
			// symbol, space, control, private use or capital letter.
			// Normalize leaves that to CheckOrderable.
			for _, r := range u {
				if !orderable {
					break
				}
				if r == 0x200c || r == 0x200d {
					continue
				}
				if unicode.In(r, unicode.S, unicode.Z, unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs, unicode.Lt) || unicode.IsUpper(r) {
					return fmt.Errorf("a-label %q decodes to %q, which holds U+%04X, disallowed in IDNA2008", l, u, r)
				}
			}
		}
	}
	tld := labels[len(labels)-1]
	if strings.Trim(tld, "0123456789") == "" {
		return fmt.Errorf("top-level label %q is all digits", tld)
	}
	return nil
}
