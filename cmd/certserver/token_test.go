package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadTokenFile(t *testing.T) {
	tests := []struct {
		desc, content, want, err string
	}{
		{desc: "one line", content: "s3cret\n", want: "s3cret"},
		{desc: "no final newline", content: "s3cret", want: "s3cret"},
		{desc: "CRLF", content: "s3cret\r\n", want: "s3cret"},
		{desc: "white space around", content: "  s3cret \n\n", want: "s3cret"},
		{desc: "two lines", content: "s3cret\nother\n", err: "holds 2 lines: want the token alone on one line"},
		{desc: "comment line", content: "# admin token\ns3cret\n", err: "holds 2 lines"},
		{desc: "CRLF lines", content: "a\r\nb\r\nc\r\n", err: "holds 3 lines"},
		{desc: "control character", content: "s3c\x00ret\n", err: `control character '\x00' at byte 4`},
		{desc: "carriage return inside", content: "s3c\rret\n", err: `control character '\r' at byte 4`},
		{desc: "empty", content: "", err: "empty: want the token on one line"},
		{desc: "blank lines", content: "\n \n", err: "empty"},
	}
	dir := t.TempDir()
	for i, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			path := filepath.Join(dir, "token"+string(rune('a'+i)))
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readTokenFile(path)
			if tc.err == "" {
				if err != nil || got != tc.want {
					t.Fatalf("= %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), "token file "+path+": ") || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("= %q, %v; want an error \"token file %s: ...%s\"", got, err, path, tc.err)
			}
		})
	}
}

// A token file of two lines is an error naming the file, in every command
// that reads one, not an unreachable admin API.
func TestTokenFileOfTwoLines(t *testing.T) {
	url, _ := startAdmin(t)
	path := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(path, []byte(testToken+"\n"+testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := "token file " + path + ": holds 2 lines: want the token alone on one line"
	tests := []cliCase{
		{desc: "status", args: []string{"status", "--admin", url, "--token-file", path}, code: exitUnknown, stderr: want},
		{desc: "domains ls", args: []string{"domains", "ls", "--admin", url, "--token-file", path}, code: exitFailure, stderr: want},
		{desc: "import", args: []string{"import", "--admin", url, "--token-file", path, t.TempDir()}, code: exitFailure, stderr: want},
	}
	runCases(t, tests, runLocal)
	for _, tc := range tests {
		if _, _, errOut := runLocal(t, tc.args); strings.Contains(errOut, "unreachable") {
			t.Errorf("%s: reported as unreachable: %s", tc.desc, errOut)
		}
	}
	// The same from the environment.
	e, _, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN": url, "CERTSERVER_ADMIN_TOKEN": testToken + "\nx"})
	if code := run(context.Background(), e, []string{"queue"}); code != exitFailure || !strings.Contains(stderr.String(), "CERTSERVER_ADMIN_TOKEN: holds 2 lines") {
		t.Errorf("CERTSERVER_ADMIN_TOKEN of two lines: exit code %d, %q", code, stderr)
	}
}

// A CERTSERVER_ADMIN_TOKEN of white space alone counts as unset, as it
// always has: the next source of the token is used, by serve and by the
// client commands.
func TestEnvTokenOfWhiteSpace(t *testing.T) {
	url, _ := startAdmin(t)
	path := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(path, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"CERTSERVER_ADMIN": url, "CERTSERVER_ADMIN_TOKEN": " \n", "CERTSERVER_ADMIN_TOKEN_FILE": path}
	e, _, stderr := testEnv(vars)
	if code := run(context.Background(), e, []string{"queue"}); code != exitOK {
		t.Errorf("queue with a blank CERTSERVER_ADMIN_TOKEN and a token file: exit code %d, %q", code, stderr)
	}
	var cfg config
	cfg.Admin.TokenFile = path
	if tok, err := adminToken(e, cfg, slog.New(slog.DiscardHandler)); err != nil || tok != testToken {
		t.Errorf("serve's token with a blank CERTSERVER_ADMIN_TOKEN: %q, %v; want the token file's", tok, err)
	}
}
