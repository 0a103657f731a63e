package renewer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

func TestCheckToken(t *testing.T) {
	tests := []struct {
		desc  string
		token string
		ok    bool
	}{
		{desc: "pebble and let's encrypt length", token: "PMnLMBrevyyMUJ6XG1iO6ln1XyeYSr2m1Jt3ZV91ti8", ok: true},
		{desc: "128 bits", token: strings.Repeat("a", 22), ok: true},
		{desc: "all of the alphabet", token: "ABCXYZabcxyz0189-_ABCXYZ", ok: true},
		{desc: "longest", token: strings.Repeat("_", 256), ok: true},
		{desc: "empty", token: ""},
		{desc: "too short", token: strings.Repeat("a", 21)},
		{desc: "too long", token: strings.Repeat("a", 257)},
		{desc: "padding", token: strings.Repeat("a", 22) + "=="},
		{desc: "path traversal", token: "../../../../etc/passwd-aaaaaa"},
		{desc: "slash", token: strings.Repeat("a", 22) + "/b"},
		{desc: "standard base64", token: strings.Repeat("a", 22) + "+"},
		{desc: "space", token: strings.Repeat("a", 22) + " "},
		{desc: "non-ascii", token: strings.Repeat("a", 22) + "é"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if err := checkToken(tc.token); (err == nil) != tc.ok {
				t.Errorf("checkToken(%q) = %v, want ok=%v", tc.token, err, tc.ok)
			}
		})
	}
}

func TestHTTP01Provider(t *testing.T) {
	st := badgerStore(t)
	now := time.Now()
	ctx, cancel := context.WithCancel(t.Context())
	p := &http01Provider{ctx: ctx, store: st, ttl: 10 * time.Minute, now: func() time.Time { return now }}
	token := "PMnLMBrevyyMUJ6XG1iO6ln1XyeYSr2m1Jt3ZV91ti8"
	keyAuth := token + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"

	tests := []struct {
		desc    string
		token   string
		keyAuth string
		ok      bool
	}{
		{desc: "bad token", token: "../x", keyAuth: "../x.abc"},
		{desc: "key authorization of another token", token: token, keyAuth: "other." + strings.Repeat("a", 43)},
		{desc: "key authorization without thumbprint", token: token, keyAuth: token + "."},
		{desc: "thumbprint not base64url", token: token, keyAuth: token + ".a/b"},
		{desc: "good", token: token, keyAuth: keyAuth, ok: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			err := p.Present("a.example.test", tc.token, tc.keyAuth)
			if (err == nil) != tc.ok {
				t.Fatalf("Present = %v, want ok=%v", err, tc.ok)
			}
			if !tc.ok {
				return
			}
			got, err := st.GetChallenge(t.Context(), tc.token)
			if err != nil || got != tc.keyAuth {
				t.Errorf("GetChallenge = %q, %v; want %q", got, err, tc.keyAuth)
			}
		})
	}

	// CleanUp removes the token even after the order's context ended.
	cancel()
	if err := p.CleanUp("a.example.test", token, keyAuth); err != nil {
		t.Fatalf("CleanUp after cancel: %v", err)
	}
	if _, err := st.GetChallenge(t.Context(), token); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetChallenge after CleanUp: %v, want ErrNotFound", err)
	}
	if err := p.CleanUp("a.example.test", "../x", "../x.abc"); err != nil {
		t.Errorf("CleanUp of a refused token: %v", err)
	}
	if err := p.CleanUp("a.example.test", token, keyAuth); err != nil {
		t.Errorf("second CleanUp: %v", err)
	}
}

// A token that is never cleaned up expires from the store.
func TestHTTP01ProviderTokenExpires(t *testing.T) {
	st := badgerStore(t)
	past := time.Now().Add(-time.Hour)
	p := &http01Provider{ctx: t.Context(), store: st, ttl: time.Minute, now: func() time.Time { return past }}
	token := strings.Repeat("b", 43)
	if err := p.Present("a.example.test", token, token+".thumb"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetChallenge(t.Context(), token); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetChallenge of an expired token: %v, want ErrNotFound", err)
	}
}

// fencedDeletes is a store whose lease was lost: a challenge removal
// made under a lease (store.WithLease) is refused with ErrLeaseLost, as
// a Leaser refuses it.
type fencedDeletes struct{ store.Store }

func (s fencedDeletes) DeleteChallenge(ctx context.Context, token string) error {
	if l, ok := store.LeaseFrom(ctx); ok {
		return fmt.Errorf("delete challenge %s: lease of %s token %d: %w", token, l.Name, l.Token, store.ErrLeaseLost)
	}
	return s.Store.DeleteChallenge(ctx, token)
}

// CleanUp removes the token of an order whose lease was lost meanwhile:
// the token is the order's alone, so the removal is not fenced.
func TestHTTP01ProviderCleanUpAfterLeaseLost(t *testing.T) {
	st := badgerStore(t)
	ctx := store.WithLease(t.Context(), store.Lease{Name: "a.example.test", Host: "h1", Token: 3, Expires: time.Now().Add(time.Minute)})
	p := &http01Provider{ctx: ctx, store: fencedDeletes{st}, ttl: 10 * time.Minute, now: time.Now}
	token := strings.Repeat("c", 43)
	if err := p.Present("a.example.test", token, token+".thumb"); err != nil {
		t.Fatal(err)
	}
	if err := p.CleanUp("a.example.test", token, token+".thumb"); err != nil {
		t.Fatalf("CleanUp after the lease was lost: %v", err)
	}
	if _, err := st.GetChallenge(t.Context(), token); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetChallenge after CleanUp: %v, want ErrNotFound", err)
	}
}
