package renewer

import (
	"context"
	"sync"
	"time"

	"github.com/certserver/certserver/store"
)

// fakeCA stands in for one ACME CA in the scheduler's unit tests: it
// issues self-signed certificates from its directory (Source store.SourceACME,
// Origin dir) and answers renewal information (RFC 9773) from windows the
// test sets per certificate ID, by default the span from 60% to 75% of
// the lifetime, which holds RenewalTime's two thirds ± 5%. Errors queued
// with fail answer the next orders, in turn. Integration tests use the
// real Pebble.
type fakeCA struct {
	dir   string
	clock *fakeClock
	life  time.Duration

	mu         sync.Mutex
	errs       []error
	orders     []fakeOrder
	windows    map[string][2]time.Time // by certificate ID
	retryAfter time.Duration
	pollErr    error
	polls      int
	during     func(Order)
	// noARI makes its directory say it offers no renewal information.
	noARI bool
}

// OffersRenewalInfo implements renewalInfoOfferer.
func (f *fakeCA) OffersRenewalInfo(ctx context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.noARI, nil
}

// fakeOrder is an order the fakeCA received, with the fake time it came.
type fakeOrder struct {
	Order
	At time.Time
}

func newFakeCA(dir string, clock *fakeClock) *fakeCA {
	return &fakeCA{dir: dir, clock: clock, life: 90 * 24 * time.Hour, windows: map[string][2]time.Time{}}
}

func (f *fakeCA) Directory() string { return f.dir }

func (f *fakeCA) fail(errs ...error) {
	f.mu.Lock()
	f.errs = append(f.errs, errs...)
	f.mu.Unlock()
}

func (f *fakeCA) Obtain(ctx context.Context, o Order) (*store.Certificate, error) {
	f.mu.Lock()
	f.orders = append(f.orders, fakeOrder{Order: o, At: f.clock.Now()})
	var err error
	if len(f.errs) > 0 {
		err, f.errs = f.errs[0], f.errs[1:]
	}
	during := f.during
	f.mu.Unlock()
	if during != nil {
		during(o)
	}
	if err != nil {
		return nil, err
	}
	now := f.clock.Now()
	c, err := selfSigned(o.Name, now, now.Add(f.life))
	if err != nil {
		return nil, err
	}
	c.Source, c.Origin = store.SourceACME, f.dir
	return c, nil
}

func (f *fakeCA) RenewalInfo(ctx context.Context, c *store.Certificate) (*RenewalInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.polls++
	if f.pollErr != nil {
		return nil, f.pollErr
	}
	w, ok := f.windows[c.ID]
	if !ok {
		life := c.NotAfter.Sub(c.NotBefore)
		w = [2]time.Time{c.NotBefore.Add(life * 60 / 100), c.NotBefore.Add(life * 75 / 100)}
	}
	return &RenewalInfo{Start: w[0], End: w[1], RetryAfter: f.retryAfter}, nil
}

// setWindow makes the CA suggest start to end for the certificate id.
func (f *fakeCA) setWindow(id string, start, end time.Time) {
	f.mu.Lock()
	f.windows[id] = [2]time.Time{start, end}
	f.mu.Unlock()
}

func (f *fakeCA) orderList() []fakeOrder {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeOrder(nil), f.orders...)
}

func (f *fakeCA) pollCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.polls
}
