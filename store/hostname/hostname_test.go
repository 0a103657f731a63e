package hostname

import (
	"errors"
	"strings"
	"testing"
)

// label returns a label of n octets.
func label(n int) string { return strings.Repeat("a", n) }

// nameOf returns a name of exactly n octets (n >= 5) made of labels of at
// most 63 octets and ending in ".com".
func nameOf(n int) string {
	var b strings.Builder
	rest := n - len(".com")
	for rest > 0 {
		l := min(rest, 63)
		if b.Len() > 0 {
			b.WriteByte('.')
			rest--
			l = min(rest, 63)
		}
		if l == 0 { // a dot just used the last octet: widen the previous label
			panic("nameOf: unlucky length")
		}
		b.WriteString(label(l))
		rest -= l
	}
	b.WriteString(".com")
	if b.Len() != n {
		panic("nameOf: wrong length")
	}
	return b.String()
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		desc    string
		in      string
		want    string // when accepted
		rule    string // when refused: a substring of Error.Rule
		pattern string // NormalizePattern's result when it differs: "" means same as Normalize, "-" means refused too
	}{
		{desc: "canonical name", in: "example.com", want: "example.com"},
		{desc: "mixed case", in: "WwW.ExAmple.COM", want: "www.example.com"},
		{desc: "trailing dot", in: "example.com.", want: "example.com"},
		{desc: "two trailing dots", in: "example.com..", rule: "empty label"},
		{desc: "only a dot", in: ".", rule: "empty name"},
		{desc: "idn u-label", in: "bücher.example", want: "xn--bcher-kva.example"},
		{desc: "idn uppercase u-label", in: "BÜCHER.example", want: "xn--bcher-kva.example"},
		{desc: "idn a-label", in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
		{desc: "idn a-label uppercase", in: "XN--BCHER-KVA.example", want: "xn--bcher-kva.example"},
		{desc: "idn ideographic full stop", in: "bücher。example", rule: `character U+3002 '。' is mapped to "." by UTS #46: send "xn--bcher-kva.example", the name that would be stored`},
		{desc: "idn eszett non-transitional", in: "straße.de", want: "xn--strae-oqa.de"},
		{desc: "idn fullwidth letters", in: "ｅｘａｍｐｌｅ.com", rule: `character U+FF45 'ｅ' is mapped to "e" by UTS #46: send "example.com", the name that would be stored`},
		{desc: "zero width space", in: "ex\u200bample.com", rule: `character U+200B '\u200b' is removed by UTS #46 mapping: send "example.com", the name that would be stored`},
		{desc: "soft hyphen", in: "bü\u00adcher.example", rule: `character U+00AD '\u00ad' is removed by UTS #46 mapping: send "xn--bcher-kva.example"`},
		{desc: "decomposed u-label", in: "bu\u0308cher.example", rule: `not in Unicode normalization form C: send "xn--bcher-kva.example"`},
		{desc: "compatibility character", in: "ﬁle.example", rule: `character U+FB01 'ﬁ' is mapped to "fi" by UTS #46`},
		{desc: "wildcard fullwidth", in: "*.ｅｘａｍｐｌｅ.com", rule: "wildcard not allowed", pattern: "-"},
		{desc: "idn final dot", in: "bücher.example.", want: "xn--bcher-kva.example"},
		// IDNA2008's code point rules are CheckOrderable's, not Normalize's:
		// a certificate for such a name is still served.
		{desc: "a-label of a symbol", in: "xn--n3h.example.com", want: "xn--n3h.example.com"},
		{desc: "u-label of a symbol", in: "☃.example", want: "xn--n3h.example"},
		{desc: "middle dot between l", in: "l·l.example", want: "xn--ll-0ea.example"},
		{desc: "middle dot out of context", in: "a·l.example", want: "xn--al-0ea.example"},
		{desc: "katakana middle dot with katakana", in: "カ・カ.example", want: "xn--lcka3v.example"},
		{desc: "eszett", in: "ß.de", want: "xn--zca.de"},
		{desc: "a-label not decodable", in: "xn--a.example", rule: "invalid internationalized name"},
		{desc: "a-label of ascii only", in: "xn--abc-.example", rule: "label ends with a hyphen"},
		{desc: "a-label of ascii only inside", in: "xn--abc-def.example", rule: "invalid internationalized name"},
		{desc: "a-label of disallowed u-label", in: "xn--bcher-kva.xn--zz.example", rule: "invalid internationalized name"},
		{desc: "a-label of uppercase u-label", in: "xn--bcher-2pa.example", rule: "invalid internationalized name"},
		{desc: "empty a-label", in: "xn--.example", rule: ""},
		{desc: "hyphens in positions 3 and 4", in: "ab--cd.example", rule: "hyphens in third and fourth positions"},
		{desc: "hyphens elsewhere", in: "a--b.example", want: "a--b.example"},
		{desc: "label of 63 octets", in: label(63) + ".example", want: label(63) + ".example"},
		{desc: "label of 64 octets", in: label(64) + ".example", rule: "label longer than 63 octets"},
		{desc: "name of 253 octets", in: nameOf(253), want: nameOf(253)},
		{desc: "name of 253 octets with trailing dot", in: nameOf(253) + ".", want: nameOf(253)},
		{desc: "name of 254 octets", in: nameOf(254), rule: "name longer than 253 octets"},
		{desc: "underscore", in: "_acme-challenge.example.com", rule: "underscore not allowed"},
		{desc: "underscore inside", in: "a_b.example.com", rule: "underscore not allowed"},
		{desc: "ipv4", in: "192.0.2.1", rule: "ip address"},
		{desc: "ipv4 trailing dot", in: "192.0.2.1.", rule: "ip address"},
		{desc: "ipv6", in: "2001:db8::1", rule: "ip address"},
		{desc: "ipv6 loopback", in: "::1", rule: "ip address"},
		{desc: "ipv6 bracketed", in: "[::1]", rule: "ip address"},
		{desc: "ipv6 bracketed full", in: "[2001:db8::1]", rule: "ip address"},
		{desc: "host with port", in: "example.com:443", rule: "invalid character ':'"},
		{desc: "numeric top-level label", in: "example.123", rule: "top-level label is all digits"},
		{desc: "numeric other labels", in: "123.456.example", want: "123.456.example"},
		{desc: "empty", in: "", rule: "empty name"},
		{desc: "single label", in: "localhost", rule: "fewer than two labels"},
		{desc: "wildcard", in: "*.example.com", rule: "wildcard not allowed", pattern: "*.example.com"},
		{desc: "wildcard mixed case trailing dot", in: "*.EXAMPLE.com.", rule: "wildcard not allowed", pattern: "*.example.com"},
		{desc: "wildcard idn", in: "*.Bücher.example", rule: "wildcard not allowed", pattern: "*.xn--bcher-kva.example"},
		{desc: "wildcard alone", in: "*", rule: "wildcard without a name", pattern: "-"},
		{desc: "wildcard and dot", in: "*.", rule: "wildcard", pattern: "-"},
		{desc: "wildcard over tld", in: "*.com", rule: "wildcard", pattern: "-"},
		{desc: "wildcard deeper", in: "a.*.example.com", rule: "must be the whole first label", pattern: "-"},
		{desc: "wildcard partial label", in: "*a.example.com", rule: "must be the whole first label", pattern: "-"},
		{desc: "two wildcards", in: "*.*.example.com", rule: "must be the whole first label", pattern: "-"},
		{desc: "wildcard 253 octets", in: "*." + nameOf(251), rule: "wildcard", pattern: "*." + nameOf(251)},
		{desc: "wildcard 254 octets", in: "*." + nameOf(252), rule: "wildcard", pattern: "-"},
		{desc: "leading hyphen", in: "-a.example", rule: "label starts with a hyphen"},
		{desc: "trailing hyphen", in: "a-.example", rule: "label ends with a hyphen"},
		{desc: "double dot", in: "a..example.com", rule: "empty label"},
		{desc: "leading dot", in: ".example.com", rule: "empty label"},
		{desc: "space inside", in: "exa mple.com", rule: "invalid character ' '"},
		{desc: "leading space", in: " example.com", rule: "invalid character ' '"},
		{desc: "trailing space", in: "example.com ", rule: "invalid character ' '"},
		{desc: "space in idn", in: "bü cher.example", rule: "invalid character ' '"},
		{desc: "slash", in: "example.com/x", rule: "invalid character '/'"},
		{desc: "nul", in: "exa\x00mple.com", rule: `invalid character '\x00'`},
		{desc: "invalid utf-8", in: "exa\xffmple.com", rule: "invalid internationalized name"},
		{desc: "zero width joiner out of context", in: "a\u200db.example", rule: "invalid internationalized name"},
		{desc: "unassigned code point", in: "\u0378x.example", rule: "invalid internationalized name"},
		{desc: "bidi rule across labels", in: "xn--mgbh0fb.1a", rule: "invalid internationalized name"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			got, err := Normalize(tt.in)
			checkResult(t, "Normalize", tt.in, got, err, tt.want, tt.rule)
			switch tt.pattern {
			case "":
				got, err = NormalizePattern(tt.in)
				checkResult(t, "NormalizePattern", tt.in, got, err, tt.want, tt.rule)
			case "-":
				got, err = NormalizePattern(tt.in)
				if err == nil {
					t.Errorf("NormalizePattern(%q) = %q, want an error", tt.in, got)
				}
			default:
				got, err = NormalizePattern(tt.in)
				checkResult(t, "NormalizePattern", tt.in, got, err, tt.pattern, "")
			}
		})
	}
}

