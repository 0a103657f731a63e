package renewer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/store"
)

func TestChooseChallenge(t *testing.T) {
	noDNS := map[store.ChallengeType]string{store.ChallengeDNS01: "no DNS provider is configured", store.ChallengeTLSALPN01: "no responder"}
	for _, tc := range []struct {
		desc    string
		c       Challenges
		names   []string
		asked   store.ChallengeType
		want    store.ChallengeType
		wantErr string // in the refusal; "" for none
	}{
		{desc: "plain name, nothing set", names: []string{"a.example"}, want: store.ChallengeHTTP01},
		{desc: "the configured default", c: Challenges{Default: store.ChallengeTLSALPN01}, names: []string{"a.example"}, want: store.ChallengeTLSALPN01},
		{desc: "the name's own", c: Challenges{Default: store.ChallengeTLSALPN01}, names: []string{"a.example"}, asked: store.ChallengeDNS01, want: store.ChallengeDNS01},
		{desc: "wildcard takes dns-01 whatever is asked", names: []string{"*.a.example", "a.example"}, asked: store.ChallengeHTTP01, want: store.ChallengeDNS01},
		{desc: "wildcard as an extra name", names: []string{"a.example", "*.a.example"}, want: store.ChallengeDNS01},
		{desc: "wildcard without dns-01", c: Challenges{Off: noDNS}, names: []string{"*.a.example", "a.example"},
			want: store.ChallengeDNS01, wantErr: "*.a.example is a wildcard, which only dns-01 can prove, and dns-01 is not available: no DNS provider is configured"},
		{desc: "dns-01 asked, not configured", c: Challenges{Off: noDNS}, names: []string{"a.example"}, asked: store.ChallengeDNS01,
			want: store.ChallengeDNS01, wantErr: "challenge dns-01 asked for, and it is not available: no DNS provider is configured"},
		{desc: "auto takes http-01 first", c: Challenges{Default: store.ChallengeAuto}, names: []string{"a.example"}, want: store.ChallengeHTTP01},
		{desc: "auto without http-01", names: []string{"a.example"}, asked: store.ChallengeAuto,
			c: Challenges{Off: map[store.ChallengeType]string{store.ChallengeHTTP01: "no port 80"}}, want: store.ChallengeTLSALPN01},
		{desc: "auto with only dns-01", names: []string{"a.example"}, asked: store.ChallengeAuto,
			c: Challenges{Off: map[store.ChallengeType]string{store.ChallengeHTTP01: "no port 80", store.ChallengeTLSALPN01: "no responder"}}, want: store.ChallengeDNS01},
		{desc: "auto with nothing", names: []string{"a.example"}, asked: store.ChallengeAuto,
			c:    Challenges{Off: map[store.ChallengeType]string{store.ChallengeHTTP01: "no port 80", store.ChallengeTLSALPN01: "no responder", store.ChallengeDNS01: "no provider"}},
			want: store.ChallengeAuto, wantErr: "no challenge is available (http-01: no port 80; tls-alpn-01: no responder; dns-01: no provider)"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := tc.c.Choose(tc.names, tc.asked)
			if got != tc.want {
				t.Errorf("challenge %q, want %q", got, tc.want)
			}
			var pe *PreflightError
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tc.wantErr != "" && (!errors.As(err, &pe) || pe.Step != StepChallenge || !pe.Permanent() || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("error %v, want a permanent %s refusal saying %q", err, StepChallenge, tc.wantErr)
			}
		})
	}
}

// TestChallengeRefusedBeforeOrdering: a name that asks for dns-01 where
// none is configured is refused before anything is sent to the CA, its
// record saying which challenge and why; a wildcard set goes to the
// issuer as one order for dns-01, and the issued attempt says dns-01.
func TestChallengeRefusedBeforeOrdering(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	clock := newFakeClock(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC))
	iss := &scriptedIssuer{life: 90 * 24 * time.Hour, notAfter: func() time.Time { return clock.Now().Add(90 * 24 * time.Hour) }}
	off := map[store.ChallengeType]string{store.ChallengeDNS01: "no DNS provider is configured (set [dns01] provider)"}
	r, err := New(Config{Now: clock.Now, Seed: 1, CAs: []CA{{Issuer: iss}}, Challenges: Challenges{Off: off}}, st, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	now := clock.Now()
	for _, d := range []*store.Domain{
		{Name: "dns.example.test", State: store.StatePending, Challenge: store.ChallengeDNS01, NextAttempt: now},
		{Name: "*.shop.example.test", ExtraNames: []string{"shop.example.test"}, State: store.StatePending, NextAttempt: now},
	} {
		if err := st.PutDomain(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	r.process(ctx, "dns.example.test", false)
	d := getDomain(t, st, "dns.example.test")
	if iss.orderCount() != 0 {
		t.Fatalf("%d orders sent, want none", iss.orderCount())
	}
	if len(d.Attempts) != 1 || d.Attempts[0].Outcome != store.OutcomeRefused || d.Attempts[0].Challenge != store.ChallengeDNS01 ||
		!strings.Contains(d.LastError, "dns-01 asked for, and it is not available: no DNS provider is configured (set [dns01] provider)") {
		t.Fatalf("record %+v, want one refused dns-01 attempt naming the missing provider", d)
	}

	// With dns-01 answered, the wildcard set is one dns-01 order.
	r.cfg.Challenges = Challenges{}
	r.process(ctx, "*.shop.example.test", false)
	if iss.orderCount() != 1 {
		t.Fatalf("%d orders, want 1", iss.orderCount())
	}
	if o := iss.orders[0]; o.Challenge != store.ChallengeDNS01 || strings.Join(o.Names(), ",") != "*.shop.example.test,shop.example.test" {
		t.Errorf("order %+v, want dns-01 for the wildcard and its apex", o)
	}
	if d := getDomain(t, st, "*.shop.example.test"); d.State != store.StateValid || d.Attempts[0].Challenge != store.ChallengeDNS01 {
		t.Errorf("record %+v, want valid with an issued dns-01 attempt", d)
	}
}
