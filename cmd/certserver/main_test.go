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
