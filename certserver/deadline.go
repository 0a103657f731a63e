package certserver

import (
	"context"
	"sync"
	"time"
)

// lookupContext is a context with a deadline, as context.WithDeadline
// makes, that starts no timer until someone asks for its Done channel.
// The certificate endpoint bounds every store lookup with one; Badger's
// lookup only checks Err before it reads, so on the usual path no timer
// is ever started. A timer per request is not free for a sidecar that is
// idle between requests (the usual case: nginx asks only for names new to
// it): adding one wakes the Go runtime's network poller, sleeping in
// another thread, to shorten its sleep, one context switch more per
// request on top of the few an idle Go process pays anyway
// (BenchmarkMillion's lookup-one-sidecar-switches).
//
// Err reports context.DeadlineExceeded from the deadline on, by the clock,
// with or without a timer; Done, once called, closes at the deadline or
// when the parent is done. release must be called when the lookup is
// over, like the cancel function of context.WithDeadline. It is safe for
// concurrent use.
type lookupContext struct {
	context.Context // the parent: Value
	deadline        time.Time

	mu     sync.Mutex
	inner  context.Context // made by the first Done, else nil
	cancel context.CancelFunc
}

// withLookupDeadline returns a lookupContext of parent that expires at
// now+d, and its release function.
func withLookupDeadline(parent context.Context, d time.Duration) (*lookupContext, func()) {
	c := &lookupContext{Context: parent, deadline: time.Now().Add(d)}
	if pd, ok := parent.Deadline(); ok && pd.Before(c.deadline) {
		c.deadline = pd
	}
	return c, c.release
}

// Deadline returns the earlier of the parent's deadline and the lookup's.
func (c *lookupContext) Deadline() (time.Time, bool) { return c.deadline, true }

// Done returns a channel closed at the deadline or when the parent is
// done, starting the timer that closes it on the first call.
func (c *lookupContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inner == nil {
		c.inner, c.cancel = context.WithDeadline(c.Context, c.deadline)
	}
	return c.inner.Done()
}

// Err returns the parent's error, else context.DeadlineExceeded once the
// deadline has passed, else nil.
func (c *lookupContext) Err() error {
	c.mu.Lock()
	inner := c.inner
	c.mu.Unlock()
	if inner != nil {
		return inner.Err()
	}
	if err := c.Context.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// release stops the timer Done started, if any.
func (c *lookupContext) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cancel != nil {
		c.cancel()
	}
}
