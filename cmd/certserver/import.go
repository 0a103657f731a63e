package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
	"github.com/certserver/certserver/store"
)

const importHelp = `
Imports existing certificates into a running certserver, through its admin
API. Each PATH is one of:

  - a certbot configuration directory (e.g. /etc/letsencrypt): every
    lineage in its live/ directory, read from fullchain.pem and privkey.pem;
  - one certbot lineage directory (e.g. /etc/letsencrypt/live/example.com);
  - a PEM file holding a certificate chain and its private key.

A chain and a key in separate files are given with --cert and --key.

Lineages are read and uploaded as they are found, in batches of up to
500 certificates (--batch N), each one request to the admin API
(POST /v1/certificates/batch) that the server checks and stores in one
commit before it answers: memory stays the same whatever the size of the
tree, and an import that is interrupted keeps every batch that was
answered. One line per certificate reports, as the batches come back:

  imported    stored (new, or replacing an older one)
  unchanged   the same certificate was stored already
  skipped     not imported, with the reason: expired, key does not match,
              unreadable, not a certificate, bad key, a newer certificate
              is stored, …

Progress goes to standard error (--progress): a bar with the rate and the
time left on a terminal, else a line every 5s and one at the end.
--dry-run checks every certificate here and uploads nothing.

Re-running an import is harmless, an interrupted one too: what was
stored reports as unchanged, the rest is imported. The exit code is 0
when at least one certificate was imported or was already there, 1 when
none was, 2 for a bad command line.
` + adminHelp + `
Examples:
  certserver import /etc/letsencrypt
  certserver import /etc/letsencrypt > import-report.txt
  certserver import /etc/letsencrypt/live/example.com /etc/ssl/private/shop.pem
  certserver import --cert /etc/ssl/shop.crt --key /etc/ssl/shop.key
  certserver import --dry-run /etc/letsencrypt
  certserver import --admin http://127.0.0.1:9400 --token-file /etc/certserver/admin.token /etc/letsencrypt
`

