package hostname

import (
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/net/idna"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// property is a code point's derived property in IDNA2008 (RFC 5892
// section 2): whether it may appear in a U-label.
type property int

const (
	pvalid     property = iota // allowed anywhere in a label
	contextJ                   // a joiner, allowed only in context (RFC 5892 appendix A.1, A.2)
	contextO                   // allowed only in context (RFC 5892 appendix A.3 to A.9)
	disallowed                 // never allowed
	unassigned                 // not assigned in this Unicode version: never allowed yet
)

// String names p as RFC 5892 does.
func (p property) String() string {
	return [...]string{"PVALID", "CONTEXTJ", "CONTEXTO", "DISALLOWED", "UNASSIGNED"}[p]
}

// derivedProperty computes the IDNA2008 property of r with the algorithm
// of RFC 5892 section 3, over the Unicode tables of the Go release
// (unicode.Version). The UTS #46 tables golang.org/x/net/idna validates
// with are wider: they also take symbols such as U+2603 SNOWMAN, which
// IDNA2008 disallows and CAs refuse.
func derivedProperty(r rune) property {
	switch {
	case r < 0x80:
		// LDH (section 2.5); other ASCII is refused before this is asked.
		if 'a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '-' {
			return pvalid
		}
		return disallowed
	}
	if p, ok := exceptions[r]; ok { // section 2.6
		return p
	}
	switch {
	case !assigned(r): // section 2.10
		return unassigned
	case r == 0x200c || r == 0x200d: // JoinControl, section 2.8
		return contextJ
	case unstable(r), // section 2.2
		unicode.In(r, unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector, unicode.Cf,
			unicode.White_Space, unicode.Noncharacter_Code_Point), // IgnorableProperties, section 2.3
		inRanges(r, ignorableBlocks), // section 2.4
		inRanges(r, oldHangulJamo):   // section 2.9
		return disallowed
	case unicode.In(r, unicode.Ll, unicode.Lu, unicode.Lo, unicode.Nd, unicode.Lm, unicode.Mn, unicode.Mc): // LetterDigits, section 2.1
		return pvalid
	}
	return disallowed
}

// exceptions are the code points of RFC 5892 section 2.6, whose property
// is set by hand.
var exceptions = map[rune]property{
	0x00df: pvalid, 0x03c2: pvalid, 0x06fd: pvalid, 0x06fe: pvalid, 0x0f0b: pvalid, 0x3007: pvalid,
	0x00b7: contextO, 0x0375: contextO, 0x05f3: contextO, 0x05f4: contextO, 0x30fb: contextO,
	0x0660: contextO, 0x0661: contextO, 0x0662: contextO, 0x0663: contextO, 0x0664: contextO,
	0x0665: contextO, 0x0666: contextO, 0x0667: contextO, 0x0668: contextO, 0x0669: contextO,
	0x06f0: contextO, 0x06f1: contextO, 0x06f2: contextO, 0x06f3: contextO, 0x06f4: contextO,
	0x06f5: contextO, 0x06f6: contextO, 0x06f7: contextO, 0x06f8: contextO, 0x06f9: contextO,
	0x0640: disallowed, 0x07fa: disallowed, 0x302e: disallowed, 0x302f: disallowed,
	0x3031: disallowed, 0x3032: disallowed, 0x3033: disallowed, 0x3034: disallowed, 0x3035: disallowed, 0x303b: disallowed,
}

// ignorableBlocks are the blocks of RFC 5892 section 2.4: Combining
// Diacritical Marks for Symbols, Musical Symbols, Ancient Greek Musical
// Notation.
var ignorableBlocks = [][2]rune{{0x20d0, 0x20ff}, {0x1d100, 0x1d1ff}, {0x1d200, 0x1d24f}}

// oldHangulJamo are the code points with Hangul_Syllable_Type L, V or T
// (RFC 5892 section 2.9).
var oldHangulJamo = [][2]rune{{0x1100, 0x11ff}, {0xa960, 0xa97c}, {0xd7b0, 0xd7c6}, {0xd7cb, 0xd7fb}}

func inRanges(r rune, ranges [][2]rune) bool {
	for _, rg := range ranges {
		if rg[0] <= r && r <= rg[1] {
			return true
		}
	}
	return false
}

// assigned reports whether r has a general category other than Cn
// (unassigned), or is a noncharacter, which RFC 5892 section 2.10 counts
// as assigned. The categories are listed one by one: unicode.C holds
// unassigned code points too.
func assigned(r rune) bool {
	return unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z,
		unicode.Cc, unicode.Cf, unicode.Co, unicode.Cs, unicode.Noncharacter_Code_Point)
}

// unstable reports whether r changes under NFKC, case folding and NFKC
// again (RFC 5892 section 2.2).
func unstable(r rune) bool {
	s := string(r)
	return norm.NFKC.String(cases.Fold().String(norm.NFKC.String(s))) != s
}

