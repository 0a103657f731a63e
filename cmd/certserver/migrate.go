package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/certserver/certserver/store"
)

// migrateBatch is how many records `fleet migrate` reads, and writes, at
// once.
const migrateBatch = 500

// migrateCount is what a migration did with one kind of record.
type migrateCount struct {
	// Copied were written to the database: missing there, or (a
	// certificate) expiring later than the one there.
	Copied int `json:"copied"`
	// There were already in the database and were left as they are there
	// (a name the fleet already manages keeps its record, whatever it
	// says).
	There int `json:"already_there"`
	// Kept differ in the database, whose record was kept because it is
	// newer: a certificate that expires later, a rate-limit bucket that
	// spent more, a challenge token the fleet uses with another answer.
	Kept int `json:"kept_newer"`
}

func (c migrateCount) String() string {
	s := fmt.Sprintf("%d copied, %d already there", c.Copied, c.There)
	if c.Kept > 0 {
		s += fmt.Sprintf(", %d kept as the database has them (newer there)", c.Kept)
	}
	return s
}

// migrateSummary is what `fleet migrate` did, by kind of record.
type migrateSummary struct {
	Certificates migrateCount `json:"certificates"`
	Domains      migrateCount `json:"domains"`
	Accounts     migrateCount `json:"accounts"`
	RateBuckets  migrateCount `json:"rate_buckets"`
	Challenges   migrateCount `json:"challenges"`
}

// copied is how many records the migration wrote.
func (s migrateSummary) copied() int {
	return s.Certificates.Copied + s.Domains.Copied + s.Accounts.Copied + s.RateBuckets.Copied + s.Challenges.Copied
}

// print writes the summary as a table.
func (s migrateSummary) print(w io.Writer) {
	fmt.Fprintf(w, "  certificates       %s\n", s.Certificates)
	fmt.Fprintf(w, "  names              %s\n", s.Domains)
	fmt.Fprintf(w, "  ACME accounts      %s\n", s.Accounts)
	fmt.Fprintf(w, "  rate-limit buckets %s\n", s.RateBuckets)
	fmt.Fprintf(w, "  challenges         %s\n", s.Challenges)
}

// migration copies a single host's store (src, with the Export of its
// Badger store) into a fleet's shared store (dst). Both are read and
// written through their key decorators, so private keys are compared and
// copied in clear and sealed again for the database.
//
// It is idempotent: a record already in dst as it is in src is left
// alone, so a second run copies nothing. It never overwrites what the
// fleet already has, except a certificate with an older one: a name
// already managed in dst keeps its record, an account its record, a
// certificate is replaced only by a later-expiring one (what an import
// does), a rate-limit bucket only by one that spent more.
type migration struct {
	src  store.Store
	exp  *store.Export
	dst  store.Store
	prog *progress
	done int
}

// total counts the records run will read, for the progress report.
func (m *migration) total(ctx context.Context) (int, error) {
	n := len(m.exp.AccountIDs) + len(m.exp.RateScopes) + len(m.exp.Challenges)
	for after := ""; ; {
		cs, err := m.src.ListCertificates(ctx, after, migrateBatch)
		if err != nil {
			return 0, err
		}
		n += len(cs)
		if len(cs) < migrateBatch {
			break
		}
		after = cs[len(cs)-1].ID
	}
	for after := ""; ; {
		ds, err := m.src.ListDomains(ctx, after, migrateBatch)
		if err != nil {
			return 0, err
		}
		n += len(ds)
		if len(ds) < migrateBatch {
			break
		}
		after = ds[len(ds)-1].Name
	}
	return n, nil
}

// step reports n more records done.
func (m *migration) step(n int) {
	m.done += n
	m.prog.update(m.done)
}

// run copies everything and returns what it did. It stops at the first
// failure (what it copied until then stays copied: running it again goes
// on from there).
func (m *migration) run(ctx context.Context) (migrateSummary, error) {
	var s migrateSummary
	steps := []struct {
		what string
		fn   func(context.Context, *migrateCount) error
		into *migrateCount
	}{
		{"accounts", m.accounts, &s.Accounts},
		{"certificates", m.certificates, &s.Certificates},
		{"names", m.domains, &s.Domains},
		{"rate-limit buckets", m.rateBuckets, &s.RateBuckets},
		{"challenges", m.challenges, &s.Challenges},
	}
	for _, st := range steps {
		if err := st.fn(ctx, st.into); err != nil {
			return s, fmt.Errorf("copy %s: %w", st.what, err)
		}
	}
	return s, nil
}

func (m *migration) accounts(ctx context.Context, c *migrateCount) error {
	for _, id := range m.exp.AccountIDs {
		a, err := m.src.GetAccount(ctx, id)
		if err != nil {
			return err
		}
		switch _, err := m.dst.GetAccount(ctx, id); {
		case err == nil:
			c.There++
		case errors.Is(err, store.ErrNotFound):
			if err := m.dst.PutAccount(ctx, a); err != nil {
				return err
			}
			c.Copied++
		default:
			return err
		}
		m.step(1)
	}
	return nil
}

