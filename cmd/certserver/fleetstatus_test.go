package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
)

// hostsFleet is a certserver.Fleet whose hosts the test sets.
type hostsFleet struct {
	stateFleet
	hosts  []api.FleetHost
	latest uint64
}

func (f hostsFleet) Hosts(ctx context.Context) ([]api.FleetHost, uint64, error) {
	if _, _, err := f.stateFleet.Hosts(ctx); err != nil {
		return nil, 0, err
	}
	return f.hosts, f.latest, nil
}

// TestFleetStatus: `fleet status` lists every host with its lag, when it
// was last seen, whether it renews, its leases and orders; a host gone
// or lagging a minute or more, or the database down, exits 1; a single
// host exits 3.
func TestFleetStatus(t *testing.T) {
	now := time.Now()
	up := api.FleetStatus{Host: "edge-1", Renews: true, Ready: true,
		Database: api.FleetDatabase{Up: true, Since: now.Add(-time.Hour)},
		Replica:  api.FleetReplica{Applied: 120, Latest: 120}}
	healthy := []api.FleetHost{
		{Name: "edge-1", Applied: 120, SeenAt: now.Add(-3 * time.Second), Renews: true, LeasesHeld: 12, InFlight: 4},
		{Name: "edge-2", Applied: 117, LagVersions: 3, LagSeconds: 2, SeenAt: now.Add(-5 * time.Second), Renews: true, LeasesHeld: 9, InFlight: 2},
		{Name: "edge-3", Applied: 120, SeenAt: now.Add(-7 * time.Second)},
	}

	t.Run("every host in step", func(t *testing.T) {
		url, _ := startAdminWith(t, certserver.AdminConfig{Fleet: hostsFleet{stateFleet{up}, healthy, 120}})
		code, out, errOut := runCLI(t, url, "", "fleet", "status")
		if code != exitOK {
			t.Fatalf("exit %d, want 0\n%s%s", code, out, errOut)
		}
		for _, re := range []string{
			`\nasked     host edge-1, database up, copy at version 120, 0 behind, 3 hosts in the fleet, renews\n`,
			`\ndatabase  latest version 120, 3 hosts\n`,
			`\nHOST +LAG +LAST-SEEN +RENEWS +LEASES +IN-FLIGHT\n`,
			`\nedge-1 +0 +\d+s ago +yes +12 +4\n`,
			`\nedge-2 +3 \(2s\) +\d+s ago +yes +9 +2\n`,
			`\nedge-3 +0 +\d+s ago +no +0 +0\n`,
			`\nVERDICT   ok\n$`,
		} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("output does not match %q:\n%s", re, out)
			}
		}
		code, out, _ = runCLI(t, url, "", "fleet", "status", "--json")
		var doc fleetStatusReport
		if code != exitOK || json.Unmarshal([]byte(out), &doc) != nil {
			t.Fatalf("--json: exit %d\n%s", code, out)
		}
		if len(doc.Hosts) != 3 || doc.Hosts[1].LagVersions != 3 || doc.Hosts[0].LeasesHeld != 12 || doc.LatestVersion != 120 ||
			doc.Host != "edge-1" || len(doc.Attention) != 0 {
			t.Errorf("--json: %s", out)
		}
	})
	t.Run("a host gone and one lagging", func(t *testing.T) {
		hosts := append([]api.FleetHost(nil), healthy...)
		hosts[1].LagVersions, hosts[1].LagSeconds = 40, 90
		hosts[2].SeenAt, hosts[2].Gone = now.Add(-2*time.Hour), true
		url, _ := startAdminWith(t, certserver.AdminConfig{Fleet: hostsFleet{stateFleet{up}, hosts, 160}})
		code, out, errOut := runCLI(t, url, "", "fleet", "status")
		if code != exitAttention {
			t.Fatalf("exit %d, want %d\n%s%s", code, exitAttention, out, errOut)
		}
		for _, re := range []string{
			`\nedge-2 +40 \(1m\) +\d+s ago `,
			`\nedge-3 +0 +gone, 2h ago +no `,
			`\nVERDICT   attention: host edge-2's copy is 40 changes behind, the oldest waiting 1m; host edge-3 has not reported since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\n`,
		} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("output does not match %q:\n%s", re, out)
			}
		}
	})
	t.Run("database down", func(t *testing.T) {
		down := up
		down.Database = api.FleetDatabase{Since: now.Add(-5 * time.Minute), Error: "127.0.0.1:5432/certserver: connection refused"}
		url, _ := startAdminWith(t, certserver.AdminConfig{Fleet: hostsFleet{stateFleet{down}, healthy, 120}})
		code, out, errOut := runCLI(t, url, "", "fleet", "status")
		if code != exitAttention {
			t.Fatalf("exit %d, want %d\n%s%s", code, exitAttention, out, errOut)
		}
		if strings.Contains(out, "HOST") || !strings.Contains(out, "VERDICT   attention: the fleet's database is down since ") {
			t.Errorf("output:\n%s", out)
		}
	})
	t.Run("single host", func(t *testing.T) {
		url, _ := startAdminWith(t, certserver.AdminConfig{})
		code, out, errOut := runCLI(t, url, "", "fleet", "status")
		if code != exitUnknown || !strings.Contains(errOut, "runs no fleet") {
			t.Errorf("exit %d, want %d saying it runs no fleet\n%s%s", code, exitUnknown, out, errOut)
		}
	})
	t.Run("help names the exit codes", func(t *testing.T) {
		code, out, errOut := runCLI(t, "http://127.0.0.1:1", "", "fleet", "status", "--help")
		if code != exitOK || !strings.Contains(out+errOut, "Exit codes: 0 every host is seen and in step; 1 attention") {
			t.Errorf("--help: exit %d\n%s%s", code, out, errOut)
		}
	})
}