// checkULabel returns the first IDNA2008 rule the U-label u breaks, or "":
// every code point must be PVALID, or CONTEXTO with its context rule
// satisfied (RFC 5892 appendix A.3 to A.9). CONTEXTJ code points are
// checked by aceProfile (CheckJoiners); here they pass.
func checkULabel(u string) string {
	runes := []rune(u)
	for i, r := range runes {
		p := derivedProperty(r)
		switch p {
		case pvalid, contextJ:
			continue
		case contextO:
			if rule := contextRule(runes, i); rule != "" {
				return fmt.Sprintf("%s is CONTEXTO in IDNA2008 and %s (RFC 5892 appendix A)", codePoint(r), rule)
			}
			continue
		case unassigned:
			return fmt.Sprintf("%s is UNASSIGNED in IDNA2008 (RFC 5892, Unicode %s)", codePoint(r), unicode.Version)
		}
		return fmt.Sprintf("%s is %s in IDNA2008 (RFC 5892)", codePoint(r), p)
	}
	return ""
}

// contextRule checks the CONTEXTO rule of runes[i] and returns how it is
// broken, or "".
func contextRule(runes []rune, i int) string {
	r := runes[i]
	before := func() rune {
		if i > 0 {
			return runes[i-1]
		}
		return -1
	}
	after := func() rune {
		if i+1 < len(runes) {
			return runes[i+1]
		}
		return -1
	}
	anyOf := func(match func(rune) bool) bool {
		for _, c := range runes {
			if match(c) {
				return true
			}
		}
		return false
	}
	switch {
	case r == 0x00b7: // A.3 MIDDLE DOT
		if before() != 'l' || after() != 'l' {
			return "must stand between two 'l'"
		}
	case r == 0x0375: // A.4 GREEK LOWER NUMERAL SIGN
		if !unicode.Is(unicode.Greek, after()) {
			return "must be followed by a Greek letter"
		}
	case r == 0x05f3 || r == 0x05f4: // A.5, A.6 HEBREW GERESH, GERSHAYIM
		if !unicode.Is(unicode.Hebrew, before()) {
			return "must follow a Hebrew letter"
		}
	case r == 0x30fb: // A.7 KATAKANA MIDDLE DOT
		if !anyOf(func(c rune) bool {
			return c != 0x30fb && unicode.In(c, unicode.Hiragana, unicode.Katakana, unicode.Han)
		}) {
			return "needs a Hiragana, Katakana or Han character in its label"
		}
	case 0x0660 <= r && r <= 0x0669: // A.8 ARABIC-INDIC DIGITS
		if anyOf(func(c rune) bool { return 0x06f0 <= c && c <= 0x06f9 }) {
			return "cannot share a label with Extended Arabic-Indic digits"
		}
	case 0x06f0 <= r && r <= 0x06f9: // A.9 EXTENDED ARABIC-INDIC DIGITS
		if anyOf(func(c rune) bool { return 0x0660 <= c && c <= 0x0669 }) {
			return "cannot share a label with Arabic-Indic digits"
		}
	}
	return ""
}

// codePoint names r for an error message: U+2603 '☃', U+200B '\u200b'.
func codePoint(r rune) string {
	return fmt.Sprintf("U+%04X %q", r, r)
}

// checkALabels returns the first IDNA2008 rule an A-label of name (a
// lowercase ASCII name) breaks, naming the label, or "". The labels have
// passed aceProfile, so they decode.
func checkALabels(name string) string {
	for label := range strings.SplitSeq(name, ".") {
		if !strings.HasPrefix(label, "xn--") {
			continue
		}
		u, err := idna.Punycode.ToUnicode(label)
		if err != nil {
			return "invalid internationalized name: " + strings.TrimPrefix(err.Error(), "idna: ")
		}
		if rule := checkULabel(u); rule != "" {
			return fmt.Sprintf("label %q (%q): %s", label, u, rule)
		}
	}
	return ""
}

// mapOnly applies the UTS #46 mapping of aceProfile and checks nothing.
var mapOnly = idna.New(idna.MapForLookup(), idna.Transitional(false), idna.ValidateLabels(false),
	idna.StrictDomainName(false), idna.CheckHyphens(false), idna.CheckJoiners(false))

// mappingRule returns why in, a name with non-ASCII characters, is not
// accepted as it is although out, what the UTS #46 mapping makes of it, is
// valid: the mapping changed it beyond lowercasing letters, dropping a
// final dot and converting U-labels to A-labels. It returns "" when the
// mapping changed nothing else. A zero-width character dropped, a
// full-width letter or dot, a compatibility character would otherwise be
// stored as another name than the one given, without a word (IDNA2008,
// RFC 5891 section 5.3, leaves such mappings to the application; certserver
// makes the caller send the name it means).
func mappingRule(in, out string) string {
	uIn, _ := idna.Punycode.ToUnicode(strings.ToLower(strings.TrimSuffix(in, ".")))
	uOut, _ := idna.Punycode.ToUnicode(out)
	if uIn == uOut {
		return ""
	}
	for _, r := range in {
		if r < 0x80 {
			continue
		}
		m, _ := mapOnly.ToUnicode(string(r))
		switch {
		case m == string(r):
			continue
		case m == "":
			return fmt.Sprintf("character %s is removed by UTS #46 mapping: send %q, the name that would be stored", codePoint(r), out)
		}
		return fmt.Sprintf("character %s is mapped to %q by UTS #46: send %q, the name that would be stored", codePoint(r), m, out)
	}
	return fmt.Sprintf("not in Unicode normalization form C: send %q, the name that would be stored", out)
}
