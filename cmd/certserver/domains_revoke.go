package main

import (
	"context"
	"fmt"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
)

const domainsRevokeHelp = `
Revokes the certificate that serves a managed name at the CA that issued
it (RFC 8555 section 7.6), then has a new certificate ordered at once: the
name, and every other managed name the certificate served, are made due
now. The revoked certificate stays served until the new one is stored;
nginx caches it for up to certs.max_age.

--reason is required; the RFC 5280 reasons are:
  unspecified (0)  keyCompromise (1)  cACompromise (2)  affiliationChanged (3)
  superseded (4)  cessationOfOperation (5)  certificateHold (6)
  removeFromCRL (8)  privilegeWithdrawn (9)  aACompromise (10)
by name (any case) or code. Let's Encrypt accepts 0, 1, 3, 4 and 5 from
subscribers; the CA's refusal is reported in its own words.

With reason keyCompromise the key is treated as stolen wherever it is
used. With [keys] reuse = "pool" one key serves many certificates: it
is removed from the key pool (no new certificate takes it), and every
other certificate on the same key (found by reading every stored
record) is made due for renewal now, with its managed names, onto new
keys, at the renewer's pace. Those other certificates are NOT revoked;
the CA may revoke them too, since they share the key. The answer says
how many there were. That takes time with many certificates on one key
(20,000 in about 13 s): raise --timeout; if the command gives up first,
the sidecar still finishes and logs "compromised key retired" with the
counts.

Only the ACME account that ordered a certificate may revoke it: an
imported certificate from another CA or account is refused by the CA.
The command waits for the CA's answer (up to --timeout).

Exit codes: 0 revoked; 1 not managed, no certificate, the CA refused or
failed, or the request failed; 2 bad command line.
` + adminHelp + `
Examples:
  certserver domains revoke --reason keyCompromise shop.example.com
  certserver domains revoke --reason 4 --json shop.example.com
`

func runDomainsRevoke(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("domains revoke", "--reason REASON [flags] NAME", domainsRevokeHelp)
	reason := reasonVar(fs, "reason", "the RFC 5280 `reason`, by name (keyCompromise) or code (1); required")
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	af := addAdminFlags(fs)
	name, code, ok := oneName(e, fs, args)
	if !ok {
		return code
	}
	if *reason == "" {
		return usageError(e, fs.Name(), "--reason is required (keyCompromise, superseded, cessationOfOperation, …)")
	}
	r, code, ok := request(ctx, e, fs, af, func(ctx context.Context, cl *client.Client) (*api.Revocation, error) {
		return cl.RevokeDomain(ctx, name, *reason)
	})
	if !ok {
		return code
	}
	if *asJSON {
		printJSON(e.stdout, r)
		return exitOK
	}
	fmt.Fprintf(e.stdout, "%s: %s\n", r.Name, r.Message)
	return exitOK
}
