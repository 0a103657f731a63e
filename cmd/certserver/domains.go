package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
	"github.com/certserver/certserver/store"
)

// adminHelp is the paragraph every command that talks to the admin API
// ends its help with.
const adminHelp = `
The admin API is found from, in order: --admin and --token-file;
the environment variables CERTSERVER_ADMIN (its URL),
CERTSERVER_ADMIN_TOKEN (the token itself) and CERTSERVER_ADMIN_TOKEN_FILE;
the [admin] section of the configuration file (--config, default
` + defaultConfigPath + `, when it exists); http://` + certserver.DefaultAdminListen + `.
`

const domainsHelp = `
Manages the names certserver obtains and renews certificates for, through
the admin API of a running ` + "`certserver serve`" + `.

Subcommands:
  add     bring names under management (arguments, a file or standard input)
  show    what certserver knows about one name, and its certificate
  ls      list managed names, in name order, a page at a time
  renew   renew a name's certificate now
  revoke  revoke a name's certificate at the CA and order a new one
  rm      stop managing a name (its certificate stays served, unless
          --revoke revokes it first)

Run 'certserver domains <subcommand> --help' for flags and examples.

Exit codes: 0 success; 1 failure (for add: some names were invalid; the
valid ones were still added); 2 bad command line.
`

// domainsCommands are the subcommands of `certserver domains`.
func domainsCommands() []command {
	return []command{
		{"add", "bring names under management", runDomainsAdd},
		{"show", "show one managed name", runDomainsShow},
		{"ls", "list managed names", runDomainsList},
		{"renew", "renew a name's certificate now", runDomainsRenew},
		{"revoke", "revoke a name's certificate and order a new one", runDomainsRevoke},
		{"rm", "stop managing a name", runDomainsRemove},
	}
}

func runDomains(ctx context.Context, e *env, args []string) int {
	return runGroup(ctx, e, "domains", "<subcommand> [flags] [arguments]", domainsHelp, domainsCommands(), args)
}

// runGroup runs the subcommand args[0] of the command group name (domains,
// keys, fleet) from cmds: with no argument, its usage and help on standard
// error (exit 2); -h, --help or help [SUBCOMMAND], on standard output; an
// unknown subcommand, an error listing the known ones.
func runGroup(ctx context.Context, e *env, name, usage, help string, cmds []command, args []string) int {
	usageLine := "Usage: certserver " + name + " " + usage + "\n"
	if len(args) == 0 {
		fmt.Fprintf(e.stderr, "%s%s", usageLine, help)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		fmt.Fprintf(e.stdout, "%s%s", usageLine, help)
		return exitOK
	case "help":
		if len(args) > 1 {
			return runGroup(ctx, e, name, usage, help, cmds, []string{args[1], "--help"})
		}
		return runGroup(ctx, e, name, usage, help, cmds, []string{"--help"})
	}
	names := make([]string, 0, len(cmds))
	for _, c := range cmds {
		if c.name == args[0] {
			return c.run(ctx, e, args[1:])
		}
		names = append(names, c.name)
	}
	return usageError(e, name, "unknown subcommand %q (%s)", args[0], strings.Join(names, ", "))
}

// adminFlags are the flags of every command that talks to the admin API.
type adminFlags struct {
	admin, tokenFile, config *string
	timeout                  *time.Duration
}

// addAdminFlags defines the admin API flags on fs.
func addAdminFlags(fs *flagSet) *adminFlags {
	return &adminFlags{
		admin:     fs.String("admin", "", "the admin API `URL` (default from $CERTSERVER_ADMIN, the config file, else http://"+certserver.DefaultAdminListen+")"),
		tokenFile: fs.String("token-file", "", "read the admin token from `file` (default from $CERTSERVER_ADMIN_TOKEN(_FILE) or the config file)"),
		config:    fs.String("config", "", "read the admin address and token file from this configuration `file` (default "+defaultConfigPath+" if it exists)"),
		timeout:   positiveDurationVar(fs, "timeout", time.Minute, "give up on one request to the admin API after this `duration`"),
	}
}

