package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
)

// runCLI runs the command line args against the admin API at url with
// stdin as standard input, and returns the exit code and the output.
func runCLI(t *testing.T, url, stdin string, args ...string) (int, string, string) {
	t.Helper()
	e, stdout, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN": url, "CERTSERVER_ADMIN_TOKEN": testToken})
	e.stdin = strings.NewReader(stdin)
	code := run(context.Background(), e, args)
	return code, stdout.String(), stderr.String()
}

func TestDomainsAddStdin(t *testing.T) {
	url, st := startAdmin(t)
	in := "# our shops\nshop.example.com\n\nbad_name.example.com   # typo\nwww.shop.example.com\n*\n"
	code, out, errOut := runCLI(t, url, in, "domains", "add", "-")
	if code != exitFailure {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, exitFailure, out, errOut)
	}
	want := []string{
		"2 added, 0 existing, 2 invalid\n",
		`invalid: line 4: "bad_name.example.com": underscore not allowed` + "\n",
		`invalid: line 6: "*": wildcard without a name` + "\n",
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output does not contain %q:\n%s", w, out)
		}
	}
	for _, n := range []string{"shop.example.com", "www.shop.example.com"} {
		if d, err := st.GetDomain(context.Background(), n); err != nil || d.State != store.StatePending {
			t.Errorf("%s: %+v %v, want pending", n, d, err)
		}
	}

	// Again, with nothing invalid: the names exist, exit 0.
	code, out, _ = runCLI(t, url, "shop.example.com\nnew.example.com\n", "domains", "add", "-")
	if code != exitOK || !strings.Contains(out, "1 added, 1 existing, 0 invalid") {
		t.Errorf("exit code %d, output %q", code, out)
	}
}

