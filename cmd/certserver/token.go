package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// readTokenFile reads the admin token from a file that holds it alone on
// one line: white space around it, the final newline included, is
// dropped. A file with more lines (a token and a comment, two tokens, a
// PEM block) or a control character inside the token is refused with an
// error that reads "token file PATH: ...", rather than sending a header
// no server accepts.
func readTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	t, err := checkToken(string(b))
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	return t, nil
}

// envToken returns the token of CERTSERVER_ADMIN_TOKEN, checked as a token
// file's line is; "" when it is not set or holds only white space, which
// counts as not set (as it always has), so the next source of the token
// is used.
func envToken(e *env) (string, error) {
	v := e.getenv("CERTSERVER_ADMIN_TOKEN")
	if strings.TrimSpace(v) == "" {
		return "", nil
	}
	t, err := checkToken(v)
	if err != nil {
		return "", fmt.Errorf("CERTSERVER_ADMIN_TOKEN: %w", err)
	}
	return t, nil
}

// checkToken returns s without surrounding white space, or an error when
// that is empty, spans several lines or holds a control character.
func checkToken(s string) (string, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return "", errors.New("empty: want the token on one line")
	}
	if n := strings.Count(t, "\n") + 1; n > 1 {
		return "", fmt.Errorf("holds %d lines: want the token alone on one line", n)
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c < 0x20 || c == 0x7f {
			return "", fmt.Errorf("control character %q at byte %d: want the token alone on one line", rune(c), i+1)
		}
	}
	return t, nil
}
