package renewer

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

// TestTLSALPN01Provider: Present stores the key authorization under the
// name's tls-alpn-01 record, in the name's canonical spelling, where the
// responder looks; CleanUp removes it, also after the order's context
// ended; bad names and key authorizations are refused.
func TestTLSALPN01Provider(t *testing.T) {
	st := badgerStore(t)
	now := time.Now()
	ctx, cancel := context.WithCancel(t.Context())
	p := &tlsALPN01Provider{ctx: ctx, store: st, ttl: 10 * time.Minute, now: func() time.Time { return now }}
	const token = "PMnLMBrevyyMUJ6XG1iO6ln1XyeYSr2m1Jt3ZV91ti8"
	const keyAuth = token + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"

	tests := []struct {
		desc    string
		domain  string
		keyAuth string
		ok      bool
	}{
		{desc: "wildcard", domain: "*.alpn.test", keyAuth: keyAuth},
		{desc: "IP literal", domain: "127.0.0.1", keyAuth: keyAuth},
		{desc: "key authorization of another token", domain: "www.alpn.test", keyAuth: "other.abc"},
		{desc: "thumbprint not base64url", domain: "www.alpn.test", keyAuth: token + ".a/b"},
		{desc: "good, mixed case and trailing dot", domain: "WWW.Alpn.Test.", keyAuth: keyAuth, ok: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			err := p.Present(tc.domain, token, tc.keyAuth)
			if (err == nil) != tc.ok {
				t.Fatalf("Present = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	rec := store.TLSALPN01Token("www.alpn.test")
	if rec != "tls-alpn-01:www.alpn.test" {
		t.Fatalf("record %q, want tls-alpn-01:www.alpn.test", rec)
	}
	if got, err := st.GetChallenge(t.Context(), rec); err != nil || got != keyAuth {
		t.Errorf("GetChallenge(%s) = %q, %v; want %q", rec, got, err, keyAuth)
	}
	if _, err := st.GetChallenge(t.Context(), token); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetChallenge(the CA's token) = %v, want ErrNotFound: tls-alpn-01 records are keyed by name", err)
	}

	cancel()
	if err := p.CleanUp("www.alpn.test", token, keyAuth); err != nil {
		t.Fatalf("CleanUp after cancel: %v", err)
	}
	if _, err := st.GetChallenge(t.Context(), rec); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetChallenge after CleanUp: %v, want ErrNotFound", err)
	}
	if err := p.CleanUp("*.alpn.test", token, keyAuth); err != nil {
		t.Errorf("CleanUp of a refused name: %v", err)
	}
}

func TestCheckChallenges(t *testing.T) {
	tests := []struct {
		desc  string
		types []ChallengeType
		ok    bool
	}{
		{desc: "none", ok: true},
		{desc: "both", types: []ChallengeType{ChallengeTLSALPN01, ChallengeHTTP01}, ok: true},
		{desc: "dns-01 is not answered here", types: []ChallengeType{"dns-01"}},
		{desc: "twice", types: []ChallengeType{ChallengeHTTP01, ChallengeHTTP01}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if err := checkChallenges(tc.types); (err == nil) != tc.ok {
				t.Errorf("checkChallenges(%v) = %v, want ok=%v", tc.types, err, tc.ok)
			}
		})
	}
}
