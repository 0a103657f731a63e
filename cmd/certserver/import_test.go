package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/store"
)

// writeLineage lays out a certbot lineage the way certbot does: the files
// in archive/NAME/ with a version number, symbolic links to them in
// live/NAME/.
func writeLineage(t *testing.T, root, name string, chain, key []byte) {
	t.Helper()
	archive, live := filepath.Join(root, "archive", name), filepath.Join(root, "live", name)
	for _, d := range []string{archive, live} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string][]byte{"fullchain": chain, "cert": chain, "privkey": key}
	for base, data := range files {
		if data == nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(archive, base+"1.pem"), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..", "..", "archive", name, base+"1.pem"), filepath.Join(live, base+".pem")); err != nil {
			t.Fatal(err)
		}
	}
}

// certbotTree builds a certbot configuration directory with two good
// lineages, an expired one, one whose key belongs to another certificate,
// one without its key, and live/README.
func certbotTree(t *testing.T) string {
	root := filepath.Join(t.TempDir(), "letsencrypt")
	now := time.Now()
	c1, k1 := genCert(t, now.Add(60*24*time.Hour), "good.example.com")
	c2, k2 := genCert(t, now.Add(80*24*time.Hour), "www.example.org", "example.org")
	c3, k3 := genCert(t, now.Add(-24*time.Hour), "expired.example.net")
	c4, _ := genCert(t, now.Add(60*24*time.Hour), "mismatch.example.com")
	c5, _ := genCert(t, now.Add(60*24*time.Hour), "nokey.example.com")
	writeLineage(t, root, "good.example.com", c1, k1)
	writeLineage(t, root, "www.example.org", c2, k2)
	writeLineage(t, root, "expired.example.net", c3, k3)
	writeLineage(t, root, "mismatch.example.com", c4, k1)
	writeLineage(t, root, "nokey.example.com", c5, nil)
	if err := os.WriteFile(filepath.Join(root, "live", "README"), []byte("This directory contains your keys and certificates.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// startAdmin starts an admin API over a real Badger store in the test's
// temporary directory and returns its URL and the store.
func startAdmin(t *testing.T) (string, store.Store) {
	t.Helper()
	return startAdminWith(t, certserver.AdminConfig{})
}

// reportLine finds the report line of the item at path and returns its
// fields squeezed to single spaces.
func reportLine(t *testing.T, out, path string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, path+" ") || strings.HasSuffix(l, path) {
			return regexp.MustCompile(` {2,}`).ReplaceAllString(strings.TrimSpace(l), " | ")
		}
	}
	t.Fatalf("no report line for %s in:\n%s", path, out)
	return ""
}

func TestImportCertbotTree(t *testing.T) {
	root := certbotTree(t)
	url, st := startAdmin(t)
	live := filepath.Join(root, "live")
	vars := map[string]string{"CERTSERVER_ADMIN": url, "CERTSERVER_ADMIN_TOKEN": testToken}

	e, stdout, stderr := testEnv(vars)
	if code := run(context.Background(), e, []string{"import", root}); code != exitOK {
		t.Fatalf("exit code %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	out := stdout.String()
	t.Logf("first run:\n%s", out)
	want := map[string]string{
		"good.example.com":     "imported | good.example.com |",
		"www.example.org":      "imported | www.example.org (+1) |",
		"expired.example.net":  "skipped | expired.example.net | " + day(time.Now().Add(-24*time.Hour)) + " | " + filepath.Join(live, "expired.example.net") + " | expired",
		"mismatch.example.com": "skipped | mismatch.example.com | " + day(time.Now().Add(60*24*time.Hour)) + " | " + filepath.Join(live, "mismatch.example.com") + " | key does not match",
		"nokey.example.com":    "skipped | nokey.example.com | " + day(time.Now().Add(60*24*time.Hour)) + " | " + filepath.Join(live, "nokey.example.com") + " | unreadable: " + filepath.Join(live, "nokey.example.com", "privkey.pem") + ": no such file or directory",
	}
	for lineage, w := range want {
		if got := reportLine(t, out, filepath.Join(live, lineage)); !strings.HasPrefix(got, w) {
			t.Errorf("%s: line %q, want it to start with %q", lineage, got, w)
		}
	}
	if strings.Contains(out, "README") {
		t.Error("the README was reported")
	}
	if !strings.Contains(out, "5 certificates: 2 imported, 0 unchanged, 3 skipped") {
		t.Errorf("summary missing or wrong:\n%s", out)
	}
	ctx := context.Background()
	c, err := st.LookupCertificate(ctx, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	if c.Source != "certbot" || c.Origin != filepath.Join(live, "www.example.org") {
		t.Errorf("stored source %q origin %q", c.Source, c.Origin)
	}
	for _, name := range []string{"expired.example.net", "mismatch.example.com", "nokey.example.com"} {
		if _, err := st.LookupCertificate(ctx, name); err == nil {
			t.Errorf("%s was stored", name)
		}
	}

	// Running it again changes nothing and still succeeds.
	e, stdout, stderr = testEnv(vars)
	if code := run(ctx, e, []string{"import", root}); code != exitOK {
		t.Fatalf("re-run: exit code %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	out = stdout.String()
	if got := reportLine(t, out, filepath.Join(live, "good.example.com")); !strings.HasPrefix(got, "unchanged | good.example.com") {
		t.Errorf("re-run: %q", got)
	}
	if !strings.Contains(out, "5 certificates: 0 imported, 2 unchanged, 3 skipped") {
		t.Errorf("re-run summary:\n%s", out)
	}

	// An older certificate for a stored name is skipped.
	oc, ok := genCert(t, time.Now().Add(10*24*time.Hour), "good.example.com")
	bundle := filepath.Join(t.TempDir(), "old.pem")
	if err := os.WriteFile(bundle, append(oc, ok...), 0o600); err != nil {
		t.Fatal(err)
	}
	e, stdout, _ = testEnv(vars)
	if code := run(ctx, e, []string{"import", bundle}); code != exitFailure {
		t.Errorf("older bundle: exit code %d, want %d", code, exitFailure)
	}
	if got := reportLine(t, stdout.String(), bundle); !strings.Contains(got, "skipped | good.example.com") || !strings.Contains(got, "a newer certificate is stored") {
		t.Errorf("older bundle: %q", got)
	}
}

func TestImportNothingImportable(t *testing.T) {
	url, _ := startAdmin(t)
	root := filepath.Join(t.TempDir(), "le")
	c, k := genCert(t, time.Now().Add(-time.Hour), "old.example.com")
	writeLineage(t, root, "old.example.com", c, k)
	notPEM := filepath.Join(t.TempDir(), "notes.txt")
	os.WriteFile(notPEM, []byte("hello"), 0o644)
	e, stdout, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN_TOKEN": testToken})
	code := run(context.Background(), e, []string{"import", "--admin", url, root, notPEM, "/nonexistent/x.pem"})
	if code != exitFailure {
		t.Fatalf("exit code %d, want %d\n%s%s", code, exitFailure, stdout, stderr)
	}
	out := stdout.String()
	for path, want := range map[string]string{
		filepath.Join(root, "live", "old.example.com"): "| expired",
		notPEM:               "| not a certificate: ",
		"/nonexistent/x.pem": "| unreadable: /nonexistent/x.pem: no such file or directory",
	} {
		if got := reportLine(t, out, path); !strings.Contains(got, want) {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
}

func TestImportPairAndJSON(t *testing.T) {
	url, _ := startAdmin(t)
	dir := t.TempDir()
	c, k := genCert(t, time.Now().Add(30*24*time.Hour), "pair.example.com")
	os.WriteFile(filepath.Join(dir, "pair.crt"), c, 0o644)
	os.WriteFile(filepath.Join(dir, "pair.key"), k, 0o600)
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600)
	e, stdout, stderr := testEnv(nil)
	code := run(context.Background(), e, []string{"import", "--json", "--admin", url, "--token-file", tokenFile,
		"--cert", filepath.Join(dir, "pair.crt"), "--key", filepath.Join(dir, "pair.key")})
	if code != exitOK {
		t.Fatalf("exit code %d\n%s%s", code, stdout, stderr)
	}
	var doc struct {
		Items []struct {
			Result string   `json:"result"`
			ID     string   `json:"id"`
			Names  []string `json:"names"`
		} `json:"items"`
		Summary map[string]int `json:"summary"`
	}
	if err := json.Unmarshal([]byte(stdout.String()), &doc); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, stdout)
	}
	if len(doc.Items) != 1 || doc.Items[0].Result != "imported" || doc.Items[0].ID != "pair.example.com" || doc.Summary["imported"] != 1 {
		t.Errorf("report %+v", doc)
	}
}

func TestImportAdminProblems(t *testing.T) {
	url, _ := startAdmin(t)
	root := filepath.Join(t.TempDir(), "le")
	c, k := genCert(t, time.Now().Add(30*24*time.Hour), "a.example.com")
	writeLineage(t, root, "a.example.com", c, k)
	tests := []struct {
		desc string
		vars map[string]string
		args []string
		code int
		want string
	}{
		{desc: "unreachable", vars: map[string]string{"CERTSERVER_ADMIN": "http://127.0.0.1:1", "CERTSERVER_ADMIN_TOKEN": testToken},
			code: exitFailure, want: "is `certserver serve` running?"},
		{desc: "wrong token", vars: map[string]string{"CERTSERVER_ADMIN": url, "CERTSERVER_ADMIN_TOKEN": "wrong"},
			code: exitFailure, want: "refused the token"},
		{desc: "no token", vars: map[string]string{"CERTSERVER_ADMIN": url}, args: []string{"--config", filepath.Join(t.TempDir(), "none.toml")},
			code: exitFailure, want: "none.toml"},
		{desc: "token file from the environment", vars: map[string]string{"CERTSERVER_ADMIN": url, "CERTSERVER_ADMIN_TOKEN_FILE": "/nonexistent/token"},
			code: exitFailure, want: "admin token: open /nonexistent/token"},
		{desc: "dry run needs no admin", vars: nil, args: []string{"--dry-run"}, code: exitOK, want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			e, stdout, stderr := testEnv(tc.vars)
			code := run(context.Background(), e, append(append([]string{"import"}, tc.args...), root))
			if code != tc.code {
				t.Fatalf("exit code %d, want %d\n%s%s", code, tc.code, stdout, stderr)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q does not contain %q", stderr, tc.want)
			}
		})
	}
}

func TestImportConfigFile(t *testing.T) {
	url, _ := startAdmin(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin.token")
	os.WriteFile(tokenFile, []byte(testToken), 0o600)
	cfgPath := filepath.Join(dir, "certserver.toml")
	os.WriteFile(cfgPath, []byte("[admin]\nlisten = \""+strings.TrimPrefix(url, "http://")+"\"\ntoken_file = \""+tokenFile+"\"\n"), 0o644)
	root := filepath.Join(t.TempDir(), "le")
	c, k := genCert(t, time.Now().Add(30*24*time.Hour), "cfg.example.com")
	writeLineage(t, root, "cfg.example.com", c, k)
	e, stdout, stderr := testEnv(nil)
	if code := run(context.Background(), e, []string{"import", "--config", cfgPath, filepath.Join(root, "live", "cfg.example.com")}); code != exitOK {
		t.Fatalf("exit code %d\n%s%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout.String(), "1 certificate: 1 imported") {
		t.Errorf("report:\n%s", stdout)
	}
}
