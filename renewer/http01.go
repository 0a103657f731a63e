package renewer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/go-acme/lego/v4/challenge"
)

// Token lengths accepted from a CA. RFC 8555 section 8.1 asks for at least
// 128 bits of entropy, 22 base64url characters; Let's Encrypt and Pebble
// send 43. The upper bound keeps store keys and URL paths sane.
const (
	minTokenLen = 22
	maxTokenLen = 256
)

// cleanupTimeout bounds the removal of a challenge token, which runs even
// when the order was cancelled.
const cleanupTimeout = 10 * time.Second

// http01Provider answers HTTP-01 challenges (RFC 8555 section 8.3) through
// the store: Present writes the key authorization under its token, where
// the challenge endpoint (certserver, behind nginx's port 80) reads it, and
// CleanUp removes it. A token that is not cleaned up expires after ttl.
//
// lego's challenge.Provider has no context, so each provider belongs to one
// order and carries that order's context. It is safe for concurrent use.
type http01Provider struct {
	ctx   context.Context
	store store.Store
	ttl   time.Duration
	now   func() time.Time
}

var _ challenge.Provider = (*http01Provider)(nil)

// Present stores keyAuth under token until now+ttl.
func (p *http01Provider) Present(domain, token, keyAuth string) error {
	if err := checkToken(token); err != nil {
		return err
	}
	// RFC 8555 section 8.1: keyAuthorization = token || '.' || thumbprint.
	if !strings.HasPrefix(keyAuth, token+".") || checkBase64URL(keyAuth[len(token)+1:]) != nil {
		return errors.New("key authorization is not token.thumbprint")
	}
	if err := p.store.PutChallenge(p.ctx, token, keyAuth, p.now().Add(p.ttl)); err != nil {
		return fmt.Errorf("store challenge for %s: %w", domain, err)
	}
	return nil
}

// CleanUp removes token. It runs even when the order's context is done,
// and even when the order's lease was lost (the token is this order's
// alone, so no other host's work can be removed with it), so that no
// token outlives its order by more than cleanupTimeout.
func (p *http01Provider) CleanUp(domain, token, _ string) error {
	if checkToken(token) != nil {
		return nil // Present refused it; nothing was stored
	}
	ctx, cancel := context.WithTimeout(store.WithoutLease(context.WithoutCancel(p.ctx)), cleanupTimeout)
	defer cancel()
	if err := p.store.DeleteChallenge(ctx, token); err != nil {
		return fmt.Errorf("remove challenge for %s: %w", domain, err)
	}
	return nil
}

// checkToken checks an HTTP-01 token: base64url characters only, without
// padding (RFC 8555 section 8.3), and between minTokenLen and maxTokenLen
// long. The token becomes a URL path segment and a store key, so nothing
// else may pass.
func checkToken(token string) error {
	if len(token) < minTokenLen || len(token) > maxTokenLen {
		return fmt.Errorf("challenge token of %d characters, want %d to %d", len(token), minTokenLen, maxTokenLen)
	}
	if err := checkBase64URL(token); err != nil {
		return fmt.Errorf("challenge token: %w", err)
	}
	return nil
}

// checkBase64URL checks that s is non-empty and uses only the base64url
// alphabet [A-Za-z0-9_-] (RFC 4648 section 5), without padding.
func checkBase64URL(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' {
			continue
		}
		return fmt.Errorf("character %q at %d is not base64url", c, i)
	}
	return nil
}
