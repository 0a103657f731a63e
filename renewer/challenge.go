package renewer

import (
	"fmt"
	"strings"

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
