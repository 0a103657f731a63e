package renewer

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/certserver/certserver/store"

	"github.com/go-acme/lego/v4/lego"
)

// ChallengeType is an ACME challenge type (RFC 8555 section 8) the issuer
// can answer: the store's name for it, one spelling for the record of a
// name, an order and the issuer's configuration.
type ChallengeType = store.ChallengeType

// The challenge types the issuer answers through the store (ACMEConfig.
// Challenges); dns-01 is answered through ACMEConfig.DNS01.
const (
	// ChallengeHTTP01 is answered through the store and certserver's
	// challenge endpoint behind nginx's port 80 (RFC 8555 section 8.3).
	ChallengeHTTP01 = store.ChallengeHTTP01
	// ChallengeTLSALPN01 is answered through the store and certserver's
	// TLS-ALPN-01 responder behind nginx's stream snippet on port 443
	// (RFC 8737).
	ChallengeTLSALPN01 = store.ChallengeTLSALPN01
)

// checkChallenges refuses an unknown or repeated challenge type.
func checkChallenges(types []ChallengeType) error {
	seen := make(map[ChallengeType]bool, len(types))
	for _, c := range types {
		switch c {
		case ChallengeHTTP01, ChallengeTLSALPN01:
		default:
			return fmt.Errorf("unknown challenge type %q (want %s or %s)", c, ChallengeHTTP01, ChallengeTLSALPN01)
		}
		if seen[c] {
			return fmt.Errorf("challenge type %s given twice", c)
		}
		seen[c] = true
	}
	return nil
}

// setSolvers gives client the solver of ch alone, answering within ctx,
// the order's context: http-01 and tls-alpn-01 through the store when they
// are among the configured Challenges, dns-01 through DNS01 (DNS01Zone
// when viaZone). With ch ""
// it gives a solver for each configured challenge type; when the CA offers
// several of them for a name, lego picks by its own fixed order:
// tls-alpn-01 before http-01.
func (a *ACMEIssuer) setSolvers(ctx context.Context, client *lego.Client, ch ChallengeType, viaZone bool) error {
	types := a.cfg.Challenges
	switch {
	case ch == store.ChallengeDNS01:
		d := a.cfg.DNS01
		if viaZone {
			d = a.cfg.DNS01Zone
		}
		switch {
		case d == nil && viaZone:
			return errors.New("dns-01 through certserver's zone asked for, and the issuer has no zone")
		case d == nil:
			return errors.New("dns-01 asked for, and the issuer has no DNS provider")
		}
		if err := client.Challenge.SetDNS01Provider(d.provider(ctx), d.options()...); err != nil {
			return fmt.Errorf("%s solver: %w", ch, err)
		}
		return nil
	case ch != "":
		if !slices.Contains(types, ch) {
			return fmt.Errorf("%s asked for, and the issuer does not answer it (it answers %v)", ch, types)
		}
		types = []ChallengeType{ch}
	}
	for _, c := range types {
		var err error
		switch c {
		case ChallengeHTTP01:
			err = client.Challenge.SetHTTP01Provider(&http01Provider{ctx: ctx, store: a.store, ttl: a.cfg.ChallengeTTL, now: a.cfg.Now})
		case ChallengeTLSALPN01:
			err = client.Challenge.SetTLSALPN01Provider(&tlsALPN01Provider{ctx: ctx, store: a.store, ttl: a.cfg.ChallengeTTL, now: a.cfg.Now})
		default:
			err = fmt.Errorf("unknown challenge type %q", c)
		}
		if err != nil {
			return fmt.Errorf("%s solver: %w", c, err)
		}
	}
	return nil
}
