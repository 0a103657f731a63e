package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"text/tabwriter"
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

Every certificate is checked here first, then uploaded. One line per
certificate reports:

  imported    stored (new, or replacing an older one)
  unchanged   the same certificate was stored already
  skipped     not imported, with the reason: expired, key does not match,
              unreadable, not a certificate, bad key, a newer certificate
              is stored, …

Re-running an import is harmless. The exit code is 0 when at least one
certificate was imported or was already there, 1 when none was, 2 for a
bad command line.
` + adminHelp + `
Examples:
  certserver import /etc/letsencrypt
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
	timeout := positiveDurationVar(fs, "timeout", 30*time.Second, "give up on one upload after this `duration`")
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

	var cl *client.Client
	if !*dryRun {
		c, err := adminClient(e, *adminURL, *tokenFile, *configPath, *timeout)
		if err != nil {
			return fail(e, "import", err)
		}
		cl = c
	}

	var items []importItem
	for _, p := range paths {
		items = append(items, findImports(p)...)
	}
	if *certFile != "" {
		items = append(items, readPair(*certFile, *keyFile))
	}

	outcomes := make([]importOutcome, 0, len(items))
	var fatal error
	for _, it := range items {
		if fatal != nil {
			outcomes = append(outcomes, importOutcome{Path: it.path, Result: api.ResultSkipped, Reason: reasonUnreachable})
			continue
		}
		o, err := importOne(ctx, e, cl, it, *timeout)
		if err != nil {
			fatal = err
		}
		outcomes = append(outcomes, o)
	}

	if *asJSON {
		printImportJSON(e.stdout, outcomes)
	} else {
		printImportTable(e.stdout, outcomes)
	}
	if fatal != nil {
		return fail(e, "import", fatal)
	}
	for _, o := range outcomes {
		if o.Result == api.ResultImported || o.Result == api.ResultUnchanged || o.Result == resultValid {
			return exitOK
		}
	}
	return exitFailure
}

// importOne checks one item and uploads it. It returns an error only when
// going on makes no sense: the admin API is unreachable or refuses the
// token.
func importOne(ctx context.Context, e *env, cl *client.Client, it importItem, timeout time.Duration) (importOutcome, error) {
	o := importOutcome{Path: it.path, Result: api.ResultSkipped}
	if it.err != nil {
		o.Reason, o.Detail = reasonUnreadable, unreadable(it.err)
		o.ID, o.NotAfter = peekLeaf(it.chain)
		return o, nil
	}
	c, err := store.ParseCertificate(it.chain, it.key, e.now())
	if err != nil {
		o.Reason, o.Detail = certserver.ImportReason(err), err.Error()
		o.ID, o.NotAfter = peekLeaf(it.chain)
		return o, nil
	}
	o.ID, o.Names, o.NotAfter = c.ID, c.Names, c.NotAfter
	if cl == nil {
		o.Result = resultValid
		return o, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := cl.ImportCertificate(ctx, &api.ImportRequest{
		ChainPEM: string(it.chain), KeyPEM: string(it.key), Source: it.source, Origin: it.path,
	})
	var ae *api.Error
	switch {
	case errors.Is(err, client.ErrUnreachable):
		o.Reason = reasonUnreachable
		return o, fmt.Errorf("%w (is `certserver serve` running?)", err)
	case errors.As(err, &ae) && ae.Status == 401:
		o.Reason = reasonUnreachable
		return o, fmt.Errorf("the admin API at %s refused the token: %s (check --token-file, CERTSERVER_ADMIN_TOKEN or admin.token_file)", cl.URL(), ae.Message)
	case errors.As(err, &ae):
		o.Reason, o.Detail = ae.Reason, ae.Message
		if o.Reason == "" {
			o.Reason = "refused"
		}
		return o, nil
	case err != nil:
		o.Reason, o.Detail = "failed", err.Error()
		return o, nil
	}
	o.Result, o.Reason = resp.Result, resp.Reason
	if resp.Result == api.ResultSkipped && !resp.StoredNotAfter.IsZero() {
		o.Detail = "the stored one expires " + day(resp.StoredNotAfter)
	}
	return o, nil
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
	case e.getenv("CERTSERVER_ADMIN_TOKEN") != "":
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

// printImportTable prints one line per outcome and a summary line.
func printImportTable(w io.Writer, outcomes []importOutcome) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RESULT\tNAME\tEXPIRES\tPATH\tDETAIL")
	for _, o := range outcomes {
		name, expires := "-", "-"
		if o.ID != "" {
			name = o.ID
			if len(o.Names) > 1 {
				name += fmt.Sprintf(" (+%d)", len(o.Names)-1)
			}
		}
		if !o.NotAfter.IsZero() {
			expires = day(o.NotAfter)
		}
		detail := o.Reason
		if o.Detail != "" && o.Reason != api.ReasonExpired && o.Reason != api.ReasonKeyMismatch {
			if detail != "" {
				detail += ": "
			}
			detail += o.Detail
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.Result, name, expires, o.Path, detail)
	}
	tw.Flush()
	fmt.Fprintln(w, summary(outcomes))
}

// printImportJSON prints the outcomes and their summary as one JSON document.
func printImportJSON(w io.Writer, outcomes []importOutcome) {
	doc := struct {
		Items   []importOutcome `json:"items"`
		Summary map[string]int  `json:"summary"`
	}{outcomes, counts(outcomes)}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(doc)
}

// counts counts the outcomes by result.
func counts(outcomes []importOutcome) map[string]int {
	m := map[string]int{}
	for _, o := range outcomes {
		m[o.Result]++
	}
	return m
}

// summary is the last line of the report: "3 certificates: 1 imported,
// 1 unchanged, 1 skipped".
func summary(outcomes []importOutcome) string {
	m := counts(outcomes)
	var parts []string
	for _, r := range []string{resultValid, api.ResultImported, api.ResultUnchanged, api.ResultSkipped} {
		if n := m[r]; n > 0 || r == api.ResultSkipped || (r != resultValid && m[resultValid] == 0) {
			parts = append(parts, fmt.Sprintf("%d %s", n, r))
		}
	}
	noun := "certificates"
	if len(outcomes) == 1 {
		noun = "certificate"
	}
	return fmt.Sprintf("%d %s: %s", len(outcomes), noun, strings.Join(parts, ", "))
}

// day formats a time as its UTC date.
func day(t time.Time) string { return t.UTC().Format("2006-01-02") }