// TestFleetHostsView: GET /v1/fleet's hosts, from the hosts table, the
// database's latest version and the fleet's leases.
func TestFleetHostsView(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	hs := []store.Host{
		{Name: "a", Applied: 10, SeenAt: now.Add(-10 * time.Second), Renews: true, InFlight: 2, LagSeconds: 0.5},
		{Name: "b", Applied: 12, SeenAt: now.Add(-api.FleetHostGoneAfter)},
		{Name: "c", Applied: 12, SeenAt: now.Add(-api.FleetHostGoneAfter + time.Second), Renews: true},
	}
	got := fleetHosts(hs, 12, map[string]int{"a": 2, "c": 1}, now)
	want := []api.FleetHost{
		{Name: "a", Applied: 10, LagVersions: 2, LagSeconds: 0.5, SeenAt: hs[0].SeenAt, Renews: true, LeasesHeld: 2, InFlight: 2},
		{Name: "b", Applied: 12, SeenAt: hs[1].SeenAt, Gone: true},
		{Name: "c", Applied: 12, SeenAt: hs[2].SeenAt, Renews: true, LeasesHeld: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("fleetHosts = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("host %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestFleetHostHostsFromDatabase: a fleet host's GET /v1/fleet hosts come
// from PostgreSQL: each host's report (orders in flight, lag), its lag
// behind the latest version and the leases it holds.
func TestFleetHostHostsFromDatabase(t *testing.T) {
	ctx := t.Context()
	db, err := postgres.Open(ctx, postgres.Options{URL: pgtest.New(t), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	gate := newSharedGate()
	gate.open(db)
	t.Cleanup(func() { gate.Close() })
	f := &fleetHost{name: "edge-1", shared: gate}

	now := time.Now()
	if _, _, err := db.AddDomains(ctx, []*store.Domain{
		{Name: "a.example.com", State: store.StatePending, NextAttempt: now, AddedAt: now, UpdatedAt: now},
		{Name: "b.example.com", State: store.StatePending, NextAttempt: now, AddedAt: now, UpdatedAt: now},
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.PutCertificate(ctx, &store.Certificate{ID: "c1", Names: []string{"a.example.com"}, ChainPEM: []byte("x"), KeyPEM: []byte("k"),
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	latest, err := db.LatestVersion(ctx)
	if err != nil || latest == 0 {
		t.Fatalf("latest version %d, %v", latest, err)
	}
	for _, h := range []store.Host{
		{Name: "edge-1", Applied: latest, Renews: true, InFlight: 2},
		{Name: "edge-2", Applied: latest - 1, LagSeconds: 3},
	} {
		if err := db.ReportHost(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"a.example.com", "b.example.com"} {
		if _, err := db.Claim(ctx, "edge-1", n, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	hosts, got, err := f.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got != latest || len(hosts) != 2 ||
		hosts[0].Name != "edge-1" || hosts[0].LeasesHeld != 2 || hosts[0].InFlight != 2 || hosts[0].LagVersions != 0 || !hosts[0].Renews || hosts[0].Gone ||
		hosts[1].Name != "edge-2" || hosts[1].LeasesHeld != 0 || hosts[1].LagVersions != 1 || hosts[1].LagSeconds != 3 || hosts[1].Gone {
		t.Errorf("Hosts = %+v at %d (latest %d)", hosts, got, latest)
	}

	// This host's own count (the metric, FleetStatus): fresh while the
	// database answers; when a count fails, the last one stays and is
	// marked stale.
	f.follower = stubFollower{}
	logger := slog.New(slog.DiscardHandler)
	f.countLeases(ctx, logger)
	if s := f.FleetStatus(); s.LeasesHeld != 2 || s.LeasesError != "" {
		t.Errorf("after a count: leases %d, error %q; want 2 and none", s.LeasesHeld, s.LeasesError)
	}
	db.Close()
	f.countLeases(ctx, logger)
	if s := f.FleetStatus(); s.LeasesHeld != 2 || s.LeasesError == "" {
		t.Errorf("after a failed count: leases %d, error %q; want the last count (2) marked stale", s.LeasesHeld, s.LeasesError)
	}
}

// stubFollower is a follower that reports an empty state.
type stubFollower struct{}

func (stubFollower) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (stubFollower) Retry()                        {}
func (stubFollower) FleetStatus() api.FleetStatus  { return api.FleetStatus{} }
