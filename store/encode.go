package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// How records are stored.
//
// Certificates and domains, the records read on the handshake path and
// written by the hundred thousand, use a small binary encoding: a format
// byte (formatV1), then every field in declaration order, strings and byte
// slices as a uvarint length and the bytes, integers as varints, times as a
// varint of Unix seconds and a uvarint of nanoseconds (read back in UTC,
// without monotonic reading). Fields added later go at the end: a record
// that ends early reads them as zero. A change that cannot work that way
// takes a new format byte.
//
// Certificates are written in formatV2 (encode_cert.go), which keeps
// the leaf and the key as DER and each intermediate once, under its own
// key; records of formatV1 are still read, and rewritten to formatV2 when
// the store opens (upgrade.go).
//
// Accounts and challenges are rare and stored as JSON, which always starts
// with '{' and so cannot be mistaken for a binary format byte.
const (
	formatV1 = 1
	formatV2 = 2
)

// errCorrupt is wrapped by errors about a stored value that does not decode.
var errCorrupt = errors.New("corrupt record")

// challengeRecord is the stored form of an HTTP-01 challenge.
type challengeRecord struct {
	KeyAuth string    `json:"key_auth"`
	Expires time.Time `json:"expires"`
}

// appendDomain appends the stored form of d to b.
func appendDomain(b []byte, d *Domain) []byte {
	e := encoder{b: b}
	e.b = append(e.b, formatV1)
	e.str(d.Name)
	e.str(string(d.State))
	e.str(d.Profile)
	e.str(d.CertID)
	e.time(d.NextAttempt)
	e.int(int64(d.Failures))
	e.str(d.LastError)
	e.time(d.FailingSince)
	e.str(d.Source)
	e.time(d.AddedAt)
	e.time(d.UpdatedAt)
	e.uint(uint64(len(d.Attempts)))
	for _, a := range d.Attempts {
		e.time(a.At)
		e.str(string(a.Outcome))
		e.str(a.Error)
		e.str(a.Serial)
		e.int(int64(a.Took))
	}
	e.uint(uint64(len(d.ExtraNames)))
	for _, n := range d.ExtraNames {
		e.str(n)
	}
	e.str(d.ManagedWith)
	e.str(string(d.Challenge))
	for _, a := range d.Attempts {
		e.str(string(a.Challenge))
	}
	return e.b
}

// decodeDomain decodes a stored domain into d.
func decodeDomain(b []byte, d *Domain) error {
	r := decoder{b: b}
	if !r.format(formatV1) {
		return r.fail("domain")
	}
	d.Name = r.str()
	d.State = State(r.str())
	d.Profile = r.str()
	d.CertID = r.str()
	d.NextAttempt = r.time()
	d.Failures = int(r.int())
	d.LastError = r.str()
	d.FailingSince = r.time()
	d.Source = r.str()
	d.AddedAt = r.time()
	d.UpdatedAt = r.time()
	// Attempts came later: a record written before them ends here and
	// reads as none.
	n := r.uint()
	if n > RecentAttempts*10 {
		r.err, r.b, n = errCorrupt, nil, 0
	}
	d.Attempts = nil
	if n > 0 {
		d.Attempts = make([]Attempt, n)
	}
	for i := range d.Attempts {
		a := &d.Attempts[i]
		a.At = r.time()
		a.Outcome = Outcome(r.str())
		a.Error = r.str()
		a.Serial = r.str()
		a.Took = time.Duration(r.int())
	}
	// ExtraNames and ManagedWith came later still.
	d.ExtraNames = nil
	if n := r.uint(); n > uint64(len(r.b)) { // every name takes a byte at least
		r.err, r.b = errCorrupt, nil
	} else if n > 0 {
		d.ExtraNames = make([]string, n)
		for i := range d.ExtraNames {
			d.ExtraNames[i] = r.str()
		}
	}
	d.ManagedWith = r.str()
	// Challenge came later, then the challenge of each attempt.
	d.Challenge = ChallengeType(r.str())
	for i := range d.Attempts {
		d.Attempts[i].Challenge = ChallengeType(r.str())
	}
	return r.fail("domain")
}

// encodeJSON returns the stored form of an account or challenge.
func encodeJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	return b, nil
}

// readDomain and readJSON decode the value of item (readCertificate, in
// badger_chains.go, a certificate's). The result holds copies: nothing
// refers to Badger's memory once they return.
func readDomain(item *badger.Item, d *Domain) error {
	return item.Value(func(b []byte) error { return decodeDomain(b, d) })
}

func readJSON(item *badger.Item, v any) error {
	return item.Value(func(b []byte) error {
		if err := json.Unmarshal(b, v); err != nil {
			return fmt.Errorf("decode %T: %w: %w", v, errCorrupt, err)
		}
		return nil
	})
}

// encoder appends fields to b.
type encoder struct{ b []byte }

func (e *encoder) uint(n uint64) { e.b = binary.AppendUvarint(e.b, n) }
func (e *encoder) int(n int64)   { e.b = binary.AppendVarint(e.b, n) }
func (e *encoder) str(s string)  { e.uint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) bytes(p []byte) {
	e.uint(uint64(len(p)))
	e.b = append(e.b, p...)
}

func (e *encoder) time(t time.Time) {
	e.int(t.Unix())
	e.uint(uint64(t.Nanosecond()))
}

// decoder reads fields from b. Past the end of b every field reads as zero;
// after malformed input every field reads as zero and err is set.
type decoder struct {
	b   []byte
	err error
}

// format reads the format byte and reports whether it is want.
func (d *decoder) format(want byte) bool {
	if len(d.b) == 0 || d.b[0] != want {
		d.err, d.b = errCorrupt, nil
		return false
	}
	d.b = d.b[1:]
	return true
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		return 0
	}
	x := d.b[0]
	d.b = d.b[1:]
	return x
}

func (d *decoder) uint() uint64 {
	if d.err != nil || len(d.b) == 0 {
		return 0
	}
	n, k := binary.Uvarint(d.b)
	if k <= 0 {
		d.err, d.b = errCorrupt, nil
		return 0
	}
	d.b = d.b[k:]
	return n
}

func (d *decoder) int() int64 {
	if d.err != nil || len(d.b) == 0 {
		return 0
	}
	n, k := binary.Varint(d.b)
	if k <= 0 {
		d.err, d.b = errCorrupt, nil
		return 0
	}
	d.b = d.b[k:]
	return n
}

// raw reads a length-prefixed field without copying it.
func (d *decoder) raw() []byte {
	n := d.uint()
	if n > uint64(len(d.b)) {
		d.err, d.b = errCorrupt, nil
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) str() string { return string(d.raw()) }

func (d *decoder) time() time.Time {
	if len(d.b) == 0 {
		return time.Time{}
	}
	sec, nsec := d.int(), d.uint()
	if nsec >= 1e9 {
		d.err, d.b = errCorrupt, nil
		return time.Time{}
	}
	return time.Unix(sec, int64(nsec)).UTC()
}

// fail returns nil, or an error naming what failed to decode.
func (d *decoder) fail(what string) error {
	if d.err == nil {
		return nil
	}
	return fmt.Errorf("decode %s: %w", what, d.err)
}
