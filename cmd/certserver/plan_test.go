package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/renewer"
	"github.com/certserver/certserver/renewer/ratelimit"
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
		limits   ratelimit.LimitsConfig
		wantDays int
		override bool
	}{
		{desc: "Let's Encrypt's defaults", wantDays: 208, override: true},
		{desc: "an override of 3,000 per 3 hours", limits: ratelimit.LimitsConfig{NewOrders: ratelimit.Limit{Burst: 3000, Per: 3 * time.Hour}}, wantDays: 20, override: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			lim, err := ratelimit.NewLimiter(tc.limits, func() time.Time { return now })
			if err != nil {
				t.Fatal(err)
			}
			st, err := store.OpenBadger(t.TempDir(), store.BadgerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			rn, err := renewer.New(renewer.Config{Now: func() time.Time { return now },
				CAs: []renewer.CA{{Name: "letsencrypt", Issuer: nopIssuer{}, Limiter: lim}}}, st, slog.New(slog.NewTextHandler(io.Discard, nil)))
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

// dirIssuer is a CA the queue never orders from, with a directory URL.
type dirIssuer string

func (d dirIssuer) Obtain(ctx context.Context, o renewer.Order) (*store.Certificate, error) {
	return nil, errors.New("not in this test")
}

func (d dirIssuer) Directory() string { return string(d) }

// TestQueueShowsCAs: `certserver queue` and GET /v1/queue show each CA's
// counters and its account's limits: the room in the new-orders bucket
// and the name whose failed validations block it, as the Limiter has them.
func TestQueueShowsCAs(t *testing.T) {
	now := time.Now()
	lim, err := ratelimit.NewLimiter(ratelimit.LimitsConfig{NewOrders: ratelimit.Limit{Burst: 2, Per: time.Hour}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a.example.com", "b.example.org"} {
		if r := lim.Reserve([]string{n}, ratelimit.OrderNew); !r.OK {
			t.Fatal(r)
		}
	}
	for range 5 {
		lim.AuthzFailed("bad.example.net")
	}
	st, err := store.OpenBadger(t.TempDir(), store.BadgerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rn, err := renewer.New(renewer.Config{CAs: []renewer.CA{{Name: "letsencrypt", Issuer: nopIssuer{}, Limiter: lim, OffersARI: true},
		{Issuer: dirIssuer("https://acme.example/dir")}}},
		st, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	url, _ := startAdminWith(t, certserver.AdminConfig{Queue: queueStats{rn}})
	code, out, errOut := runCLI(t, url, "", "queue")
	if code != exitOK {
		t.Fatalf("exit code %d: %s", code, errOut)
	}
	for _, re := range []string{
		`\nCA letsencrypt +\(ARI\)\n`,
		`\n  orders +0 sent: 0 issued, 0 failed, 0 rate-limited; 0 held back by the limits, 0 refused by pre-flight\n`,
		`\n  renewal info +0 polls, 0 failed, 0 windows moved\n`,
		`\n  new orders +0\.0 of 2 per 1h, next \S+Z \(in (29|30)m\)\n`,
		`\n  failed validations per name +5 per 1h: 1 name blocked, first bad\.example\.net \S+Z \(in (11|12)m\)\n`,
		`\nCA https://acme\.example/dir *\n  orders +0 sent`, // named by its directory: not twice
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %q:\n%s", re, out)
		}
	}
	if strings.Contains(out, "certs per registered domain") || strings.Contains(out, "order requests") {
		t.Errorf("limits with room or without a limit shown:\n%s", out)
	}
	code, out, _ = runCLI(t, url, "", "queue", "--json")
	var q api.Queue
	if err := json.Unmarshal([]byte(out), &q); code != exitOK || err != nil || len(q.CAs) != 2 {
		t.Fatalf("--json: %d %v %s", code, err, out)
	}
	c := q.CAs[0]
	var orders, failures *api.LimitStatus
	for i, l := range c.Limits {
		switch l.Limit {
		case string(ratelimit.LimitNewOrders):
			orders = &c.Limits[i]
		case string(ratelimit.LimitAuthzFailures):
			failures = &c.Limits[i]
		}
	}
	if c.Name != "letsencrypt" || !c.OffersARI || orders == nil || failures == nil {
		t.Fatalf("--json CA %+v", c)
	}
	if orders.Burst != 2 || orders.PerSeconds != 3600 || orders.Blocked != 1 || len(orders.Buckets) != 1 || orders.Buckets[0].Tokens > 0.01 ||
		orders.Buckets[0].Full.Before(now.Add(59*time.Minute)) {
		t.Errorf("new orders limit %+v", *orders)
	}
	if failures.Blocked != 1 || len(failures.Buckets) != 1 || failures.Buckets[0].Key != "bad.example.net" {
		t.Errorf("failed validations limit %+v", *failures)
	}
}
