package api

import (
	"bytes"
	"fmt"
)

// MaxProfile is the longest ACME profile name accepted.
const MaxProfile = 64

// CheckProfile refuses a string that cannot be an ACME profile name:
// profile names are short tokens ("classic", "shortlived") of letters,
// digits, '-', '_' and '.', at most MaxProfile long; "" (the default) is
// accepted. The admin API and the configuration file both check with it.
func CheckProfile(p string) error {
	if len(p) > MaxProfile {
		return fmt.Errorf("profile is longer than %d characters", MaxProfile)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' {
			continue
		}
		return fmt.Errorf("profile %q: only letters, digits, '-', '_' and '.' are allowed", p)
	}
	return nil
}

// NameInLine returns the name a line of a name list holds, nil for none:
// a name list (the text body of POST /v1/domains, the file of
// "certserver domains add --file") holds one name per line, and what
// follows a "#" and surrounding white space are not part of it.
func NameInLine(line []byte) []byte {
	if i := bytes.IndexByte(line, '#'); i >= 0 {
		line = line[:i]
	}
	return bytes.TrimSpace(line)
}
