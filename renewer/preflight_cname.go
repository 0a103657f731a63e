package renewer

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/certserver/certserver/renewer/dnszone"
	"github.com/miekg/dns"
)

// CheckZoneCNAME checks, before a DNS-01 order through certserver's own
// zone z (renewer/dnszone), that the CA will find the zone's values for
// name (a normalized host name or wildcard): that _acme-challenge.<name>
// is a CNAME to z.Target(name), directly or through a chain of CNAMEs, as
// DNS answers the Resolver's questions.
//
// It returns nil when it is; else a *PreflightError of step StepCNAME
// whose reason names the exact record to create (z.Record(name)):
// permanent when DNS says the record is missing or points elsewhere,
// transient when DNS could not be read. The name then
// waits with that reason in its state, so the hoster can hand the record
// to the customer before the customer's DNS points at the fleet.
func (p *Preflight) CheckZoneCNAME(ctx context.Context, z dnszone.Zone, name string) error {
	name = canonical(name)
	owner := dnszone.ChallengeName(name)
	want := z.Target(name)
	refuse := func(reason string) error {
		return &PreflightError{Name: name, Step: StepCNAME, Kind: KindPermanent,
			Reason: reason + "; create the record " + z.Record(name)}
	}
	at := owner
	var chain []string
	for range maxCNAMEHops {
		msg, err := p.resolver.Query(ctx, at, dns.TypeCNAME)
		switch {
		case errors.Is(err, ErrNoSuchName) && at == owner:
			return refuse(fmt.Sprintf("%s does not exist (NXDOMAIN)", owner))
		case errors.Is(err, ErrNoSuchName):
			return refuse(fmt.Sprintf("%s is a CNAME to %s, which does not exist", owner, strings.Join(chain, " → ")))
		case err != nil:
			return &PreflightError{Name: name, Step: StepCNAME, Kind: KindTransient, Err: err,
				Reason: fmt.Sprintf("cannot read the CNAME of %s (%v); will try again; the record it needs is %s", owner, err, z.Record(name))}
		}
		next := ""
		for _, rr := range msg.Answer {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(canonical(c.Hdr.Name), at) {
				next = canonical(c.Target)
			}
		}
		switch {
		case next == want:
			return nil
		case next == "" && at == owner:
			return refuse(fmt.Sprintf("%s has no CNAME record", owner))
		case next == "":
			return refuse(fmt.Sprintf("%s is a CNAME to %s, not to %s", owner, strings.Join(chain, " → "), want))
		case strings.HasSuffix(next, "."+z.Name()):
			// Into the zone, but another label: another name's record
			// copied, or the label of the name without its wildcard.
			return refuse(fmt.Sprintf("%s is a CNAME to %s, not to %s", owner, strings.Join(append(chain, next), " → "), want))
		}
		chain = append(chain, next)
		at = next
	}
	return refuse(fmt.Sprintf("%s is a chain of more than %d CNAMEs", owner, maxCNAMEHops))
}