// request makes one admin API request, do, with the client and the
// timeout the flags describe. When it fails it says why on stderr and
// returns the exit code, with ok false.
func request[T any](ctx context.Context, e *env, fs *flagSet, af *adminFlags, do func(context.Context, *client.Client) (T, error)) (v T, code int, ok bool) {
	cl, err := af.client(e)
	if err != nil {
		return v, fail(e, fs.Name(), err), false
	}
	rctx, cancel := context.WithTimeout(ctx, *af.timeout)
	defer cancel()
	if v, err = do(rctx, cl); err != nil {
		return v, fail(e, fs.Name(), explain(cl, err)), false
	}
	return v, exitOK, true
}

// client returns the admin API client the flags, the environment and the
// configuration file describe.
func (f *adminFlags) client(e *env) (*client.Client, error) {
	return adminClient(e, *f.admin, *f.tokenFile, *f.config, *f.timeout)
}

// explain turns an error from the admin API into what the operator should
// know.
func explain(cl *client.Client, err error) error {
	var ae *api.Error
	switch {
	case errors.Is(err, client.ErrUnreachable):
		return fmt.Errorf("%w (is `certserver serve` running?)", err)
	case errors.As(err, &ae) && ae.Status == 401:
		return fmt.Errorf("the admin API at %s refused the token: %s (check --token-file, CERTSERVER_ADMIN_TOKEN or admin.token_file)", cl.URL(), ae.Message)
	case errors.As(err, &ae):
		return errors.New(ae.Message)
	}
	return err
}

const domainsAddHelp = `
Brings names under management: certserver obtains a certificate for each
and keeps renewing it. The names come from the arguments, from a file
(--file FILE) or from standard input ("-"), one per line; blank lines and
everything after a "#" are ignored. Names are normalized (lowercase,
internationalized names to their xn-- form) and checked as CAs check
them (IDNA2008): a character IDNA2008 disallows is refused, and so is a
name UTS #46 mapping would change otherwise (a zero-width or full-width
character), with the name to send instead.

Each name gets a certificate of its own, unless the first name is a
wildcard or --together is given: then the names are one certificate,
the first the managed name and the others its extra names, ordered
together ('*.shop.example' with 'shop.example'). A wildcard is proved
with dns-01, which needs [dns01] in the server's configuration; one
deeper than the first label ('a.*.shop.example'), '*' alone and one over
a public suffix ('*.co.uk') are refused, with the rule they break.

--challenge sets how the names' orders prove control: http-01 (a token
on port 80, the default), dns-01 (a TXT record, through [dns01]),
tls-alpn-01 (port 443, through nginx's stream snippet) or auto (the
first of these the server can answer). A name that cannot use the
challenge it asks for is refused before anything is sent to the CA, and
'certserver domains show' says why. Names already managed take the
challenge (and, with --together, the extra names) given.

The report says how many names were added and how many were managed
already (they are left as they are; a removed name is managed again), and
lists every invalid name with its line (or argument position) and what is
wrong with it. The valid names are added even when some are invalid.

Names from a file or standard input are sent in batches (--batch), with
progress on standard error: a bar when it is a terminal, else a line
every 5s ("sent 120000/500000 names (24%), 48000 names/s") and one at
the end. --progress none turns it off.

Exit codes: 0 every name was valid; 1 some names were invalid, or the
request failed; 2 bad command line.
` + adminHelp + `
Examples:
  certserver domains add shop.example.com www.shop.example.com
  certserver domains add --profile shortlived staging.example.com
  certserver domains add '*.shop.example' shop.example
  certserver domains add --challenge dns-01 --together shop.example www.shop.example
  certserver domains add --file /etc/certserver/names.txt
  psql -Atc 'select host from customers' | certserver domains add -
`

// Batches of `domains add`: the admin API takes 500,000 names in one
// request, but smaller requests bound each one's duration and let the
// progress report move. By default the input is sent in about 20 requests
// of minBatchNames to maxBatchNames names.
const (
	minBatchNames = 1000
	maxBatchNames = 100000
)

// batchSize returns the default number of names per request for total.
func batchSize(total int) int {
	return min(max(total/20, minBatchNames), maxBatchNames)
}

// maxLine is the longest input line `domains add` reads, in bytes.
const maxLine = 1 << 20

// inputName is one name read for `domains add`, with where it was found.
type inputName struct {
	line int // 1-based line, or argument position
	name string
}

