package renewer

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/certserver/certserver/renewer/dnszone"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/hostname"
)

// StepChallenge is the PreflightError.Step of a name refused because the
// challenge it needs cannot be answered with the configuration.
const StepChallenge = "challenge"

// Challenges says which ACME challenges the renewer's issuers answer and
// which one a name gets when its record names none. It is the one place
// that decides a name's challenge (Choose). The zero value answers
// http-01 only, the default.
type Challenges struct {
	// Default is the challenge of names whose record names none
	// (store.Domain.Challenge ""). Default "": http-01.
	Default store.ChallengeType
	// Off maps each challenge the issuers cannot answer to why not, in
	// words for an operator ("no [dns01] provider or zone is
	// configured"). A challenge not in Off is answered. Default nil:
	// every challenge is answered.
	Off map[store.ChallengeType]string
	// Zone is certserver's own delegated zone ([dns01.zone],
	// renewer/dnszone), nil when there is none. A name whose
	// _acme-challenge is a CNAME into it proves dns-01 through it (Route),
	// and auto picks dns-01 for such a name.
	Zone *dnszone.Zone
	// Provider says a DNS provider (ACMEConfig.DNS01) sets the TXT
	// records of the names that do not delegate to Zone. Without one, a
	// dns-01 name must delegate to Zone.
	Provider bool
}

// route is how an order proves control: the challenge, and for dns-01
// whether through Zone.
type route struct {
	challenge store.ChallengeType
	viaZone   bool
}

// Route returns how the order for names (the managed name first), whose
// record asks for asked, proves control: Choose's challenge, and for
// dns-01 whether through the zone. It reads the names' _acme-challenge
// CNAMEs through p (the pre-flight's resolver; nil trusts the zone
// unless a provider is configured). With a zone configured:
//
//   - auto takes dns-01 through the zone when every name delegates to it;
//   - dns-01 goes through the zone when every name delegates to it, else
//     through the provider; without a provider, a name that does not
//     delegate is refused with the record to create (Preflight.
//     CheckZoneCNAME, step cname), until it is created.
//
// On a refusal the challenge that could not be used comes with the error.
func (c Challenges) Route(ctx context.Context, p *Preflight, names []string, asked store.ChallengeType) (route, error) {
	ch, err := c.Choose(names, asked)
	if c.Zone == nil {
		return route{challenge: ch}, err
	}
	if asked == "" {
		asked = c.Default
	}
	auto := asked == store.ChallengeAuto && !hasWildcard(names)
	if err != nil && !auto || ch != store.ChallengeDNS01 && !auto {
		return route{challenge: ch}, err
	}
	if p == nil {
		if ch == store.ChallengeDNS01 {
			return route{challenge: ch, viaZone: !c.Provider}, nil
		}
		return route{challenge: ch}, err
	}
	zerr := c.delegated(ctx, p, names)
	switch {
	case zerr == nil:
		return route{challenge: store.ChallengeDNS01, viaZone: true}, nil
	case ch != store.ChallengeDNS01:
		return route{challenge: ch}, err // auto: the name does not delegate; what Choose said
	case c.Provider && permanentRefusal(zerr):
		return route{challenge: ch}, nil
	}
	return route{challenge: ch}, zerr
}

// delegated checks every name's _acme-challenge CNAME into the zone,
// each node once (a wildcard and its apex share one).
func (c Challenges) delegated(ctx context.Context, p *Preflight, names []string) error {
	seen := map[string]bool{}
	for _, n := range names {
		node := dnszone.ChallengeName(n)
		if seen[node] {
			continue
		}
		seen[node] = true
		if err := p.CheckZoneCNAME(ctx, *c.Zone, n); err != nil {
			return err
		}
	}
	return nil
}

// permanentRefusal reports whether err is a pre-flight refusal that stands
// until DNS changes.
func permanentRefusal(err error) bool {
	var pe *PreflightError
	return errors.As(err, &pe) && pe.Permanent()
}

// hasWildcard reports whether names hold a wildcard.
func hasWildcard(names []string) bool {
	for _, n := range names {
		if hostname.IsWildcard(n) {
			return true
		}
	}
	return false
}

// Choose returns the challenge that proves control of names (the order's
// names, the managed name first) for a record that asks for asked ("" for
// the default), or with a *PreflightError (StepChallenge, permanent)
// saying why it cannot be used, the challenge that could not:
//
//   - a set with a wildcard uses dns-01 whatever was asked: a CA
//     validates a wildcard only with dns-01 (RFC 8555 section 7.1.3; Let's
//     Encrypt's policy);
//   - http-01, dns-01 and tls-alpn-01 are used as asked when they are
//     answered;
//   - auto takes the first answered of http-01, tls-alpn-01 and dns-01:
//     a name whose DNS points here proves control without any record to
//     set, and dns-01 needs a provider or the delegated zone.
func (c Challenges) Choose(names []string, asked store.ChallengeType) (store.ChallengeType, error) {
	name := ""
	if len(names) > 0 {
		name = names[0]
	}
	if asked == "" {
		asked = c.Default
	}
	if asked == "" {
		asked = store.ChallengeHTTP01
	}
	refuse := func(reason string) (store.ChallengeType, error) {
		return asked, &PreflightError{Name: name, Step: StepChallenge, Kind: KindPermanent, Reason: reason}
	}
	for _, n := range names {
		if !hostname.IsWildcard(n) {
			continue
		}
		if why, off := c.Off[store.ChallengeDNS01]; off {
			asked = store.ChallengeDNS01
			return refuse(fmt.Sprintf("%s is a wildcard, which only dns-01 can prove, and dns-01 is not available: %s", n, why))
		}
		return store.ChallengeDNS01, nil
	}
	if asked == store.ChallengeAuto {
		var whys []string
		for _, ch := range []store.ChallengeType{store.ChallengeHTTP01, store.ChallengeTLSALPN01, store.ChallengeDNS01} {
			why, off := c.Off[ch]
			if !off {
				return ch, nil
			}
			whys = append(whys, string(ch)+": "+why)
		}
		return refuse("challenge auto, and no challenge is available (" + strings.Join(whys, "; ") + ")")
	}
	if why, off := c.Off[asked]; off {
		return refuse(fmt.Sprintf("challenge %s asked for, and it is not available: %s", asked, why))
	}
	return asked, nil
}
