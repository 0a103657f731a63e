package store

import (
	"encoding/binary"
	"math"
	"time"
)

// The Badger key space. Every key starts with a two-byte prefix naming what
// it holds; names and IDs follow as they are, since normalized names cannot
// hold the bytes the prefixes and separators use.
//
//	c/ID                 certificate record (binary, encodeCertificate)
//	i/DIGEST             intermediate certificate (DER) that records refer
//	                     to by DIGEST, the SHA-256 of the DER (32 bytes;
//	                     badger_chains.go)
//	U/                   upgrade of the records to formatV2: the last ID
//	                     rewritten, or empty when done (upgrade.go)
//	n/NAME               link: the ID of the certificate that serves NAME
//	k/NAME \x00 ID       claim: certificate ID lists NAME (value: claimValue)
//	d/NAME               domain record (binary, appendDomain)
//	q/AT NAME            due entry: AT is 8 bytes of dueTime, value empty
//	a/ID                 ACME account record (JSON)
//	t/TOKEN              HTTP-01 challenge (JSON), with a Badger TTL
//	r/SCOPE \x00 LIMIT \x00 KEY
//	                     rate-limit bucket: 8 bytes, the Unix nanosecond
//	                     it is full again, with a Badger TTL
//	h/VERSION            change history: the names one certificate write
//	                     changed, newline-separated (changes.go)
//	H/                   change history: epoch and last version
//	R/                   the last version of a fleet's shared store
//	                     that Apply wrote (8 bytes; badger_replica.go)
//	S/                   a fleet's local copy completed a sync: the
//	                     version it held then (8 bytes; badger_replica.go)
//	p/KEYTYPE \x00 SLOT  key pool slot (JSON PoolKey; badger_keypool.go)
//
// How each record's value is encoded is in encode.go: certificates and
// domains in a compact binary form, accounts and challenges as JSON.
//
// Links are what LookupCertificate reads; claims remember every record that
// lists a name, so that a name whose record goes away can fall back to
// another record that still holds it.
const (
	prefixCert    = "c/"
	prefixInter   = "i/"
	prefixLink    = "n/"
	prefixClaim   = "k/"
	prefixDomain  = "d/"
	prefixDue     = "q/"
	prefixAccount = "a/"
	prefixToken   = "t/"
	prefixBucket  = "r/"
	prefixPool    = "p/"
)

// key returns prefix followed by s in a new slice.
func key(prefix, s string) []byte {
	b := make([]byte, 0, len(prefix)+len(s))
	return append(append(b, prefix...), s...)
}

// claimPrefix returns the prefix of every claim on name.
func claimPrefix(name string) []byte {
	b := make([]byte, 0, len(prefixClaim)+len(name)+1)
	return append(append(append(b, prefixClaim...), name...), 0)
}

// claimKey returns the key of certificate id's claim on name.
func claimKey(name, id string) []byte {
	return append(claimPrefix(name), id...)
}

// claimValue returns the value of a claim written at storedAt by a
// certificate that expires at notAfter (zero: never).
func claimValue(storedAt, notAfter time.Time) []byte {
	if notAfter.IsZero() {
		notAfter = maxDue
	}
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v, dueTime(storedAt))
	binary.BigEndian.PutUint64(v[8:], dueTime(notAfter))
	return v
}

// parseClaimValue undoes claimValue, returning the times as dueTime values;
// a malformed value reads as the oldest, already expired claim.
func parseClaimValue(v []byte) (storedAt, notAfter uint64) {
	if len(v) != 16 {
		return 0, 0
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
}

// dueKey returns the due-index key of name at t.
func dueKey(t time.Time, name string) []byte {
	b := make([]byte, len(prefixDue)+8, len(prefixDue)+8+len(name))
	copy(b, prefixDue)
	binary.BigEndian.PutUint64(b[len(prefixDue):], dueTime(t))
	return append(b, name...)
}

// parseDueKey undoes dueKey. It reports false for a key too short to be one.
func parseDueKey(k []byte) (DueEntry, bool) {
	if len(k) <= len(prefixDue)+8 {
		return DueEntry{}, false
	}
	at := binary.BigEndian.Uint64(k[len(prefixDue):])
	return DueEntry{Name: string(k[len(prefixDue)+8:]), At: fromDueTime(at)}, true
}

// dueTime maps t to an unsigned integer whose big-endian bytes sort like
// the times: Unix nanoseconds with the sign bit flipped, clamped to the
// range of int64 nanoseconds (years 1678 to 2262).
func dueTime(t time.Time) uint64 {
	var n int64
	switch {
	case t.Before(minDue):
		n = math.MinInt64
	case t.After(maxDue):
		n = math.MaxInt64
	default:
		n = t.UnixNano()
	}
	return uint64(n) ^ 1<<63
}

// fromDueTime undoes dueTime, in UTC.
func fromDueTime(u uint64) time.Time {
	return time.Unix(0, int64(u^1<<63)).UTC()
}

// The times dueTime can represent.
var (
	minDue = time.Unix(0, math.MinInt64)
	maxDue = time.Unix(0, math.MaxInt64)
)