// addReport is the outcome of `domains add`, with the invalid names at
// their place in the input.
type addReport struct {
	Added        int               `json:"added"`
	Existing     int               `json:"existing"`
	Updated      int               `json:"updated,omitempty"`
	Invalid      []api.InvalidName `json:"invalid"`
	InvalidCount int               `json:"invalid_count"`
}

func runDomainsAdd(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("domains add", "[flags] NAME... | -", domainsAddHelp)
	profile := fs.String("profile", "", "the ACME `profile` to request for these names (default: the server's acme.profile)")
	file := fs.String("file", "", "read the names from `file`, one per line (\"-\" for standard input)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	progressMode := fs.String("progress", progressAuto, "report progress on standard error when reading a file or standard input: `mode` auto (a bar on a terminal, else a line every "+progressInterval.String()+"), bar, lines or none")
	batch := fs.Int("batch", 0, "send `n` names per request (default: a twentieth of the input, from 1000 to 100000)")
	challenge := fs.String("challenge", "", "how the names' orders prove control: `challenge` http-01, dns-01, tls-alpn-01 or auto (default: the server's acme.challenge)")
	together := fs.Bool("together", false, "the names are one certificate: the first is the managed name, the others its extra names (implied when the first name is a wildcard)")
	af := addAdminFlags(fs)
	rest, code, ok := fs.parse(e, args)
	if !ok {
		return code
	}
	switch *progressMode {
	case progressAuto, progressBar, progressLines, progressNone:
	default:
		return usageError(e, fs.Name(), "--progress must be auto, bar, lines or none")
	}
	if *batch < 0 || *batch > maxBatchNames {
		return usageError(e, fs.Name(), "--batch must be from 1 to %d", maxBatchNames)
	}
	if _, err := store.ParseChallenge(*challenge); err != nil {
		return usageError(e, fs.Name(), "--challenge: %v", err)
	}
	var src string // what the names are read from: "", "-" or a path
	switch {
	case *file != "" && len(rest) > 0:
		return usageError(e, fs.Name(), "give names as arguments or with --file, not both")
	case *file != "":
		src = *file
	case len(rest) == 1 && rest[0] == "-":
		src = "-"
	case len(rest) == 0:
		return usageError(e, fs.Name(), "no names given: NAME..., - for standard input, or --file FILE")
	}
	if src == "" && len(rest) > 1 && slices.Contains(rest, "-") {
		return usageError(e, fs.Name(), `"-" (standard input) cannot be mixed with names`)
	}

	var names []inputName
	where := "line"
	switch src {
	case "":
		where = "argument"
		for i, n := range rest {
			names = append(names, inputName{line: i + 1, name: n})
		}
	case "-":
		var err error
		if names, err = readNames(e.stdin); err != nil {
			return fail(e, fs.Name(), fmt.Errorf("standard input: %w", err))
		}
	default:
		f, err := os.Open(src)
		if err != nil {
			return fail(e, fs.Name(), err)
		}
		names, err = readNames(f)
		f.Close()
		if err != nil {
			return fail(e, fs.Name(), fmt.Errorf("%s: %w", src, err))
		}
	}
	if len(names) == 0 {
		return fail(e, fs.Name(), errors.New("no names in the input (only blank lines and comments)"))
	}

	cl, err := af.client(e)
	if err != nil {
		return fail(e, fs.Name(), err)
	}
	if len(names) > 1 && (*together || strings.HasPrefix(names[0].name, "*")) {
		if src != "" {
			return usageError(e, fs.Name(), "one certificate for several names (--together, or a wildcard first) takes its names as arguments")
		}
		return addSet(ctx, e, fs, af, cl, names, *profile, *challenge, *asJSON)
	}
	size := *batch
	if size == 0 {
		size = batchSize(len(names))
	}
	mode := *progressMode
	if src == "" {
		mode = progressNone
	}
	prog := newProgress(mode, e.stderr, "names", len(names), e.now)
	rep := addReport{Invalid: []api.InvalidName{}}
	for start := 0; start < len(names); start += size {
		batch := names[start:min(start+size, len(names))]
		req := &api.AddDomainsRequest{Names: make([]string, len(batch)), Profile: *profile, Challenge: *challenge}
		for i, n := range batch {
			req.Names[i] = n.name
		}
		rctx, cancel := context.WithTimeout(ctx, *af.timeout)
		resp, err := cl.AddDomains(rctx, req)
		cancel()
		if err != nil {
			prog.finish(start)
			if rep.Added+rep.Existing > 0 {
				fmt.Fprintf(e.stderr, "certserver domains add: %d names were added and %d were managed already before the failure\n", rep.Added, rep.Existing)
			}
			return fail(e, fs.Name(), explain(cl, err))
		}
		rep.Added += resp.Added
		rep.Existing += resp.Existing
		rep.Updated += resp.Updated
		rep.InvalidCount += resp.InvalidCount
		for _, inv := range resp.Invalid {
			if inv.Line >= 1 && inv.Line <= len(batch) {
				inv.Line = batch[inv.Line-1].line
			}
			rep.Invalid = append(rep.Invalid, inv)
		}
		prog.update(start + len(batch))
	}
	prog.finish(len(names))

	printAddReport(e, rep, where, *asJSON)
	if rep.InvalidCount > 0 {
		return exitFailure
	}
	return exitOK
}

// addSet brings names, given as arguments, under management as one
// certificate: the first is the managed name, the others its extra names.
func addSet(ctx context.Context, e *env, fs *flagSet, af *adminFlags, cl *client.Client, names []inputName, profile, challenge string, asJSON bool) int {
	req := &api.AddDomainsRequest{Names: []string{names[0].name}, Profile: profile, Challenge: challenge}
	for _, n := range names[1:] {
		req.ExtraNames = append(req.ExtraNames, n.name)
	}
	rctx, cancel := context.WithTimeout(ctx, *af.timeout)
	resp, err := cl.AddDomains(rctx, req)
	cancel()
	if err != nil {
		return fail(e, fs.Name(), explain(cl, err))
	}
	rep := addReport{Added: resp.Added, Existing: resp.Existing, Updated: resp.Updated, Invalid: resp.Invalid, InvalidCount: resp.InvalidCount}
	printAddReport(e, rep, "argument", asJSON)
	if rep.InvalidCount > 0 {
		return exitFailure
	}
	if !asJSON {
		fmt.Fprintf(e.stdout, "one certificate: %s with %s\n", names[0].name, strings.Join(req.ExtraNames, ", "))
	}
	return exitOK
}

// printAddReport prints the report of `domains add`; where says what a
// position counts ("line", "argument").
func printAddReport(e *env, rep addReport, where string, asJSON bool) {
	if asJSON {
		printJSON(e.stdout, rep)
	} else {
		updated := ""
		if rep.Updated > 0 {
			updated = fmt.Sprintf(" (%d updated)", rep.Updated)
		}
		fmt.Fprintf(e.stdout, "%d added, %d existing%s, %d invalid\n", rep.Added, rep.Existing, updated, rep.InvalidCount)
		for _, inv := range rep.Invalid {
			fmt.Fprintf(e.stdout, "invalid: %s %d: %s: %s\n", where, inv.Line, strconv.Quote(inv.Name), inv.Error)
		}
		if n := rep.InvalidCount - len(rep.Invalid); n > 0 {
			fmt.Fprintf(e.stdout, "invalid: %d more not listed\n", n)
		}
	}
}

// readNames reads one name per line (api.NameInLine); a byte order mark
// before the first is dropped.
func readNames(r io.Reader) ([]inputName, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	var names []inputName
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if line == 1 {
			b = bytes.TrimPrefix(b, []byte("\ufeff"))
		}
		if name := api.NameInLine(b); len(name) > 0 {
			names = append(names, inputName{line: line, name: string(name)})
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("line %d is longer than %d bytes", line+1, maxLine)
		}
		return nil, err
	}
	return names, nil
}

