package dnszone

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/go-acme/lego/v4/challenge"
)

// Defaults of ProviderConfig.
const (
	// DefaultValueTTL is how long a TXT value stays when its order's
	// clean-up never runs (a crash): an order that takes longer has
	// failed anyway.
	DefaultValueTTL = time.Hour
	// DefaultPropagationTimeout is how long lego may wait for the value to
	// be seen before telling the CA to validate. The zone answers a value
	// as soon as the store holds it, so this only covers the customer's
	// CNAME being read through resolvers.
	DefaultPropagationTimeout = time.Minute
	// DefaultPollingInterval is how often lego looks meanwhile.
	DefaultPollingInterval = 2 * time.Second
)

// cleanupTimeout bounds the removal of a value, which runs even when the
// order was cancelled.
const cleanupTimeout = 10 * time.Second

// ProviderConfig configures a Provider. Zero fields take the defaults
// stated.
type ProviderConfig struct {
	// Store receives the values as challenge records: on a fleet host the
	// shared store, so that every host's zone answers them. Required.
	Store store.Store
	// ValueTTL is how long a value is kept when CleanUp does not remove
	// it. Default DefaultValueTTL.
	ValueTTL time.Duration
	// PropagationTimeout and PollingInterval are what Timeout returns to
	// lego. Defaults DefaultPropagationTimeout and DefaultPollingInterval.
	PropagationTimeout time.Duration
	PollingInterval    time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// Provider answers DNS-01 challenges (RFC 8555 section 8.4) through the
// zone: Present stores the TXT value of a key authorization under the
// label of the name, where every host's Server reads it, and CleanUp
// removes it. Values of one label do not replace each other, so the
// wildcard and the apex of one order, or two orders at once, all stand.
//
// lego's challenge.Provider has no context, so each Provider belongs to
// one order and carries that order's context, as the HTTP-01 provider
// does. It is safe for concurrent use.
type Provider struct {
	ctx context.Context
	cfg ProviderConfig
}

var _ challenge.ProviderTimeout = (*Provider)(nil)

// NewProvider returns the Provider of one order, whose context is ctx.
func NewProvider(ctx context.Context, cfg ProviderConfig) (*Provider, error) {
	switch {
	case ctx == nil:
		return nil, errors.New("dns zone provider: nil context")
	case cfg.Store == nil:
		return nil, errors.New("dns zone provider: nil store")
	case cfg.ValueTTL < 0 || cfg.PropagationTimeout < 0 || cfg.PollingInterval < 0:
		return nil, errors.New("dns zone provider: negative duration")
	}
	if cfg.ValueTTL == 0 {
		cfg.ValueTTL = DefaultValueTTL
	}
	if cfg.PropagationTimeout == 0 {
		cfg.PropagationTimeout = DefaultPropagationTimeout
	}
	if cfg.PollingInterval == 0 {
		cfg.PollingInterval = DefaultPollingInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Provider{ctx: ctx, cfg: cfg}, nil
}

// TXTValue returns the TXT record value of a DNS-01 key authorization:
// base64url of its SHA-256 digest, without padding (RFC 8555 section
// 8.4).
func TXTValue(keyAuth string) string {
	sum := sha256.Sum256([]byte(keyAuth))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Present stores the TXT value of keyAuth under the label of domain (a
// name or "*.name", as lego passes it) until now+ValueTTL.
func (p *Provider) Present(domain, _, keyAuth string) error {
	if keyAuth == "" {
		return fmt.Errorf("present dns-01 for %s: empty key authorization", domain)
	}
	name := canonical(domain)
	value := TXTValue(keyAuth)
	if err := p.cfg.Store.PutChallenge(p.ctx, valueToken(Label(name), value), value, p.cfg.Now().Add(p.cfg.ValueTTL)); err != nil {
		return fmt.Errorf("store dns-01 value for %s: %w", domain, err)
	}
	return nil
}

// CleanUp removes the value Present stored. It runs even when the order's
// context is done, and even when the order's lease was lost (the value's
// record is the value's alone, so no other host's work can be removed
// with it), so that no value outlives its order by more than
// cleanupTimeout.
func (p *Provider) CleanUp(domain, _, keyAuth string) error {
	if keyAuth == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(store.WithoutLease(context.WithoutCancel(p.ctx)), cleanupTimeout)
	defer cancel()
	if err := p.cfg.Store.DeleteChallenge(ctx, valueToken(Label(canonical(domain)), TXTValue(keyAuth))); err != nil {
		return fmt.Errorf("remove dns-01 value for %s: %w", domain, err)
	}
	return nil
}

// Timeout implements challenge.ProviderTimeout: how long lego waits for
// the value to be visible, and how often it looks.
func (p *Provider) Timeout() (timeout, interval time.Duration) {
	return p.cfg.PropagationTimeout, p.cfg.PollingInterval
}

// canonical returns name in lowercase without a final dot.
func canonical(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }
