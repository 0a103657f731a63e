package main

import (
	"context"
	"encoding/json"
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
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
	"github.com/certserver/certserver/store/sealed"
)

// TestQueueShowsFleetBudget: on a fleet host the CA's limiter is the
// fleet's (the shared store, behind the key decorator, offers the shared
// buckets), while a single host's stays its own; GET /v1/queue and
// `certserver queue` on one host show the budget another host spent, say
// it is the fleet's, and the planner counts the fleet's room.
func TestQueueShowsFleetBudget(t *testing.T) {
	url := pgtest.New(t)
	discard := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := ratelimit.LimitsConfig{NewOrders: ratelimit.Limit{Burst: 2, Per: time.Hour}}
	line, _ := generateKeyLine(t)
	kr, err := sealed.ParseKeyring(strings.NewReader(line+"\n"), "kek")
	if err != nil {
		t.Fatal(err)
	}
	var lims [2]*ratelimit.Limiter
	var stores [2]store.Store
	for i := range lims {
		db, err := postgres.Open(context.Background(), postgres.Options{URL: url, Logger: discard})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		// A fleet host's chain: the key decorator over the shared gate.
		gate := newSharedGate()
		gate.open(db)
		stores[i] = sealed.Wrap(gate, kr)
		if lims[i], err = newLimiter(cfg, stores[i], "account:fleet"); err != nil {
			t.Fatal(err)
		}
		if !lims[i].Shared() {
			t.Fatal("a fleet host's limiter is not the fleet's")
		}
		if _, ok := store.As[store.AccountLocker](stores[i]); !ok {
			t.Fatal("a fleet host's store offers no account lock: its issuer would register an account of its own")
		}
	}
	badger, err := store.OpenBadger(t.TempDir(), store.BadgerOptions{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { badger.Close() })
	if own, err := newLimiter(cfg, badger, "account:fleet"); err != nil || own.Shared() {
		t.Fatalf("a single host's limiter: shared %v, %v; want its own", own != nil && own.Shared(), err)
	}

	// Host 1 spends the budget; host 2 shows it.
	for _, n := range []string{"a.example.com", "b.example.org"} {
		if r := lims[0].Reserve([]string{n}, ratelimit.OrderNew); !r.OK {
			t.Fatal(r)
		}
	}
	rn, err := renewer.New(renewer.Config{CAs: []renewer.CA{{Name: "letsencrypt", Issuer: nopIssuer{}, Limiter: lims[1]}}}, stores[1], discard)
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := startAdminWith(t, certserver.AdminConfig{Queue: queueStats{rn}})
	code, out, errOut := runCLI(t, admin, "", "queue")
	if code != exitOK {
		t.Fatalf("exit code %d: %s", code, errOut)
	}
	for _, re := range []string{
		`\n  budget +the fleet's: every host spends these limits, shared in the database\n`,
		`\n  new orders +0\.0 of 2 per 1h, next \S+Z \(in (29|30)m\)\n`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %q:\n%s", re, out)
		}
	}
	code, out, _ = runCLI(t, admin, "", "queue", "--json")
	var q api.Queue
	if err := json.Unmarshal([]byte(out), &q); code != exitOK || err != nil || len(q.CAs) != 1 {
		t.Fatalf("--json: %d %v %s", code, err, out)
	}
	if c := q.CAs[0]; !c.FleetLimits || c.LimitsUnavailable {
		t.Errorf("--json: fleet_limits %v, limits_unavailable %v; want true, false", c.FleetLimits, c.LimitsUnavailable)
	}
	p := queueStats{rn}.Plan(10)
	if len(p.CAs) != 1 || !p.CAs[0].Fleet || p.CAs[0].Room >= 1 {
		t.Errorf("plan on host 2: %+v; want the fleet's budget, less than one order of room", p.CAs)
	}
}