// TestCheckOrderable holds the names an order may hold to IDNA2008
// (RFC 5892), which Normalize does not check.
func TestCheckOrderable(t *testing.T) {
	tests := []struct {
		desc string
		in   string // given to Normalize, which must accept it
		rule string // "" when the name can be ordered
	}{
		{desc: "ascii", in: "www.example.com"},
		{desc: "wildcard", in: "*.example.com"},
		{desc: "a-label", in: "xn--bcher-kva.example"},
		{desc: "wildcard over a-label", in: "*.xn--bcher-kva.example"},
		{desc: "eszett", in: "ß.de"},
		{desc: "middle dot between l", in: "l·l.example"},
		{desc: "katakana middle dot with katakana", in: "カ・カ.example"},
		{desc: "a-label of a symbol", in: "xn--n3h.example.com", rule: `label "xn--n3h" ("☃"): U+2603 '☃' is DISALLOWED in IDNA2008 (RFC 5892)`},
		{desc: "wildcard over a symbol", in: "*.xn--n3h.example.com", rule: `label "xn--n3h" ("☃"): U+2603 '☃' is DISALLOWED in IDNA2008 (RFC 5892)`},
		{desc: "u-label of a symbol", in: "☃.example", rule: `label "xn--n3h" ("☃"): U+2603 '☃' is DISALLOWED in IDNA2008 (RFC 5892)`},
		{desc: "emoji", in: "xn--i-7iq.example", rule: "DISALLOWED in IDNA2008"},
		{desc: "arabic tatweel exception", in: "\u0628\u0640\u0628.example", rule: "U+0640 'ـ' is DISALLOWED in IDNA2008"},
		{desc: "old hangul jamo", in: "a\u11a8.example", rule: "U+11A8 'ᆨ' is DISALLOWED in IDNA2008"},
		{desc: "middle dot out of context", in: "a·l.example", rule: `U+00B7 '·' is CONTEXTO in IDNA2008 and must stand between two 'l'`},
		{desc: "katakana middle dot alone", in: "a・b.example", rule: "needs a Hiragana, Katakana or Han character"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			n, err := NormalizePattern(tt.in)
			if err != nil {
				t.Fatalf("NormalizePattern(%q): %v", tt.in, err)
			}
			err = CheckOrderable(n)
			if tt.rule == "" {
				if err != nil {
					t.Errorf("CheckOrderable(%q) = %v, want nil", n, err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Input != n || !strings.Contains(e.Rule, tt.rule) {
				t.Errorf("CheckOrderable(%q) = %#v, want an *Error for %q with a rule containing %q", n, err, n, tt.rule)
			}
		})
	}
}

func TestCheckOrderableDoesNotAllocateForASCIINames(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		if err := CheckOrderable("www.example.com"); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("CheckOrderable of an ASCII name allocates %v times", allocs)
	}
}

// checkResult compares one result of Normalize or NormalizePattern.
func checkResult(t *testing.T, fn, in, got string, err error, want, rule string) {
	t.Helper()
	if want != "" {
		if err != nil || got != want {
			t.Errorf("%s(%q) = %q, %v; want %q", fn, in, got, err, want)
		}
		return
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%s(%q) = %q, %v; want an *Error", fn, in, got, err)
	}
	if got != "" {
		t.Errorf("%s(%q) returned %q with an error", fn, in, got)
	}
	if e.Input != in {
		t.Errorf("%s(%q): Error.Input = %q", fn, in, e.Input)
	}
	if !strings.Contains(e.Rule, rule) || e.Rule == "" {
		t.Errorf("%s(%q): Error.Rule = %q, want it to contain %q", fn, in, e.Rule, rule)
	}
	if r := e.Rule; r[0] < 'a' || r[0] > 'z' || strings.ContainsAny(r[len(r)-1:], ".!:;") {
		t.Errorf("%s(%q): Error.Rule %q does not start lowercase or ends in punctuation", fn, in, e.Rule)
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		desc string
		in   string
		want string
	}{
		{desc: "empty label", in: "EXAMPLE..com", want: `invalid name "EXAMPLE..com": empty label`},
		{desc: "ip address", in: "[::1]", want: `invalid name "[::1]": ip address, not a host name`},
		{desc: "control character quoted", in: "a\nb.com", want: `invalid name "a\nb.com": invalid character '\n'`},
		{desc: "long input cut", in: strings.Repeat("a", 1000) + "_", want: `invalid name "` + strings.Repeat("a", 256) + `"... (1001 bytes): underscore not allowed`},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := Normalize(tt.in)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Normalize(%q) error = %v, want %s", tt.in, err, tt.want)
			}
		})
	}
}

