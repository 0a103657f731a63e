package renewer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/hostname"
	"github.com/go-acme/lego/v4/challenge"
)

// tlsALPN01Provider answers TLS-ALPN-01 challenges (RFC 8737) through the
// store: Present writes the key authorization under
// store.TLSALPN01Token(domain), where certserver's TLS-ALPN-01 responder
// (behind nginx's stream snippet, on any host of a fleet) reads it to
// build the challenge certificate, and CleanUp removes it. A record that
// is not cleaned up expires after ttl.
//
// The record is keyed by the name, not by the CA's token: the CA's
// connection carries only the name. One issuance per name at a time
// (the renewer's rule) keeps two orders from overwriting each other's.
//
// Like http01Provider it belongs to one order and carries that order's
// context. It is safe for concurrent use.
type tlsALPN01Provider struct {
	ctx   context.Context
	store store.Store
	ttl   time.Duration
	now   func() time.Time
}

var _ challenge.Provider = (*tlsALPN01Provider)(nil)

// Present stores keyAuth for domain until now+ttl.
func (p *tlsALPN01Provider) Present(domain, token, keyAuth string) error {
	name, err := hostname.Normalize(domain)
	if err != nil {
		return fmt.Errorf("tls-alpn-01 for %q: %w", domain, err)
	}
	// RFC 8555 section 8.1: keyAuthorization = token || '.' || thumbprint.
	if checkBase64URL(token) != nil || !strings.HasPrefix(keyAuth, token+".") || checkBase64URL(keyAuth[len(token)+1:]) != nil {
		return errors.New("key authorization is not token.thumbprint")
	}
	if err := p.store.PutChallenge(p.ctx, store.TLSALPN01Token(name), keyAuth, p.now().Add(p.ttl)); err != nil {
		return fmt.Errorf("store tls-alpn-01 challenge for %s: %w", name, err)
	}
	return nil
}

// CleanUp removes domain's record. It runs even when the order's context
// is done, so that no record outlives its order by more than
// cleanupTimeout.
func (p *tlsALPN01Provider) CleanUp(domain, _, _ string) error {
	name, err := hostname.Normalize(domain)
	if err != nil {
		return nil // Present refused it; nothing was stored
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), cleanupTimeout)
	defer cancel()
	if err := p.store.DeleteChallenge(ctx, store.TLSALPN01Token(name)); err != nil {
		return fmt.Errorf("remove tls-alpn-01 challenge for %s: %w", name, err)
	}
	return nil
}
