// Command certserver keeps TLS certificates for an nginx fleet: `certserver
// serve` runs the sidecar beside nginx, and the other subcommands are the
// operator's tools. Run `certserver help` for the list.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Exit codes of every subcommand.
const (
	exitOK      = 0 // success
	exitFailure = 1 // the command ran and failed
	exitUsage   = 2 // bad command line: unknown flag, missing argument
)

// env is what a command gets from the process: tests substitute all of it.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time
}

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) int
}

func commands() []command {
	return []command{
		{"serve", "run the sidecar: certificate endpoint and admin API", runServe},
		{"domains", "manage the names certserver obtains certificates for", runDomains},
		{"queue", "show what the renewer has to do", runQueue},
		{"status", "one-screen summary: states, queue, failing and expiring names", runStatus},
		{"import", "import certificates from certbot directories or PEM files", runImport},
		{"fleet", "run hosts as a fleet sharing one PostgreSQL: copy a single host's store into it", runFleet},
		{"keys", "encrypt stored private keys: generate and rotate key-encryption keys", runKeys},
		{"doctor", "check that nginx and certserver work together, and say what to change", runDoctor},
		{"fallback-cert", "write the self-signed certificate nginx serves for unknown names", runFallbackCert},
		{"version", "print the version", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	// After the first signal a second one kills the process the usual way.
	context.AfterFunc(ctx, stop)
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, now: time.Now}
	code := run(ctx, e, os.Args[1:])
	stop()
	os.Exit(code)
}

// run dispatches args to a subcommand and returns the exit code.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		usage(e.stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && args[0] == "help" {
			return run(ctx, e, []string{args[1], "--help"})
		}
		usage(e.stdout)
		return exitOK
	case "-version", "--version":
		return runVersion(ctx, e, nil)
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, e, args[1:])
		}
	}
	fmt.Fprintf(e.stderr, "certserver: unknown command %q\nRun 'certserver help' for the list of commands.\n", args[0])
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, `certserver keeps TLS certificates for nginx: a sidecar beside nginx stores
them and hands nginx the right one for every TLS handshake.

Usage:
  certserver <command> [flags] [arguments]

Commands:
`)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `
Run 'certserver <command> --help' for a command's flags and examples.

Exit codes: 0 success, 1 failure, 2 bad command line; 'certserver status'
exits 1 when names need attention and 3 when it cannot tell.
`)
}

// flagSet is the flag set of one subcommand with the text of its --help.
type flagSet struct {
	*flag.FlagSet
	synopsis    string // the arguments after "certserver NAME"
	description string // what the command does, with examples
}

// newFlagSet returns the flag set of a subcommand.
func newFlagSet(name, synopsis, description string) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	// The flag package calls Usage on every parse error; parse prints the
	// help itself, and only for --help.
	fs.Usage = func() {}
	return &flagSet{FlagSet: fs, synopsis: synopsis, description: description}
}

// printHelp prints the synopsis, the description and the flags.
func (fs *flagSet) printHelp(w io.Writer) {
	fmt.Fprintf(w, "Usage: certserver %s %s\n\n%s\n", fs.Name(), fs.synopsis, strings.TrimSpace(fs.description))
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		fmt.Fprint(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
}

// parseNone parses args of a command that takes no positional argument:
// one is a usage error naming it. It returns the exit code and false when
// the command should stop (help printed, or a bad command line).
func (fs *flagSet) parseNone(e *env, args []string) (int, bool) {
	rest, code, ok := fs.parse(e, args)
	if !ok {
		return code, false
	}
	if len(rest) > 0 {
		return usageError(e, fs.Name(), "unexpected argument %q", rest[0]), false
	}
	return 0, true
}

// parse parses args, allowing flags after positional arguments
// ("import /etc/letsencrypt --dry-run"); "--" ends the flags. It returns the
// positional arguments and true, or an exit code and false when the command
// must stop: exitOK after printing the help for --help, exitUsage after a
// message naming the bad flag.
func (fs *flagSet) parse(e *env, args []string) ([]string, int, bool) {
	var positional []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fs.printHelp(e.stdout)
			return nil, exitOK, false
		}
		if err != nil {
			return nil, usageError(e, fs.Name(), "%v", err), false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, 0, true
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(positional, rest...), 0, true
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// usageError prints a usage message for a subcommand and returns exitUsage.
func usageError(e *env, name, format string, args ...any) int {
	fmt.Fprintf(e.stderr, "certserver %s: %s\nRun 'certserver %s --help' for usage.\n", name, fmt.Sprintf(format, args...), name)
	return exitUsage
}

// fail prints an error for a subcommand and returns exitFailure.
func fail(e *env, name string, err error) int {
	fmt.Fprintf(e.stderr, "certserver %s: %v\n", name, err)
	return exitFailure
}
