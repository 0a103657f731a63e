package store

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestUpdateDomain(t *testing.T) {
	ctx := context.Background()
	clock := &testClock{now: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)}
	b := openTestBadger(t, "", clock)
	first := clock.Now().Add(time.Hour)
	if err := b.PutDomain(ctx, &Domain{Name: "a.example.com", State: StatePending, NextAttempt: first}); err != nil {
		t.Fatal(err)
	}

	t.Run("moves the due entry and stamps UpdatedAt", func(t *testing.T) {
		clock.Advance(time.Minute)
		later := first.Add(24 * time.Hour)
		err := b.UpdateDomain(ctx, "a.example.com", func(d *Domain) error {
			d.State, d.NextAttempt = StateValid, later
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		d, err := b.GetDomain(ctx, "a.example.com")
		if err != nil || d.State != StateValid || !d.NextAttempt.Equal(later) || !d.UpdatedAt.Equal(clock.Now()) {
			t.Fatalf("after update: %+v, %v", d, err)
		}
		due, err := b.Due(ctx, later.Add(time.Hour), 10)
		if err != nil || len(due) != 1 || !due[0].At.Equal(later) {
			t.Fatalf("due index after update: %v, %v; want one entry at %v", due, err, later)
		}
	})

	t.Run("an error from fn writes nothing", func(t *testing.T) {
		stop := errors.New("stop")
		err := b.UpdateDomain(ctx, "a.example.com", func(d *Domain) error {
			d.State = StateRemoved
			return stop
		})
		if !errors.Is(err, stop) {
			t.Fatalf("UpdateDomain = %v, want fn's error", err)
		}
		if d, _ := b.GetDomain(ctx, "a.example.com"); d.State != StateValid {
			t.Fatalf("state %s after a refused update, want valid", d.State)
		}
	})

	t.Run("a missing record is ErrNotFound and fn is not called", func(t *testing.T) {
		called := false
		err := b.UpdateDomain(ctx, "missing.example.com", func(*Domain) error { called = true; return nil })
		if !errors.Is(err, ErrNotFound) || called {
			t.Fatalf("UpdateDomain = %v (fn called: %v), want ErrNotFound without calling fn", err, called)
		}
	})

	t.Run("renaming is refused", func(t *testing.T) {
		err := b.UpdateDomain(ctx, "a.example.com", func(d *Domain) error { d.Name = "b.example.com"; return nil })
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("UpdateDomain = %v, want ErrInvalid", err)
		}
		if _, err := b.GetDomain(ctx, "b.example.com"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("renamed record exists: %v", err)
		}
	})
}

// TestUpdateDomainConcurrent increments a counter from many goroutines: a
// read-then-PutDomain would lose increments, UpdateDomain must not.
func TestUpdateDomainConcurrent(t *testing.T) {
	ctx := context.Background()
	clock := &testClock{now: time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)}
	b := openTestBadger(t, "", clock)
	if err := b.PutDomain(ctx, &Domain{Name: "count.example.com", State: StatePending}); err != nil {
		t.Fatal(err)
	}
	const goroutines, each = 8, 25
	var wg sync.WaitGroup
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if err := b.UpdateDomain(ctx, "count.example.com", func(d *Domain) error { d.Failures++; return nil }); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	d, err := b.GetDomain(ctx, "count.example.com")
	if err != nil || d.Failures != goroutines*each {
		t.Fatalf("failures = %d (%v), want %d", d.Failures, err, goroutines*each)
	}
}
