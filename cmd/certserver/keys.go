package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
	"github.com/certserver/certserver/store/sealed"
)

// The admin API rotates keys through the store decorator serve wraps
// every store in.
var _ certserver.KeyRotator = (*sealed.Store)(nil)

const keysHelp = `
Manages the key-encryption keys that encrypt the private keys certserver
stores (certificates', ACME accounts' and the key pool's), when [store]
key_encryption_key_file is set.

Subcommands:
  generate  print a new key line to append to the key file
  rotate    re-encrypt every stored private key under the current key,
            through the admin API of a running ` + "`certserver serve`" + `

Rotating to a new key:
  1. certserver keys generate >> /etc/certserver/kek   (the last line is
     the current key: it encrypts every write; every line decrypts)
  2. restart certserver serve, so that it reads the file again
  3. certserver keys rotate
  4. remove the old line from the file, and restart again

Run 'certserver keys <subcommand> --help' for flags and examples.
`

// keysCommands are the subcommands of `certserver keys`.
func keysCommands() []command {
	return []command{
		{"generate", "print a new key-encryption key line", runKeysGenerate},
		{"rotate", "re-encrypt stored private keys under the current key", runKeysRotate},
	}
}

func runKeys(ctx context.Context, e *env, args []string) int {
	return runGroup(ctx, e, "keys", "<subcommand> [flags]", keysHelp, keysCommands(), args)
}

const keysGenerateHelp = `
Prints a new key-encryption key line, "ID KEY": an ID made of today's date
and random hex digits, and 32 random bytes (AES-256) in base64. Append it to
the file [store] key_encryption_key_file names; the last line of the file
is the key new writes are encrypted under. Keep the file readable by the
certserver user only (chmod 600): a key that is lost makes the private keys
encrypted under it unreadable, so keep a copy where the store's backups are
not.

Examples:
  install -m 600 /dev/null /etc/certserver/kek
  certserver keys generate >> /etc/certserver/kek
`

func runKeysGenerate(_ context.Context, e *env, args []string) int {
	fs := newFlagSet("keys generate", "", keysGenerateHelp)
	if code, ok := fs.parseNone(e, args); !ok {
		return code
	}
	line, err := sealed.GenerateKey(e.now())
	if err != nil {
		return fail(e, "keys generate", err)
	}
	fmt.Fprintln(e.stdout, line)
	return exitOK
}

const keysRotateHelp = `
Re-encrypts every stored private key (certificates', then ACME accounts',
then the keys of the key pool of [keys] reuse = "pool") under the current
key-encryption key, the last line of the key file the running server read
at its start, a batch at a time through the admin API
(POST /v1/keys/rotate) while the server goes on serving. Keys stored before
encryption was turned on are encrypted; keys already under the current key
are checked and left as they are, so running it again is harmless and
cheap. A key that cannot be decrypted (encrypted under a key the file no
longer holds, or damaged) is reported and left as it is; the command then
exits 1. Once it reports none, the old key's line can be removed.

On a fleet host it re-encrypts the fleet's database (its certificates,
accounts and key pool), once for every host: each host's copy takes the
certificates' new keys as it follows the database. The summary counts
each kind of record.

An interrupted rotation can be run again from the start, or resumed with
--from and the cursor it printed.

Examples:
  certserver keys rotate
  certserver keys rotate --batch 200 --progress lines
`

