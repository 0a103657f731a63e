// Package clocktest is the clock of the renewer's and its limiter's tests:
// it stands still until a test sets or advances it, so that what decides
// when (backoff, rate-limit refills, renewal windows) is checked to the
// nanosecond without sleeping. Safe for concurrent use.
package clocktest

import (
	"sync"
	"time"
)

// Clock is a clock that moves only when told to.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a Clock standing at t.
func New(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time; it is what a Config's Now is given.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
