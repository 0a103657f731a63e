package store

import (
	"context"
	"testing"
	"time"
)

// WithoutLease drops the lease of WithLease and keeps the context's
// other values; a context that had none is left with none.
func TestWithoutLease(t *testing.T) {
	type otherKey struct{}
	l := Lease{Name: "a.example", Host: "h1", Token: 7, Expires: time.Unix(1e9, 0)}
	ctx := WithLease(context.WithValue(context.Background(), otherKey{}, "kept"), l)
	if got, ok := LeaseFrom(ctx); !ok || got != l {
		t.Fatalf("LeaseFrom(WithLease) = %v, %v; want %v", got, ok, l)
	}
	for _, tc := range []struct {
		desc string
		ctx  context.Context
	}{
		{"under a lease", WithoutLease(ctx)},
		{"without one", WithoutLease(context.WithValue(context.Background(), otherKey{}, "kept"))},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got, ok := LeaseFrom(tc.ctx); ok {
				t.Errorf("LeaseFrom(WithoutLease) = %v, want none", got)
			}
			if v := tc.ctx.Value(otherKey{}); v != "kept" {
				t.Errorf("the context's other value is %v, want kept", v)
			}
		})
	}
	if got, ok := LeaseFrom(WithLease(WithoutLease(ctx), l)); !ok || got != l {
		t.Errorf("WithLease after WithoutLease: %v, %v; want %v", got, ok, l)
	}
}