func TestNormalizeDoesNotAllocateForCanonicalNames(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := Normalize("www.example.com"); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Normalize of a canonical name allocates %v times", allocs)
	}
}

func TestIsWildcard(t *testing.T) {
	tests := []struct {
		desc string
		in   string
		want bool
	}{
		{desc: "wildcard", in: "*.example.com", want: true},
		{desc: "host name", in: "a.example.com", want: false},
		{desc: "star alone", in: "*", want: false},
		{desc: "star dot", in: "*.", want: false},
		{desc: "empty", in: "", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if got := IsWildcard(tt.in); got != tt.want {
				t.Errorf("IsWildcard(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestWildcardFor(t *testing.T) {
	tests := []struct {
		desc   string
		in     string
		want   string
		wantOK bool
	}{
		{desc: "three labels", in: "a.example.com", want: "*.example.com", wantOK: true},
		{desc: "four labels", in: "b.a.example.com", want: "*.a.example.com", wantOK: true},
		{desc: "idn", in: "www.xn--bcher-kva.example", want: "*.xn--bcher-kva.example", wantOK: true},
		{desc: "registered domain", in: "example.com", wantOK: false},
		{desc: "single label", in: "com", wantOK: false},
		{desc: "empty", in: "", wantOK: false},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			got, ok := WildcardFor(tt.in)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("WildcardFor(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
			if ok {
				if p, err := NormalizePattern(got); err != nil || p != got {
					t.Errorf("WildcardFor(%q) = %q, which NormalizePattern turns into %q, %v", tt.in, got, p, err)
				}
			}
		})
	}
}
