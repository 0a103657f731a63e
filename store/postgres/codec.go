package postgres

import (
	"encoding/json"
	"math"
	"time"

	"github.com/certserver/certserver/store"
)

// The times nanos can represent: int64 Unix nanoseconds (years 1678 to
// 2262), as Badger's due index.
var (
	minNanos = time.Unix(0, math.MinInt64)
	maxNanos = time.Unix(0, math.MaxInt64)
)

// nanos returns t as Unix nanoseconds, clamped to the int64 range, for
// the columns the store orders and compares (*_ns).
func nanos(t time.Time) int64 {
	switch {
	case t.Before(minNanos):
		return math.MinInt64
	case t.After(maxNanos):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// fromNanos undoes nanos, in UTC.
func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

// encodeCertInfo returns the JSON of c's fields that have no column of
// their own (all but ID, Names, ChainPEM and KeyPEM), times in UTC to the
// nanosecond.
func encodeCertInfo(c *store.Certificate) ([]byte, error) {
	info := *c
	info.ID, info.Names, info.ChainPEM, info.KeyPEM = "", nil, nil, nil
	utcCert(&info)
	return json.Marshal(&info)
}

// decodeCertificate returns the record of a certificates row.
func decodeCertificate(id string, names []string, chain, key, info []byte) (*store.Certificate, error) {
	var c store.Certificate
	if err := json.Unmarshal(info, &c); err != nil {
		return nil, err
	}
	c.ID, c.Names, c.ChainPEM, c.KeyPEM = id, names, chain, key
	utcCert(&c)
	return &c, nil
}

// utcCert sets c's times in UTC, as Badger returns them.
func utcCert(c *store.Certificate) {
	utc(&c.NotBefore)
	utc(&c.NotAfter)
	utc(&c.RenewAt)
	utc(&c.StoredAt)
}

// utcDomain sets d's times in UTC, as Badger returns them.
func utcDomain(d *store.Domain) {
	utc(&d.NextAttempt)
	utc(&d.FailingSince)
	utc(&d.AddedAt)
	utc(&d.UpdatedAt)
	for i := range d.Attempts {
		utc(&d.Attempts[i].At)
	}
}

// utc sets *t in UTC and drops its monotonic reading; the zero time stays
// the zero time.
func utc(t *time.Time) {
	if t.IsZero() {
		*t = time.Time{}
		return
	}
	*t = t.UTC().Round(0)
}
