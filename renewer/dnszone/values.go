package dnszone

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/certserver/certserver/store"
)

// The challenge records of the zone. Each TXT value of a label is one
// record, token "dns-01:<label>:<value>" and key authorization "<value>":
// the value (base64url of a SHA-256 digest, 43 characters, RFC 8555
// section 8.4) names its own record, so that any number of orders can put
// values under one label at once, putting a value twice (two hosts, a
// retried order) is harmless, and removing one leaves the others. The
// token holds ':', so the HTTP-01 endpoint, which answers only base64url
// tokens, never serves one.
const tokenPrefix = "dns-01:"

// MaxValues is the most TXT values the zone answers for one label. An
// order puts one per authorization at that node: two for a wildcard and
// its apex. The rest are values of orders abandoned before their clean-up,
// until they expire.
const MaxValues = 16

// labelPrefix returns the token prefix of every value of label.
func labelPrefix(label string) string { return tokenPrefix + label + ":" }

// valueToken returns the token of value under label.
func valueToken(label, value string) string { return labelPrefix(label) + value }

// sharedTimeout bounds one read of the shared store by the server.
const sharedTimeout = time.Second

// maxSharedReads is how many reads of the shared store the server makes at
// once; a query that finds them all busy is answered from the local copy
// alone, so that a flood of queries cannot become a flood on the database.
const maxSharedReads = 8

// values reads the TXT values of a label from the store: the local one,
// and on a fleet host also the shared one.
type values struct {
	local  store.ChallengeLister
	shared store.ChallengeLister // nil without a fleet
	slots  chan struct{}         // maxSharedReads
}

// newValues finds the ChallengeLister of local and of shared (nil: none).
func newValues(local, shared store.Store) (*values, error) {
	if local == nil {
		return nil, errors.New("dns zone: nil store")
	}
	v := &values{slots: make(chan struct{}, maxSharedReads)}
	var ok bool
	if v.local, ok = store.As[store.ChallengeLister](local); !ok {
		return nil, fmt.Errorf("dns zone: the store (%T) cannot list challenge records", local)
	}
	if shared != nil {
		if v.shared, ok = store.As[store.ChallengeLister](shared); !ok {
			return nil, fmt.Errorf("dns zone: the shared store (%T) cannot list challenge records", shared)
		}
	}
	return v, nil
}

// readValues is how many records get asks each store for: more than
// MaxValues, so that the values of orders abandoned before their
// clean-up (which the store lists in token order, among the live ones)
// are weighed with the live ones before the cap instead of filling it.
const readValues = 4 * MaxValues

// get returns the values of label, at most MaxValues, in token order.
//
// On a fleet host the values are those of the local copy and of the shared
// store together: a value another host has just put may reach the CA's
// query before it reaches this copy, and since a label carries several
// values, a copy holding one of an order's two is a miss that looks like
// an answer. The database read is bounded (sharedTimeout, maxSharedReads);
// when it fails or is not made, the copy answers alone.
//
// When the label has more than MaxValues, those put last (the latest
// expiry: every value is put for the same ValueTTL) are kept: an order in
// flight put its values after any abandoned one still standing.
func (v *values) get(ctx context.Context, label string) ([]string, error) {
	prefix := labelPrefix(label)
	cs, err := v.local.ListChallenges(ctx, prefix, readValues)
	if err != nil {
		return nil, err
	}
	if more := v.readShared(ctx, prefix); len(more) > 0 {
		cs = append(cs, more...)
	}
	// Each value once, with its latest expiry (the two stores may differ
	// while a value is put again).
	slices.SortFunc(cs, func(a, b store.Challenge) int {
		if c := strings.Compare(a.KeyAuth, b.KeyAuth); c != 0 {
			return c
		}
		return b.Expires.Compare(a.Expires)
	})
	cs = slices.CompactFunc(cs, func(a, b store.Challenge) bool { return a.KeyAuth == b.KeyAuth })
	if len(cs) > MaxValues {
		slices.SortStableFunc(cs, func(a, b store.Challenge) int { return b.Expires.Compare(a.Expires) })
		cs = cs[:MaxValues]
		slices.SortFunc(cs, func(a, b store.Challenge) int { return strings.Compare(a.KeyAuth, b.KeyAuth) })
	}
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.KeyAuth
	}
	return out, nil
}

// readShared returns the records under prefix of the shared store, or
// none without a fleet, when every slot is taken or when the read fails.
func (v *values) readShared(ctx context.Context, prefix string) []store.Challenge {
	if v.shared == nil {
		return nil
	}
	select {
	case v.slots <- struct{}{}:
	default:
		return nil
	}
	defer func() { <-v.slots }()
	sctx, cancel := context.WithTimeout(ctx, sharedTimeout)
	defer cancel()
	more, err := v.shared.ListChallenges(sctx, prefix, readValues)
	if err != nil {
		return nil
	}
	return more
}