func runKeysRotate(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("keys rotate", "[flags]", keysRotateHelp+adminHelp)
	af := addAdminFlags(fs)
	batch := fs.Int("batch", api.DefaultRotateBatch, fmt.Sprintf("re-encrypt at most `n` records per request (1 to %d)", api.MaxRotateBatch))
	from := fs.String("from", "", "resume after the `cursor` an interrupted rotation printed")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	progressMode := fs.String("progress", progressAuto, "report progress on standard error: `mode` auto (a bar on a terminal, else a line every "+progressInterval.String()+"), bar, lines or none")
	if code, ok := fs.parseNone(e, args); !ok {
		return code
	}
	if *batch < 1 || *batch > api.MaxRotateBatch {
		return usageError(e, "keys rotate", "--batch must be 1 to %d", api.MaxRotateBatch)
	}
	switch *progressMode {
	case progressAuto, progressBar, progressLines, progressNone:
	default:
		return usageError(e, "keys rotate", "--progress must be auto, bar, lines or none")
	}
	cl, err := af.client(e)
	if err != nil {
		return fail(e, "keys rotate", err)
	}
	defer cl.CloseIdleConnections()

	start := e.now()
	sum := rotateSummary{Cursor: *from, Kinds: map[string]*kindSummary{}}
	var prog *progress
	for {
		r, err := rotateBatch(ctx, cl, sum.Cursor, *batch, *af.timeout)
		if err != nil {
			prog.clear()
			if sum.Cursor != "" {
				fmt.Fprintf(e.stderr, "certserver keys rotate: stopped; resume with --from '%s'\n", sum.Cursor)
			}
			return fail(e, "keys rotate", explain(cl, err))
		}
		if prog == nil && r.Total > 0 {
			prog = newProgress(*progressMode, e.stderr, "records", r.Total, e.now)
		}
		sum.KeyID = r.KeyID
		sum.Scanned += r.Scanned
		sum.Resealed += r.Resealed
		if r.Kind != "" {
			k := sum.Kinds[r.Kind]
			if k == nil {
				k = &kindSummary{}
				sum.Kinds[r.Kind] = k
			}
			k.Scanned += r.Scanned
			k.Resealed += r.Resealed
		}
		if len(r.Failed) > 0 {
			prog.clear()
			for _, f := range r.Failed {
				fmt.Fprintf(e.stderr, "%s %s: %s\n", f.Kind, f.ID, f.Error)
			}
			sum.Failed = append(sum.Failed, r.Failed...)
		}
		prog.update(sum.Scanned)
		if r.Done {
			prog.finish(sum.Scanned)
			break
		}
		sum.Cursor = r.Next
	}
	sum.Cursor = ""
	sum.Took = e.now().Sub(start).Round(time.Millisecond).String()
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(sum)
	} else {
		fmt.Fprintf(e.stdout, "rotated to key %s: %d records read, %d re-encrypted, %d already under it, %d could not be decrypted (%s)\n",
			sum.KeyID, sum.Scanned, sum.Resealed, sum.Scanned-sum.Resealed-len(sum.Failed), len(sum.Failed), sum.Took)
		fmt.Fprintln(e.stdout, sum.byKind())
	}
	if len(sum.Failed) > 0 {
		if !*asJSON {
			fmt.Fprintf(e.stdout, "%d records could not be decrypted (listed above): they stay under their old key; keep that key in the file, or replace those certificates\n", len(sum.Failed))
		}
		return exitFailure
	}
	return exitOK
}

// rotateSummary is what `keys rotate` did, for its last lines and --json.
type rotateSummary struct {
	KeyID    string `json:"key_id"`
	Scanned  int    `json:"scanned"`
	Resealed int    `json:"resealed"`
	// Kinds splits Scanned and Resealed by the kind of record
	// ("certificate", "account", "pool").
	Kinds  map[string]*kindSummary `json:"kinds"`
	Failed []api.KeyFailure        `json:"failed,omitempty"`
	Cursor string                  `json:"-"`
	Took   string                  `json:"took"`
}

// kindSummary is what `keys rotate` did to the records of one kind.
type kindSummary struct {
	Scanned  int `json:"scanned"`
	Resealed int `json:"resealed"`
}

// rotateKinds names the kinds of record of a rotation, in the order it
// reads them, for its summary.
var rotateKinds = []struct{ kind, plural string }{
	{"certificate", "certificates"}, {"account", "ACME accounts"}, {"pool", "key pool keys"},
}

// byKind returns the summary's line of counts by kind of record:
// "certificates: 1200 read, 1200 re-encrypted; …", the kinds of
// rotateKinds first, then any other the sidecar reported (a newer one's),
// by its own name.
func (s *rotateSummary) byKind() string {
	var parts []string
	line := func(name string, n *kindSummary) {
		if n == nil {
			n = &kindSummary{}
		}
		parts = append(parts, fmt.Sprintf("%s: %d read, %d re-encrypted", name, n.Scanned, n.Resealed))
	}
	known := map[string]bool{}
	for _, k := range rotateKinds {
		line(k.plural, s.Kinds[k.kind])
		known[k.kind] = true
	}
	for _, kind := range slices.Sorted(maps.Keys(s.Kinds)) {
		if !known[kind] {
			line(kind, s.Kinds[kind])
		}
	}
	return strings.Join(parts, "; ")
}

// rotateBatch asks for one batch of the rotation, bounded by timeout.
func rotateBatch(ctx context.Context, cl *client.Client, cursor string, limit int, timeout time.Duration) (*api.KeyRotation, error) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return cl.RotateKeys(rctx, cursor, limit)
}
