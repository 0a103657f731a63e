package store

import (
	"context"
	"errors"
)

// DomainsReader is implemented by a Store that reads the records of many
// names in one step, where reading them one by one would cost a round
// trip each (PostgreSQL). It is an optional ability, found by type
// assertion; GetDomains below falls back to GetDomain for a Store without
// it.
type DomainsReader interface {
	// GetDomains returns the records of those of names that are
	// managed, in no particular order; a name without a record is left
	// out. It reads them all at one point in time.
	GetDomains(ctx context.Context, names []string) ([]*Domain, error)
}

// GetDomains returns the records of those of names that s holds, through
// DomainsReader when s has it, else one GetDomain each.
func GetDomains(ctx context.Context, s Store, names []string) ([]*Domain, error) {
	if r, ok := s.(DomainsReader); ok {
		return r.GetDomains(ctx, names)
	}
	var out []*Domain
	for _, n := range names {
		d, err := s.GetDomain(ctx, n)
		switch {
		case errors.Is(err, ErrNotFound):
			continue
		case err != nil:
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}
