package renewer

import (
	"context"
	"fmt"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/lego"
)

// ChallengeType is an ACME challenge type (RFC 8555 section 8) the issuer
// can answer.
type ChallengeType string

// The challenge types the issuer answers.
const (
	// ChallengeHTTP01 is answered through the store and certserver's
	// challenge endpoint behind nginx's port 80 (RFC 8555 section 8.3).
	ChallengeHTTP01 ChallengeType = ChallengeType(challenge.HTTP01)
	// ChallengeTLSALPN01 is answered through the store and certserver's
	// TLS-ALPN-01 responder behind nginx's stream snippet on port 443
	// (RFC 8737).
	ChallengeTLSALPN01 ChallengeType = ChallengeType(challenge.TLSALPN01)
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

// setSolvers gives client a solver for each of types, answering through
// the store within ctx, the order's context. When the CA offers several of
// them for a name, lego picks by its own fixed order: tls-alpn-01 before
// http-01. To choose per name, pass that name's types.
func (a *ACMEIssuer) setSolvers(ctx context.Context, client *lego.Client, types []ChallengeType) error {
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
