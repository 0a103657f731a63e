// Package storetest is the contract test suite of store.Store: every
// implementation (Badger, PostgreSQL) runs Run from its own tests, so that
// each rule of the contract (the doc comments in store/store.go and
// store/changes.go) is checked in one place, against every engine alike.
//
// The suite sees only the interface. It compares times with time.Equal
// after truncating them to microseconds (PostgreSQL keeps no more), and
// nothing in it depends on timing: the store reads the time from the
// suite's Clock, and records that must be expired are written with times
// in the past.
package storetest

import (
	"context"
	"errors"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/clocktest"
	"github.com/certserver/certserver/store"
)

// Options configures Run.
type Options struct {
	// Clock is the clock of the stores open returns: open must make the
	// store read the current time from Clock.Now (Badger:
	// BadgerOptions.Clock), and the suite moves it. Required. Run sets it
	// before each case; cases run one after another.
	Clock *Clock

	// Bulk is how many names the bulk case adds in one AddDomains.
	// Default: the environment variable CERTSERVER_STORE_BULK, else
	// DefaultBulk. FullBulk is what the admin API promises; under the
	// race detector it takes minutes, so `make test` runs DefaultBulk and
	// `make bench` runs FullBulk without it (scripts/bench.sh).
	Bulk int
}

// The sizes of the bulk case.
const (
	DefaultBulk = 20000
	FullBulk    = 500000
)

// Clock is a settable clock for a store under test, safe for concurrent
// use: the clock of the renewer's tests (renewer/clocktest), one type for
// every test that decides when.
type Clock = clocktest.Clock

// NewClock returns a clock at the current time, truncated to the second.
func NewClock() *Clock {
	return clocktest.New(time.Now().UTC().Truncate(time.Second))
}

// suite is what every case gets: a new, empty store and the clock it reads.
type suite struct {
	s     store.Store
	clock *Clock
	opts  Options
}

// Run runs the contract suite, one subtest per rule, each against a new,
// empty store from open. open registers the store's Close (and the removal
// of whatever it made) with t.Cleanup. A store that also implements
// store.ChangeFeed has it checked too.
func Run(t *testing.T, open func(t *testing.T) store.Store, opts Options) {
	if opts.Clock == nil {
		t.Fatal("storetest: Options.Clock is nil: open must give the store Clock.Now as its clock")
	}
	if opts.Bulk == 0 {
		opts.Bulk = DefaultBulk
		if v := os.Getenv("CERTSERVER_STORE_BULK"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 4 {
				t.Fatalf("storetest: CERTSERVER_STORE_BULK=%q: want a number of names, at least 4", v)
			}
			opts.Bulk = n
		}
	}
	if opts.Bulk < 4 {
		t.Fatalf("storetest: Options.Bulk = %d: want at least 4 names", opts.Bulk)
	}
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			// A fixed start in the present: PostgreSQL and Badger keep
			// times from year 1 to 9999 alike, but a present-day time is
			// what the renewer writes.
			opts.Clock.Set(time.Now().UTC().Truncate(time.Second))
			s := open(t)
			if s == nil {
				t.Fatal("open returned a nil store")
			}
			c.run(t, &suite{s: s, clock: opts.Clock, opts: opts})
		})
	}
}

// A case checks one rule of the contract.
type testCase struct {
	name string
	run  func(t *testing.T, x *suite)
}

// cases lists every case of the suite in the order Run runs them.
func cases() []testCase {
	return []testCase{
		{"CertificateRoundTrip", testCertificateRoundTrip},
		{"KeyPool", testKeyPool},
		{"CertificateReplaceRelinks", testCertificateReplaceRelinks},
		{"CertificateNewestWriteWins", testNewestWriteWins},
		{"CertificateInvalid", testCertificateInvalid},
		{"LookupWildcard", testLookupWildcard},
		{"PutCertificatesBatch", testPutCertificatesBatch},
		{"PutCertificatesAllOrNothing", testPutCertificatesAllOrNothing},
		{"ListCertificates", testListCertificates},
		{"CertificateScanner", testCertificateScanner},
		{"DomainRoundTrip", testDomainRoundTrip},
		{"DomainInvalid", testDomainInvalid},
		{"UpdateDomain", testUpdateDomain},
		{"UpdateDomainConcurrent", testUpdateDomainConcurrent},
		{"ConcurrentUse", testConcurrentUse},
		{"AddDomains", testAddDomains},
		{"ListDomains", testListDomains},
		{"DueIndex", testDueIndex},
		{"Accounts", testAccounts},
		{"Challenges", testChallenges},
		{"ListChallenges", testListChallenges},
		{"RateBuckets", testRateBuckets},
		{"NotFound", testNotFound},
		{"ContextDone", testContextDone},
		{"ChangeFeed", testChangeFeed},
		{"BulkAddDomains", testBulkAddDomains},
	}
}

// ctx returns a context for one call of the store.
func ctx(t *testing.T) context.Context { return t.Context() }

// isNotFound reports whether err is store.ErrNotFound.
func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }

// us truncates t to the microsecond, in UTC: what every engine keeps.
func us(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// sameTime reports whether a and b are the same instant to the microsecond.
func sameTime(a, b time.Time) bool { return us(a).Equal(us(b)) }
