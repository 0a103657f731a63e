package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer"
	"github.com/certserver/certserver/store"
)

// nopIssuer stands for a CA the plan never orders from.
type nopIssuer struct{}

func (nopIssuer) Obtain(ctx context.Context, o renewer.Order) (*store.Certificate, error) {
	return nil, errors.New("not in this test")
}

// TestEnrollmentPlan: 500,000 new names at Let's Encrypt's default 300
// orders per 3 hours take about 208 days, and `certserver queue` says so
// and says what to do; with an override of 3,000 per 3 hours, about 21.
func TestEnrollmentPlan(t *testing.T) {
	now := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		desc     string
		limits   renewer.LimitsConfig
		wantDays int
		override bool
	}{
		{desc: "Let's Encrypt's defaults", wantDays: 208, override: true},
		{desc: "an override of 3,000 per 3 hours", limits: renewer.LimitsConfig{NewOrders: renewer.Limit{Burst: 3000, Per: 3 * time.Hour}}, wantDays: 20, override: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			lim, err := renewer.NewLimiter(tc.limits, func() time.Time { return now })
			if err != nil {
				t.Fatal(err)
			}
			st, err := store.OpenBadger(t.TempDir(), store.BadgerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			rn, err := renewer.New(renewer.Config{Now: func() time.Time { return now },
				CAs: []renewer.CA{{Name: "letsencrypt", Issuer: nopIssuer{}, Limiter: lim}}}, st, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			p := queueStats{rn}.Plan(500_000)
			gotDays := int(p.DoneInSeconds / 86400)
			if !p.Limited || gotDays != tc.wantDays || len(p.CAs) != 1 || p.CAs[0].Orders != 500_000 {
				t.Fatalf("plan %+v: %d days, want %d", p, gotDays, tc.wantDays)
			}
			line := planLine(&p, now)
			if !strings.Contains(line, fmt.Sprintf("(in %dd)", tc.wantDays)) || strings.Contains(line, "override") != tc.override {
				t.Errorf("queue says %q", line)
			}
		})
	}
}