const domainsShowHelp = `
Shows what certserver knows about one managed name: its state, when the
renewer next looks at it, its last failure, the certificate that serves it
now (its own or a wildcard's; never the key), and its last 10 attempts
(issued, failed, or refused by the pre-flight before the CA was asked).

A name whose certificate carries other names (an imported certbot
lineage) shows them as its extra names: each order asks for all of them.
Each of those names, when it is added too, shows the name it is managed
with: that name's certificate serves it and is renewed for it.

With [dns01.zone] configured, it shows the record the name's owner creates
once for DNS-01 through certserver's own zone (wildcards need DNS-01):
_acme-challenge.NAME. CNAME LABEL.ZONE. It can be handed over before the
name's DNS points here. It is shown for names whose challenge (their own,
or acme.challenge) is dns-01 or auto, and for wildcards.

States: pending (waiting for its first certificate), issuing, valid,
renewing, failing (retried at the next attempt), given_up (failed for
renewer.give_up_after; 'domains renew' tries again), removed.

Exit codes: 0 shown; 1 not managed, or the request failed; 2 bad command
line.
` + adminHelp + `
Examples:
  certserver domains show shop.example.com
  certserver domains show --json shop.example.com | jq -r .certificate.not_after
`

func runDomainsShow(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("domains show", "[flags] NAME", domainsShowHelp)
	asJSON := fs.Bool("json", false, "print the record as JSON")
	af := addAdminFlags(fs)
	name, code, ok := oneName(e, fs, args)
	if !ok {
		return code
	}
	d, code, ok := request(ctx, e, fs, af, func(ctx context.Context, cl *client.Client) (*api.Domain, error) {
		return cl.Domain(ctx, name)
	})
	if !ok {
		return code
	}
	if *asJSON {
		printJSON(e.stdout, d)
		return exitOK
	}
	now := e.now()
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	line := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	line("name", d.Name)
	if len(d.ExtraNames) > 0 {
		line("extra names", strings.Join(d.ExtraNames, ", ")+" (one certificate, renewed together)")
	}
	if d.ManagedWith != "" {
		line("managed with", d.ManagedWith+" (its certificate serves this name; renew or remove that name)")
	}
	line("state", d.State)
	line("profile", orDash(d.Profile, "(default)"))
	line("challenge", orDash(d.Challenge, "(default)"))
	line("source", orDash(d.Source, "-"))
	line("next attempt", when(d.NextAttempt, now))
	line("failures", strconv.Itoa(d.Failures))
	line("last error", orDash(d.LastError, "-"))
	line("failing since", when(d.FailingSince, now))
	if d.DNS01CNAME != "" {
		line("dns-01 record", d.DNS01CNAME+" (create once, in the name's DNS, for DNS-01 through certserver's zone)")
	}
	line("added", when(d.AddedAt, now))
	line("updated", when(d.UpdatedAt, now))
	if c := d.Certificate; c != nil {
		line("certificate", c.ID)
		line("  names", strings.Join(c.Names, ", "))
		line("  serial", c.Serial)
		line("  issuer", c.Issuer)
		line("  not before", when(c.NotBefore, now))
		line("  not after", when(c.NotAfter, now))
		line("  renew at", when(c.RenewAt, now))
		line("  key type", c.KeyType)
		src := c.Source
		if c.Origin != "" {
			src += " (" + c.Origin + ")"
		}
		line("  source", src)
	} else {
		line("certificate", "none yet")
	}
	if len(d.RecentAttempts) == 0 {
		line("recent attempts", "none")
	}
	for i, a := range d.RecentAttempts {
		k := ""
		if i == 0 {
			k = "recent attempts"
		}
		what := a.Outcome
		if a.Challenge != "" {
			what += " (" + a.Challenge + ")"
		}
		switch {
		case a.Serial != "":
			what += " serial " + a.Serial
		case a.Error != "":
			what += ": " + shorten(a.Error, maxErrorColumn)
		}
		line(k, fmt.Sprintf("%s (%dms) %s", when(a.At, now), a.TookMS, what))
	}
	tw.Flush()
	return exitOK
}