func TestDomainsAddSources(t *testing.T) {
	url, st := startAdmin(t)
	code, out, errOut := runCLI(t, url, "", "domains", "add", "--profile", "shortlived", "a.example.com", "192.0.2.1", "B.example.com")
	if code != exitFailure || !strings.Contains(out, `invalid: argument 2: "192.0.2.1": ip address`) || !strings.Contains(out, "2 added") {
		t.Errorf("arguments: exit code %d\n%s%s", code, out, errOut)
	}
	if d, err := st.GetDomain(context.Background(), "b.example.com"); err != nil || d.Profile != "shortlived" || d.Source != "api" {
		t.Errorf("b.example.com: %+v %v", d, err)
	}

	file := filepath.Join(t.TempDir(), "names.txt")
	if err := os.WriteFile(file, []byte("\ufeffc.example.com\r\nd.example.com\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runCLI(t, url, "", "domains", "add", "--file", file, "--json")
	if code != exitOK {
		t.Fatalf("file: exit code %d\n%s%s", code, out, errOut)
	}
	var rep struct {
		Added, Existing int
		Invalid         []api.InvalidName
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Added != 2 || rep.Invalid == nil {
		t.Errorf("--json: %+v %v\n%s", rep, err, out)
	}

	code, _, errOut = runCLI(t, url, "# nothing\n\n", "domains", "add", "-")
	if code != exitFailure || !strings.Contains(errOut, "no names in the input") {
		t.Errorf("empty input: exit code %d, %q", code, errOut)
	}
}

func TestDomainsShowListRenewRemove(t *testing.T) {
	url, st := startAdmin(t)
	ctx := context.Background()
	if code, out, errOut := runCLI(t, url, "", "domains", "add", "a.example.com", "b.example.com", "c.example.com"); code != exitOK {
		t.Fatalf("add: %d\n%s%s", code, out, errOut)
	}
	chain, key := genCert(t, time.Now().Add(30*24*time.Hour), "b.example.com")
	c, err := store.ParseCertificate(chain, key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutCertificate(ctx, c); err != nil {
		t.Fatal(err)
	}
	d, _ := st.GetDomain(ctx, "c.example.com")
	d.State, d.Failures, d.LastError = store.StateFailing, 2, "acme: error: 400 :: urn:ietf:params:acme:error:connection :: "+strings.Repeat("x", 100)
	if err := st.PutDomain(ctx, d); err != nil {
		t.Fatal(err)
	}

	// show --json parses back.
	code, out, errOut := runCLI(t, url, "", "domains", "show", "--json", "B.example.com")
	if code != exitOK {
		t.Fatalf("show --json: %d %s", code, errOut)
	}
	var doc api.Domain
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("show --json: %v\n%s", err, out)
	}
	if doc.Name != "b.example.com" || doc.State != "pending" || doc.Certificate == nil || doc.Certificate.Serial != c.Serial {
		t.Errorf("show --json: %+v", doc)
	}
	code, out, _ = runCLI(t, url, "", "domains", "show", "b.example.com")
	for _, w := range []string{"name:", "b.example.com", "state:", "pending", "next attempt:", "certificate:", "  serial:", c.Serial} {
		if code != exitOK || !strings.Contains(out, w) {
			t.Errorf("show: exit code %d, output lacks %q:\n%s", code, w, out)
		}
	}
	code, _, errOut = runCLI(t, url, "", "domains", "show", "nope.example.com")
	if code != exitFailure || !strings.Contains(errOut, "nope.example.com is not managed") {
		t.Errorf("show unmanaged: %d %q", code, errOut)
	}

	// ls: a table, paged.
	code, out, errOut = runCLI(t, url, "", "domains", "ls", "--limit", "2")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != exitOK || len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[0], "NEXT-ATTEMPT") {
		t.Fatalf("ls: %d\n%s", code, out)
	}
	if !strings.Contains(lines[2], "b.example.com") || !strings.Contains(lines[2], c.NotAfter.UTC().Format("2006-01-02")) {
		t.Errorf("ls row of b.example.com: %q", lines[2])
	}
	if !strings.Contains(errOut, "--after b.example.com") {
		t.Errorf("ls: no next page hint: %q", errOut)
	}
	code, out, _ = runCLI(t, url, "", "domains", "ls", "--after", "b.example.com")
	if code != exitOK || !strings.Contains(out, "failing") || !strings.Contains(out, "…") || strings.Contains(out, strings.Repeat("x", 60)) {
		t.Errorf("ls second page: %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, url, "", "domains", "ls", "--json")
	var l api.DomainList
	if err := json.Unmarshal([]byte(out), &l); code != exitOK || err != nil || len(l.Domains) != 3 {
		t.Errorf("ls --json: %d %v\n%s", code, err, out)
	}

	// renew: accepted, not queued (no renewer behind this API).
	code, out, _ = runCLI(t, url, "", "domains", "renew", "a.example.com")
	if code != exitOK || !strings.Contains(out, "a.example.com: due now, not queued") {
		t.Errorf("renew: %d %q", code, out)
	}
	code, _, errOut = runCLI(t, url, "", "domains", "renew", "nope.example.com")
	if code != exitFailure || !strings.Contains(errOut, "not managed") {
		t.Errorf("renew unmanaged: %d %q", code, errOut)
	}

	// rm: removed, the certificate stays.
	code, out, _ = runCLI(t, url, "", "domains", "rm", "b.example.com")
	if code != exitOK || !strings.Contains(out, "b.example.com: removed; its certificate b.example.com") {
		t.Errorf("rm: %d %q", code, out)
	}
	if d, _ := st.GetDomain(ctx, "b.example.com"); d.State != store.StateRemoved {
		t.Errorf("after rm: %+v", d)
	}
}

func TestDomainsCommandLine(t *testing.T) {
	tests := []cliCase{
		{desc: "no subcommand", args: []string{"domains"}, code: exitUsage, stderr: "Subcommands:"},
		{desc: "help", args: []string{"domains", "--help"}, code: exitOK, stdout: "Exit codes"},
		{desc: "help through the top", args: []string{"help", "domains"}, code: exitOK, stdout: "renew"},
		{desc: "help for a subcommand", args: []string{"domains", "help", "add"}, code: exitOK, stdout: "--profile"},
		{desc: "unknown subcommand", args: []string{"domains", "list"}, code: exitUsage, stderr: `unknown subcommand "list"`},
		{desc: "add --help", args: []string{"domains", "add", "--help"}, code: exitOK, stdout: "Examples:"},
		{desc: "show --help", args: []string{"domains", "show", "--help"}, code: exitOK, stdout: "--json"},
		{desc: "ls --help", args: []string{"domains", "ls", "--help"}, code: exitOK, stdout: "NOT-AFTER"},
		{desc: "renew --help", args: []string{"domains", "renew", "--help"}, code: exitOK, stdout: "Example:"},
		{desc: "rm --help", args: []string{"domains", "rm", "--help"}, code: exitOK, stdout: "stays stored and served"},
		{desc: "add without names", args: []string{"domains", "add"}, code: exitUsage, stderr: "no names given"},
		{desc: "add names and a file", args: []string{"domains", "add", "--file", "x", "a.example.com"}, code: exitUsage, stderr: "not both"},
		{desc: "add stdin and names", args: []string{"domains", "add", "-", "a.example.com"}, code: exitUsage, stderr: "cannot be mixed"},
		{desc: "add a missing file", args: []string{"domains", "add", "--file", "/nonexistent/names"}, code: exitFailure, stderr: "/nonexistent/names"},
		{desc: "show without a name", args: []string{"domains", "show"}, code: exitUsage, stderr: "no NAME given"},
		{desc: "show two names", args: []string{"domains", "show", "a.example.com", "b.example.com"}, code: exitUsage, stderr: "one NAME only"},
		{desc: "ls with a bad limit", args: []string{"domains", "ls", "--limit", "0"}, code: exitUsage, stderr: "--limit must be from 1 to 1000"},
		{desc: "ls with an argument", args: []string{"domains", "ls", "x"}, code: exitUsage, stderr: `unexpected argument "x"`},
		{desc: "rm with a bad flag", args: []string{"domains", "rm", "--force", "x"}, code: exitUsage, stderr: "certserver domains rm: flag provided but not defined: -force"},
		{desc: "no token", args: []string{"domains", "show", "--config", "/nonexistent/c.toml", "a.example.com"}, code: exitFailure, stderr: "/nonexistent/c.toml"},
	}
	runCases(t, tests, runLocal)
}

func TestDomainsUnreachable(t *testing.T) {
	code, _, errOut := runCLI(t, "http://127.0.0.1:1", "", "domains", "ls")
	if code != exitFailure || !strings.Contains(errOut, "is `certserver serve` running?") {
		t.Errorf("exit code %d, stderr %q", code, errOut)
	}
	e, _, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN_TOKEN": "wrong"})
	url, _ := startAdmin(t)
	if code := run(context.Background(), e, []string{"domains", "ls", "--admin", url}); code != exitFailure || !strings.Contains(stderr.String(), "refused the token") {
		t.Errorf("wrong token: exit code %d, stderr %q", code, stderr)
	}
}
