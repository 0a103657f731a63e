package main

import (
	"context"
	"strings"
	"testing"
)

func TestCommandLine(t *testing.T) {
	tests := []cliCase{
		{desc: "no arguments", args: nil, code: exitUsage, stderr: "Commands:"},
		{desc: "help", args: []string{"--help"}, code: exitOK, stdout: "fallback-cert"},
		{desc: "help command", args: []string{"help"}, code: exitOK, stdout: "Exit codes"},
		{desc: "help for a command", args: []string{"help", "import"}, code: exitOK, stdout: "Examples:"},
		{desc: "unknown command", args: []string{"frobnicate"}, code: exitUsage, stderr: `unknown command "frobnicate"`},
		{desc: "serve --help", args: []string{"serve", "--help"}, code: exitOK, stdout: "Examples:"},
		{desc: "serve -h", args: []string{"serve", "-h"}, code: exitOK, stdout: "-config file"},
		{desc: "import --help", args: []string{"import", "--help"}, code: exitOK, stdout: "CERTSERVER_ADMIN_TOKEN_FILE"},
		{desc: "fallback-cert --help", args: []string{"fallback-cert", "--help"}, code: exitOK, stdout: "ssl_certificate"},
		{desc: "version --help", args: []string{"version", "--help"}, code: exitOK, stdout: "Example:"},
		{desc: "version", args: []string{"version"}, code: exitOK, stdout: "certserver "},
		{desc: "--version", args: []string{"--version"}, code: exitOK, stdout: "certserver "},
		{desc: "unknown flag", args: []string{"serve", "--confg", "x"}, code: exitUsage, stderr: "flag provided but not defined: -confg"},
		{desc: "flag without value", args: []string{"fallback-cert", "--out"}, code: exitUsage, stderr: "flag needs an argument: -out"},
		{desc: "stray argument", args: []string{"serve", "extra"}, code: exitUsage, stderr: `unexpected argument "extra"`},
		{desc: "missing --out", args: []string{"fallback-cert"}, code: exitUsage, stderr: "--out DIR is required"},
		{desc: "import without paths", args: []string{"import"}, code: exitUsage, stderr: "no PATH given"},
		{desc: "import --cert without --key", args: []string{"import", "--cert", "x.pem"}, code: exitUsage, stderr: "--cert and --key go together"},
		{desc: "bad duration flag", args: []string{"import", "--timeout", "soon", "x"}, code: exitUsage, stderr: "-timeout"},
		// A bad flag value is a bad command line (exit 2) in every
		// command, status included, before any request is made.
		{desc: "status bad window", args: []string{"status", "--warn", "bogus"}, code: exitUsage, stderr: `invalid value "bogus" for flag -warn: want a whole number of days (7d) or a duration (72h, 90m)`},
		{desc: "status empty window", args: []string{"status", "--warn", "0d"}, code: exitUsage, stderr: `invalid value "0d" for flag -warn: must be positive`},
		{desc: "status zero timeout", args: []string{"status", "--timeout", "0s"}, code: exitUsage, stderr: `invalid value "0s" for flag -timeout: must be positive`},
		{desc: "import zero timeout", args: []string{"import", "--timeout", "0s", "x"}, code: exitUsage, stderr: `invalid value "0s" for flag -timeout: must be positive`},
		{desc: "ls bad window", args: []string{"domains", "ls", "--expiring", "soon"}, code: exitUsage, stderr: `invalid value "soon" for flag -expiring`},
		{desc: "ls bad state", args: []string{"domains", "ls", "--state", "valid,gone"}, code: exitUsage, stderr: `invalid value "valid,gone" for flag -state: unknown state "gone"`},
		{desc: "ls negative timeout", args: []string{"domains", "ls", "--timeout", "-1s"}, code: exitUsage, stderr: "must be positive"},
		{desc: "revoke bad reason", args: []string{"domains", "revoke", "--reason", "stolen", "a.example.com"}, code: exitUsage, stderr: `invalid value "stolen" for flag -reason: unknown revocation reason "stolen"`},
		{desc: "rm bad reason", args: []string{"domains", "rm", "--revoke", "x", "a.example.com"}, code: exitUsage, stderr: `unknown revocation reason "x"`},
		{desc: "missing config file", args: []string{"serve", "--config", "/nonexistent/certserver.toml"}, code: exitFailure, stderr: "/nonexistent/certserver.toml"},
	}
	runCases(t, tests, runLocal)
}

func TestParseFlagsInterspersed(t *testing.T) {
	e, _, _ := testEnv(nil)
	fs := newFlagSet("x", "", "")
	dry := fs.Bool("dry-run", false, "")
	rest, _, ok := fs.parse(e, []string{"a", "--dry-run", "b", "--", "--c"})
	if !ok || !*dry || strings.Join(rest, " ") != "a b --c" {
		t.Fatalf("rest %q dry %v ok %v", rest, *dry, ok)
	}
}

func TestHelpPrintedOnce(t *testing.T) {
	e, stdout, _ := testEnv(nil)
	if code := run(context.Background(), e, []string{"import", "--help"}); code != exitOK {
		t.Fatalf("exit code %d", code)
	}
	if n := strings.Count(stdout.String(), "Usage:"); n != 1 {
		t.Errorf("help printed %d times", n)
	}
	// A bad flag gets a short message on stderr, not the help on stdout.
	e, stdout, stderr := testEnv(nil)
	if code := run(context.Background(), e, []string{"import", "--nope"}); code != exitUsage {
		t.Fatalf("exit code %d", code)
	}
	if stdout.String() != "" || strings.Count(stderr.String(), "\n") > 2 {
		t.Errorf("stdout %q stderr %q", stdout, stderr)
	}
}

// cliCase is a command line and what it must give: its exit code, and
// text that its standard output and error must contain.
type cliCase struct {
	desc   string
	args   []string
	code   int
	stdout string
	stderr string
}

// runCases runs each case as a subtest through call.
func runCases(t *testing.T, tests []cliCase, call func(t *testing.T, args []string) (code int, stdout, stderr string)) {
	t.Helper()
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			code, out, errOut := call(t, tc.args)
			if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errOut, tc.stderr) {
				t.Errorf("exit code %d (want %d)\nstdout: %s\nstderr: %s\nwant them to contain %q / %q", code, tc.code, out, errOut, tc.stdout, tc.stderr)
			}
		})
	}
}

// runLocal runs a command line with no admin API configured.
func runLocal(t *testing.T, args []string) (code int, stdout, stderr string) {
	e, out, errOut := testEnv(nil)
	code = run(context.Background(), e, args)
	return code, out.String(), errOut.String()
}