const domainsListHelp = `
Lists managed names in name order, a page at a time, as a table:

  NAME  STATE  NOT-AFTER  NEXT-ATTEMPT  LAST-ERROR

NOT-AFTER is when the certificate that serves the name expires (- for
none), NEXT-ATTEMPT when the renewer next looks at it, LAST-ERROR the last
failure, shortened. When more names follow, the command for the next page
is printed on standard error; --all follows every page instead.

Filters keep the names that match all of them. The server applies them
while it reads the names in order, so a filter that matches few names in
a large store reads many records (--expiring also reads each name's
certificate); the command asks for further pages until it has --limit
names or the names run out.

Exit codes: 0 listed; 1 the request failed; 2 bad command line.
` + adminHelp + `
Examples:
  certserver domains ls
  certserver domains ls --limit 1000 --after shop.example.com
  certserver domains ls --failing
  certserver domains ls --expiring 7d --state valid,renewing
  certserver domains ls --match shop --all --json | jq -r '.domains[].name'
`

// maxErrorColumn is the width LAST-ERROR is cut to in `domains ls`.
const maxErrorColumn = 60

func runDomainsList(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("domains ls", "[flags]", domainsListHelp)
	after := fs.String("after", "", "start after this `name` (the cursor printed with the previous page)")
	limit := fs.Int("limit", api.DefaultListLimit, "list at most `n` names (1 to "+strconv.Itoa(api.MaxListLimit)+"); with --all, per request")
	all := fs.Bool("all", false, "follow every page to the end")
	states := &statesFlag{}
	fs.Var(states, "state", "keep names in these `states`, separated by commas: pending, issuing, valid, renewing, failing, removed")
	expiring := windowVar(fs, "expiring", "", "keep names whose certificate expires within this `window` (7d, 72h)")
	failing := fs.Bool("failing", false, "keep names in a run of failed attempts")
	match := fs.String("match", "", "keep names that contain this `substring`")
	asJSON := fs.Bool("json", false, "print the page as JSON")
	af := addAdminFlags(fs)
	if code, ok := fs.parseNone(e, args); !ok {
		return code
	}
	if *limit < 1 || *limit > api.MaxListLimit {
		return usageError(e, fs.Name(), "--limit must be from 1 to %d", api.MaxListLimit)
	}
	opts := client.ListOptions{After: *after, Expiring: *expiring, Query: *match}
	if len(states.states) > 0 {
		opts.States = states.states
	}
	if *failing {
		opts.Failing = "true"
	}
	cl, err := af.client(e)
	if err != nil {
		return fail(e, fs.Name(), err)
	}
	l := &api.DomainList{Domains: []api.DomainSummary{}}
	for {
		opts.Limit = *limit
		if !*all {
			opts.Limit = *limit - len(l.Domains)
		}
		rctx, cancel := context.WithTimeout(ctx, *af.timeout)
		page, err := cl.Domains(rctx, opts)
		cancel()
		if err != nil {
			return fail(e, fs.Name(), explain(cl, err))
		}
		l.Domains = append(l.Domains, page.Domains...)
		l.Scanned += page.Scanned
		l.Next = page.Next
		if l.Next == "" || !*all && len(l.Domains) >= *limit {
			break
		}
		opts.After = l.Next
	}
	if *asJSON {
		printJSON(e.stdout, l)
		return exitOK
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tNOT-AFTER\tNEXT-ATTEMPT\tLAST-ERROR")
	for _, d := range l.Domains {
		notAfter := "-"
		if d.Certificate != nil {
			notAfter = stamp(d.Certificate.NotAfter)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Name, d.State, notAfter, stamp(d.NextAttempt), shorten(d.LastError, maxErrorColumn))
	}
	tw.Flush()
	if l.Next != "" {
		more := []string{"certserver domains ls", "--limit", strconv.Itoa(*limit)}
		if len(states.states) > 0 {
			more = append(more, "--state", states.String())
		}
		if *expiring != "" {
			more = append(more, "--expiring", *expiring)
		}
		if *failing {
			more = append(more, "--failing")
		}
		if *match != "" {
			more = append(more, "--match", shellQuote(*match))
		}
		fmt.Fprintf(e.stderr, "more: %s --after %s\n", strings.Join(more, " "), l.Next)
	}
	return exitOK
}

// shellQuote quotes s for a POSIX shell when it holds anything but
// letters, digits and "-._".
func shellQuote(s string) string {
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_') {
			return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
	}
	return s
}

