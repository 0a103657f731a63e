package certserver

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
)

// fakeFleet is a Fleet whose state the test sets.
type fakeFleet struct {
	mu       sync.Mutex
	status   api.FleetStatus
	hosts    []api.FleetHost
	latest   uint64
	hostsErr error
}

func (f *fakeFleet) FleetStatus() api.FleetStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeFleet) Hosts(context.Context) ([]api.FleetHost, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hosts, f.latest, f.hostsErr
}

func (f *fakeFleet) set(fn func(s *api.FleetStatus)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.status)
}

// TestFleetDatabaseDown: while a fleet's database is down, a host whose
// local copy caught up stays ready and alive, /readyz says since when the
// database is down and why, GET /v1/fleet and the metrics say it too; a
// host still catching up is not ready.
func TestFleetDatabaseDown(t *testing.T) {
	local := newTestStore(t)
	shared := &downStore{Store: newTestStore(t)}
	shared.down.Store(true)
	since := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	fl := &fakeFleet{
		status: api.FleetStatus{Host: "edge-1", Renews: true, Ready: true,
			Database: api.FleetDatabase{Up: false, Since: since, Error: "dial tcp 10.0.0.5:5432: connection refused"},
			Replica:  api.FleetReplica{Applied: 41, Latest: 41}},
		hostsErr: errDown,
	}
	m, err := NewMetrics(MetricsConfig{Fleet: fl}, shared, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	base := startAdmin(t, AdminConfig{Token: testToken, Fleet: fl, HealthStore: local, Metrics: m}, shared)

	resp, _, raw := call(t, "GET", base+"/healthz", "", "", "")
	if resp.StatusCode != 200 {
		t.Errorf("healthz: %d %q, want 200: the host serves from its copy", resp.StatusCode, raw)
	}
	resp, _, raw = call(t, "GET", base+"/readyz", "", "", "")
	want := "ready\ndatabase: down since 2026-12-05T09:00:00Z: dial tcp 10.0.0.5:5432: connection refused\nreplica: applied 41, lag 0 versions\n"
	if resp.StatusCode != 200 || raw != want {
		t.Errorf("readyz: %d %q, want 200 %q", resp.StatusCode, raw, want)
	}

	resp, _, raw = call(t, "GET", base+"/v1/fleet", "Bearer "+testToken, "", "")
	var doc api.Fleet
	if resp.StatusCode != 200 || json.Unmarshal([]byte(raw), &doc) != nil {
		t.Fatalf("GET /v1/fleet: %d %s", resp.StatusCode, raw)
	}
	if doc.Host != "edge-1" || doc.Database.Up || !doc.Database.Since.Equal(since) || doc.Hosts != nil ||
		!strings.Contains(doc.HostsError, "connection refused") {
		t.Errorf("GET /v1/fleet: %s", raw)
	}

	mfs := scrape(t, base)
	for _, c := range []struct {
		name string
		want float64
	}{
		{"certserver_fleet_database_up", 0},
		{"certserver_fleet_database_since_seconds", float64(since.Unix())},
		{"certserver_fleet_replica_applied_version", 41},
		{"certserver_fleet_replica_lag_versions", 0},
		{"certserver_fleet_replica_lag_seconds", 0},
		{"certserver_fleet_ready", 1},
		{"certserver_fleet_orders_in_flight", 0},
		{"certserver_fleet_leases_held", 0},
	} {
		if v, ok := value(mfs, c.name, "host", "edge-1"); !ok || v != c.want {
			t.Errorf("%s = %v (present %v), want %v", c.name, v, ok, c.want)
		}
	}

	// Back, but a change waits: lag in versions and seconds. The
	// renewer works on names it holds leases on.
	fl.set(func(s *api.FleetStatus) {
		s.Database = api.FleetDatabase{Up: true, Since: since.Add(time.Minute)}
		s.Replica = api.FleetReplica{Applied: 41, Latest: 44, LagVersions: 3, LagSeconds: 1.5}
		s.InFlight, s.LeasesHeld = 4, 7
	})
	mfs = scrape(t, base)
	if v, _ := value(mfs, "certserver_fleet_database_up", "host", "edge-1"); v != 1 {
		t.Errorf("certserver_fleet_database_up = %v once back, want 1", v)
	}
	if v, _ := value(mfs, "certserver_fleet_replica_lag_versions", "host", "edge-1"); v != 3 {
		t.Errorf("certserver_fleet_replica_lag_versions = %v, want 3", v)
	}
	if v, _ := value(mfs, "certserver_fleet_replica_lag_seconds", "host", "edge-1"); v != 1.5 {
		t.Errorf("certserver_fleet_replica_lag_seconds = %v, want 1.5", v)
	}
	if v, _ := value(mfs, "certserver_fleet_orders_in_flight", "host", "edge-1"); v != 4 {
		t.Errorf("certserver_fleet_orders_in_flight = %v, want 4", v)
	}
	if v, _ := value(mfs, "certserver_fleet_leases_held", "host", "edge-1"); v != 7 {
		t.Errorf("certserver_fleet_leases_held = %v, want 7", v)
	}

	// The database answers but the copy cannot follow it: /readyz and
	// GET /v1/fleet say why.
	const pruned = "changes pruned: tombstones through version 90 are gone, the copy is at 41: empty it and copy the store afresh"
	fl.set(func(s *api.FleetStatus) { s.Replica.SyncError = pruned })
	resp, _, raw = call(t, "GET", base+"/readyz", "", "", "")
	if !strings.Contains(raw, "replica: applied 41, lag 3 versions, cannot follow: "+pruned) {
		t.Errorf("readyz with a copy that cannot follow: %d %q, want it to say why", resp.StatusCode, raw)
	}
	_, _, raw = call(t, "GET", base+"/v1/fleet", "Bearer "+testToken, "", "")
	if !strings.Contains(raw, `"sync_error":"`+pruned+`"`) {
		t.Errorf("GET /v1/fleet with a copy that cannot follow: %s, want its sync_error", raw)
	}
	fl.set(func(s *api.FleetStatus) { s.Replica.SyncError = "" })

	// Still catching up since the start: not ready, and says how far.
	fl.set(func(s *api.FleetStatus) { s.Ready = false })
	resp, _, raw = call(t, "GET", base+"/readyz", "", "", "")
	if resp.StatusCode != 503 || !strings.HasPrefix(raw, "not ready: the local copy is catching up") || !strings.Contains(raw, "applied version 41 of 44") {
		t.Errorf("readyz while catching up: %d %q, want 503 saying how far the copy is", resp.StatusCode, raw)
	}
}

// TestFleetRouteOnlyOnFleetHosts: a single host has no GET /v1/fleet and
// its /readyz says nothing of a database.
func TestFleetRouteOnlyOnFleetHosts(t *testing.T) {
	base := startAdmin(t, AdminConfig{Token: testToken}, newTestStore(t))
	if resp, _, raw := call(t, "GET", base+"/v1/fleet", "Bearer "+testToken, "", ""); resp.StatusCode != 404 {
		t.Errorf("GET /v1/fleet on a single host: %d %s, want 404", resp.StatusCode, raw)
	}
	if resp, _, raw := call(t, "GET", base+"/readyz", "", "", ""); resp.StatusCode != 200 || raw != "ready\n" {
		t.Errorf("readyz on a single host: %d %q", resp.StatusCode, raw)
	}
}
