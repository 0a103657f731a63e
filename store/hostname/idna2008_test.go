package hostname

import "testing"

// TestDerivedProperty checks code points against the IANA IDNA2008
// table (RFC 5892, tables for Unicode 15.0.0).
func TestDerivedProperty(t *testing.T) {
	tests := []struct {
		r    rune
		want property
	}{
		{'a', pvalid}, {'0', pvalid}, {'-', pvalid}, {'A', disallowed}, {'_', disallowed},
		{0x00e0, pvalid},     // à
		{0x00c0, disallowed}, // À: unstable under case folding
		{0x0131, pvalid},     // ı
		{0x0130, disallowed}, // İ
		{0x00df, pvalid},     // ß: exception
		{0x03c2, pvalid},     // ς: exception
		{0x0640, disallowed}, // tatweel: exception
		{0x0301, pvalid},     // combining acute accent (Mn)
		{0x4e00, pvalid},     // CJK ideograph
		{0x200c, contextJ}, {0x200d, contextJ},
		{0x00b7, contextO}, {0x0375, contextO}, {0x30fb, contextO}, {0x0663, contextO}, {0x06f3, contextO},
		{0x2603, disallowed},  // ☃ (UTS #46: valid, NV8)
		{0x1f600, disallowed}, // 😀
		{0x3002, disallowed},  // ideographic full stop
		{0xff41, disallowed},  // fullwidth a
		{0xfb01, disallowed},  // ﬁ
		{0x00ad, disallowed},  // soft hyphen (default ignorable)
		{0x200b, disallowed},  // zero width space
		{0x0020, disallowed},
		{0x00a0, disallowed},  // no-break space
		{0xfdd0, disallowed},  // noncharacter
		{0x1100, disallowed},  // old Hangul jamo
		{0x20d0, disallowed},  // combining marks for symbols block
		{0x1d160, disallowed}, // musical symbol
		{0xfe0f, disallowed},  // variation selector
		{0x0378, unassigned},
		{0xe000, disallowed}, // private use
	}
	for _, tc := range tests {
		if got := derivedProperty(tc.r); got != tc.want {
			t.Errorf("derivedProperty(U+%04X %q) = %v, want %v", tc.r, tc.r, got, tc.want)
		}
	}
}