const domainsRenewHelp = `
Renews a managed name's certificate now, even if it is not due: the name
goes ahead of the renewer's queue. The command returns at once; follow the
outcome with 'certserver domains show NAME'. When issuance is off
(acme.directory is not set) or the renewer's queue is full, the name is
only made due now. A name managed with another renews that name, whose
certificate serves both.

Exit codes: 0 accepted; 1 not managed, or the request failed; 2 bad
command line.
` + adminHelp + `
Example:
  certserver domains renew shop.example.com
`

func runDomainsRenew(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("domains renew", "[flags] NAME", domainsRenewHelp)
	af := addAdminFlags(fs)
	name, code, ok := oneName(e, fs, args)
	if !ok {
		return code
	}
	r, code, ok := request(ctx, e, fs, af, func(ctx context.Context, cl *client.Client) (*api.RenewResponse, error) {
		return cl.RenewDomain(ctx, name)
	})
	if !ok {
		return code
	}
	if r.Queued {
		fmt.Fprintf(e.stdout, "%s: renewal queued\n", r.Name)
	} else {
		fmt.Fprintf(e.stdout, "%s: due now, not queued (issuance is off, or the renewer's queue is full)\n", r.Name)
	}
	return exitOK
}

const domainsRemoveHelp = `
Stops managing a name: certserver no longer renews its certificate. The
record is kept with state "removed" (see 'certserver domains show'), and
the certificate stays stored and served until it expires or is deleted.
Adding the name again manages it again. A name managed with another
leaves that name's set: its next certificate no longer carries it, and
adding the name again manages it on its own. Removing a name that carries
extra names removes the names managed with it too.

--revoke REASON first revokes the certificate that serves the name at the
CA (see 'certserver domains revoke --help' for the reasons); when that
fails, nothing is removed. Other managed names the certificate served are
made due for new certificates.

Exit codes: 0 removed (or removed already); 1 not managed, the
revocation failed, or the request failed; 2 bad command line.
` + adminHelp + `
Examples:
  certserver domains rm old-shop.example.com
  certserver domains rm --revoke cessationOfOperation old-shop.example.com
`