// certificates copies the certificate records in the order the single
// host stored them (StoredAt, then ID), those expired now first. In the
// database, as in Badger, the last write that lists a name serves it, and
// a name whose record goes falls back to the newest unexpired claim (ties
// to the greatest ID): copied in that order, each name the single host
// served with an unexpired certificate is served by the same one, not by
// whichever ID sorts last, and no name by an expired certificate where an
// unexpired one lists it.
func (m *migration) certificates(ctx context.Context, c *migrateCount) error {
	type stored struct {
		id      string
		at      time.Time
		expired bool
	}
	now := time.Now()
	var order []stored
	for after := ""; ; {
		cs, err := m.src.ListCertificates(ctx, after, migrateBatch)
		if err != nil {
			return err
		}
		for _, cert := range cs {
			order = append(order, stored{cert.ID, cert.StoredAt, cert.NotAfter.Before(now)})
		}
		if len(cs) < migrateBatch {
			break
		}
		after = cs[len(cs)-1].ID
	}
	slices.SortFunc(order, func(a, b stored) int {
		if a.expired != b.expired {
			if a.expired {
				return -1
			}
			return 1
		}
		return cmp.Or(a.at.Compare(b.at), strings.Compare(a.id, b.id))
	})
	for len(order) > 0 {
		batch := order[:min(len(order), migrateBatch)]
		order = order[len(batch):]
		var writes []*store.Certificate
		for _, o := range batch {
			cert, err := m.src.GetCertificate(ctx, o.id)
			if err != nil {
				return err
			}
			have, err := m.dst.GetCertificate(ctx, cert.ID)
			switch {
			case errors.Is(err, store.ErrNotFound):
				writes = append(writes, cert)
			case err != nil:
				return err
			case have.Serial == cert.Serial:
				c.There++
			case cert.NotAfter.After(have.NotAfter):
				writes = append(writes, cert)
			default:
				c.Kept++
			}
		}
		if err := m.putCertificates(ctx, writes); err != nil {
			return err
		}
		c.Copied += len(writes)
		m.step(len(batch))
	}
	return nil
}

// putCertificates writes cs in one write, or one by one when they do not
// fit in one.
func (m *migration) putCertificates(ctx context.Context, cs []*store.Certificate) error {
	err := m.dst.PutCertificates(ctx, cs)
	if !errors.Is(err, store.ErrBatchTooLarge) {
		return err
	}
	for _, c := range cs {
		if err := m.dst.PutCertificate(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// domains copies the names in batches of migrateDomainBatch. AddDomains
// writes each record as it is (state, due time, history) unless the
// database already manages the name, which then keeps its record.
func (m *migration) domains(ctx context.Context, c *migrateCount) error {
	for after := ""; ; {
		ds, err := m.src.ListDomains(ctx, after, migrateDomainBatch)
		if err != nil {
			return err
		}
		added, existing, err := m.dst.AddDomains(ctx, ds)
		if err != nil {
			return err
		}
		c.Copied += added
		c.There += existing
		m.step(len(ds))
		if len(ds) < migrateDomainBatch {
			return nil
		}
		after = ds[len(ds)-1].Name
	}
}

// migrateDomainBatch is how many names one write of `fleet migrate` adds.
const migrateDomainBatch = 5000

func (m *migration) rateBuckets(ctx context.Context, c *migrateCount) error {
	type bucketKey struct{ limit, key string }
	for _, scope := range m.exp.RateScopes {
		bs, err := m.src.RateBuckets(ctx, scope)
		if err != nil {
			return err
		}
		have, err := m.dst.RateBuckets(ctx, scope)
		if err != nil {
			return err
		}
		full := map[bucketKey]time.Time{}
		for _, b := range have {
			full[bucketKey{b.Limit, b.Key}] = b.Full
		}
		var writes []store.RateBucket
		for _, b := range bs {
			h, ok := full[bucketKey{b.Limit, b.Key}]
			switch {
			case !ok || b.Full.Truncate(time.Microsecond).After(h):
				writes = append(writes, b)
			case sameTime(b.Full, h):
				c.There++
			default:
				c.Kept++
			}
		}
		if len(writes) > 0 {
			if err := m.dst.PutRateBuckets(ctx, scope, writes); err != nil {
				return err
			}
		}
		c.Copied += len(writes)
		m.step(1)
	}
	return nil
}

func (m *migration) challenges(ctx context.Context, c *migrateCount) error {
	for _, ch := range m.exp.Challenges {
		switch have, err := m.dst.GetChallenge(ctx, ch.Token); {
		case errors.Is(err, store.ErrNotFound):
			if err := m.dst.PutChallenge(ctx, ch.Token, ch.KeyAuth, ch.Expires); err != nil {
				return err
			}
			c.Copied++
		case err != nil:
			return err
		case have == ch.KeyAuth:
			c.There++
		default:
			c.Kept++
		}
		m.step(1)
	}
	return nil
}

// sameTime compares times as the database stores them, to the
// microsecond.
func sameTime(a, b time.Time) bool {
	return a.Truncate(time.Microsecond).Equal(b.Truncate(time.Microsecond))
}