// importOutcome is the report of one item.
type importOutcome struct {
	Path     string    `json:"path"`
	Result   string    `json:"result"`
	Reason   string    `json:"reason,omitempty"`
	Detail   string    `json:"detail,omitempty"`
	ID       string    `json:"id,omitempty"`
	Names    []string  `json:"names,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
}

// Results reported by the import command besides the api.Result… ones.
const (
	resultValid       = "valid"        // --dry-run: would be uploaded
	reasonUnreadable  = "unreadable"   // the files could not be read
	reasonUnreachable = "not uploaded" // the admin API stopped answering
)

func runImport(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("import", "[flags] PATH...", importHelp)
	adminURL := fs.String("admin", "", "the admin API `URL` (default from $CERTSERVER_ADMIN, the config file, else http://"+certserver.DefaultAdminListen+")")
	tokenFile := fs.String("token-file", "", "read the admin token from `file` (default from $CERTSERVER_ADMIN_TOKEN(_FILE) or the config file)")
	configPath := fs.String("config", "", "read the admin address and token file from this configuration `file` (default "+defaultConfigPath+" if it exists)")
	certFile := fs.String("cert", "", "a certificate chain `file` to import, with --key")
	keyFile := fs.String("key", "", "the private key `file` of --cert")
	dryRun := fs.Bool("dry-run", false, "check the certificates without uploading them")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	timeout := positiveDurationVar(fs, "timeout", 30*time.Second, "give up on one upload (a batch) after this `duration`")
	batch := fs.Int("batch", defaultImportBatch, fmt.Sprintf("upload at most `n` certificates per request (1 to %d)", api.MaxImportBatch))
	progressMode := fs.String("progress", progressAuto, "report progress on standard error: `mode` auto (a bar on a terminal, else a line every "+progressInterval.String()+"), bar, lines or none")
	paths, code, ok := fs.parse(e, args)
	if !ok {
		return code
	}
	if (*certFile == "") != (*keyFile == "") {
		return usageError(e, "import", "--cert and --key go together")
	}
	if len(paths) == 0 && *certFile == "" {
		return usageError(e, "import", "no PATH given (a certbot directory, a lineage or a PEM file)")
	}
	if *batch < 1 || *batch > api.MaxImportBatch {
		return usageError(e, "import", "--batch must be 1 to %d", api.MaxImportBatch)
	}
	switch *progressMode {
	case progressAuto, progressBar, progressLines, progressNone:
	default:
		return usageError(e, "import", "--progress must be auto, bar, lines or none")
	}

	im := &importer{e: e, timeout: *timeout, batch: *batch, now: e.now()}
	if !*dryRun {
		c, err := adminClient(e, *adminURL, *tokenFile, *configPath, *timeout)
		if err != nil {
			return fail(e, "import", err)
		}
		im.cl = c
		// Two uploads in flight leave connections open; the import is over.
		defer c.CloseIdleConnections()
	}
	walk := func(yield func(importItem) bool) {
		for _, p := range paths {
			if !walkImports(p, yield) {
				return
			}
		}
		if *certFile != "" {
			yield(pairItem(*certFile, *keyFile))
		}
	}
	total := 0
	walk(func(importItem) bool { total++; return true })
	prog := newProgress(*progressMode, e.stderr, "certificates", total, e.now)
	if prog != nil {
		prog.eta = true
	}
	rep := newImportReport(e.stdout, *asJSON, prog)
	fatal := im.run(ctx, walk, rep.add)
	rep.finish()
	if fatal != nil {
		return fail(e, "import", fatal)
	}
	if rep.counts[api.ResultImported]+rep.counts[api.ResultUnchanged]+rep.counts[resultValid] > 0 {
		return exitOK
	}
	return exitFailure
}

// outcome turns the result of one certificate of an uploaded batch into
// its report.
func outcome(it *importItem, r *api.ImportResult) importOutcome {
	o := importOutcome{Path: it.path, Result: r.Result, Reason: r.Reason, ID: r.ID, Names: r.Names, NotAfter: r.NotAfter}
	switch r.Result {
	case api.ResultRefused:
		o.Result, o.Detail = api.ResultSkipped, r.Error
		if o.Reason == "" {
			o.Reason = "refused"
		}
		o.ID, o.NotAfter = peekLeaf(it.chain)
	case api.ResultSkipped:
		if !r.StoredNotAfter.IsZero() {
			o.Detail = "the stored one expires " + day(r.StoredNotAfter)
		}
	}
	return o
}

// checkLocally is the report of one item of a dry run: the checks the
// server would make, here.
func checkLocally(it *importItem, now time.Time) importOutcome {
	o := importOutcome{Path: it.path, Result: api.ResultSkipped}
	if it.err != nil {
		o.Reason, o.Detail = reasonUnreadable, unreadable(it.err)
		o.ID, o.NotAfter = peekLeaf(it.chain)
		return o
	}
	c, err := store.ParseCertificate(it.chain, it.key, now)
	if err != nil {
		o.Reason, o.Detail = certserver.ImportReason(err), err.Error()
		o.ID, o.NotAfter = peekLeaf(it.chain)
		return o
	}
	o.Result, o.ID, o.Names, o.NotAfter = resultValid, c.ID, c.Names, c.NotAfter
	return o
}

// batchError is the report of every certificate of a batch the server did
// not answer, and whether the import should stop: the admin API is
// unreachable or refuses the token.
func batchError(cl *client.Client, err error) (reason, detail string, fatal error) {
	var ae *api.Error
	switch {
	case errors.Is(err, client.ErrUnreachable):
		return reasonUnreachable, "", fmt.Errorf("%w (is `certserver serve` running?)", err)
	case errors.As(err, &ae) && ae.Status == 401:
		return reasonUnreachable, "", fmt.Errorf("the admin API at %s refused the token: %s (check --token-file, CERTSERVER_ADMIN_TOKEN or admin.token_file)", cl.URL(), ae.Message)
	case errors.As(err, &ae):
		reason = ae.Reason
		if reason == "" {
			reason = "refused"
		}
		return reason, ae.Message, nil
	}
	return "failed", err.Error() + " (the batch may or may not have been stored: run the import again)", nil
}

// adminClient builds the admin API client from the flags, the environment
// and the configuration file, in that order. Each of its requests gives up
// after timeout.
func adminClient(e *env, adminURL, tokenFile, configPath string, timeout time.Duration) (*client.Client, error) {
	var cfg *config
	if configPath != "" || adminURL == "" || (tokenFile == "" && e.getenv("CERTSERVER_ADMIN_TOKEN") == "" && e.getenv("CERTSERVER_ADMIN_TOKEN_FILE") == "") {
		path := configPath
		if path == "" {
			path = defaultConfigPath
		}
		c, err := loadConfig(path)
		switch {
		case err == nil:
			cfg = &c
		case configPath != "" || !errors.Is(err, fs.ErrNotExist):
			return nil, err
		}
	}

	switch {
	case adminURL != "":
	case e.getenv("CERTSERVER_ADMIN") != "":
		adminURL = e.getenv("CERTSERVER_ADMIN")
	case cfg != nil:
		adminURL = cfg.Admin.Listen
	default:
		adminURL = certserver.DefaultAdminListen
	}

	var token string
	var err error
	switch {
	case tokenFile != "":
		token, err = readTokenFile(tokenFile)
	case strings.TrimSpace(e.getenv("CERTSERVER_ADMIN_TOKEN")) != "": // white space alone is unset (envToken)
		token, err = envToken(e)
	case e.getenv("CERTSERVER_ADMIN_TOKEN_FILE") != "":
		token, err = readTokenFile(e.getenv("CERTSERVER_ADMIN_TOKEN_FILE"))
	case cfg != nil && cfg.Admin.TokenFile != "":
		token, err = readTokenFile(cfg.Admin.TokenFile)
	default:
		return nil, errors.New("no admin token: use --token-file FILE, CERTSERVER_ADMIN_TOKEN, CERTSERVER_ADMIN_TOKEN_FILE or --config FILE")
	}
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	return client.New(adminURL, token, &http.Client{Timeout: timeout})
}

// summary is the last line of the report, from the counts by result:
// "3 certificates: 1 imported, 1 unchanged, 1 skipped".
func summary(m map[string]int) string {
	total := 0
	for _, n := range m {
		total += n
	}
	var parts []string
	for _, r := range []string{resultValid, api.ResultImported, api.ResultUnchanged, api.ResultSkipped} {
		if n := m[r]; n > 0 || r == api.ResultSkipped || (r != resultValid && m[resultValid] == 0) {
			parts = append(parts, fmt.Sprintf("%d %s", n, r))
		}
	}
	noun := "certificates"
	if total == 1 {
		noun = "certificate"
	}
	return fmt.Sprintf("%d %s: %s", total, noun, strings.Join(parts, ", "))
}

// day formats a time as its UTC date.
func day(t time.Time) string { return t.UTC().Format("2006-01-02") }