func runDomainsRemove(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("domains rm", "[flags] NAME", domainsRemoveHelp)
	revoke := reasonVar(fs, "revoke", "revoke the certificate first, for this RFC 5280 `reason` (keyCompromise, superseded, …)")
	asJSON := fs.Bool("json", false, "print the record as JSON")
	af := addAdminFlags(fs)
	name, code, ok := oneName(e, fs, args)
	if !ok {
		return code
	}
	d, code, ok := request(ctx, e, fs, af, func(ctx context.Context, cl *client.Client) (*api.Domain, error) {
		return cl.RemoveDomain(ctx, name, *revoke)
	})
	if !ok {
		return code
	}
	if *asJSON {
		printJSON(e.stdout, d)
		return exitOK
	}
	if r := d.Revoked; r != nil {
		fmt.Fprintf(e.stdout, "%s: removed; %s\n", d.Name, r.Message)
	} else if c := d.Certificate; c != nil {
		fmt.Fprintf(e.stdout, "%s: removed; its certificate %s (expires %s) is still served until it expires or is deleted\n", d.Name, c.ID, day(c.NotAfter))
	} else {
		fmt.Fprintf(e.stdout, "%s: removed\n", d.Name)
	}
	return exitOK
}

// oneName parses the flags of a command that takes exactly one NAME.
func oneName(e *env, fs *flagSet, args []string) (string, int, bool) {
	rest, code, ok := fs.parse(e, args)
	if !ok {
		return "", code, false
	}
	switch len(rest) {
	case 0:
		return "", usageError(e, fs.Name(), "no NAME given"), false
	case 1:
		return rest[0], 0, true
	}
	return "", usageError(e, fs.Name(), "one NAME only; got %d", len(rest)), false
}

// printJSON prints v as indented JSON.
func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// stamp formats a time for a table, "-" when it is not set.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04")
}

// when formats a time in full with how far it is from now, "-" when it is
// not set.
func when(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now)
	rel := "now"
	switch {
	case d >= time.Second:
		rel = "in " + roughly(d)
	case d <= -time.Second:
		rel = roughly(-d) + " ago"
	}
	return t.UTC().Format(time.RFC3339) + " (" + rel + ")"
}

// roughly formats a positive duration in its largest unit: "3d", "5h",
// "12m", "40s".
func roughly(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	case d >= time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	case d >= time.Minute:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	}
	return strconv.Itoa(int(d/time.Second)) + "s"
}

// orDash returns s, or alt when s is empty.
func orDash(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// shorten cuts s to n runes on one line, "-" when it is empty.
func shorten(s string, n int) string {
	if s == "" {
		return "-"
	}
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
