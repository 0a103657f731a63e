package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/renewer"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/replica"
)

// setRenewer tells the fleet host its renewer, whose orders in flight it
// reports.
func (f *fleetHost) setRenewer(rn *renewer.Renewer) { f.renewer.Store(rn) }

// inFlight returns how many orders this host's renewer has under way (0
// without one). It does not block.
func (f *fleetHost) inFlight() int {
	if rn := f.renewer.Load(); rn != nil {
		return rn.InFlight()
	}
	return 0
}

// leaseWatchEvery is how often watchLeases counts this host's leases: as
// often as a host reports itself.
const leaseWatchEvery = replica.DefaultReportInterval

// watchLeases counts, every leaseWatchEvery until ctx ends, the leases
// this host holds (countLeases), once the database is open.
func (f *fleetHost) watchLeases(ctx context.Context, logger *slog.Logger) {
	select {
	case <-f.shared.Opened():
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(leaseWatchEvery)
	defer t.Stop()
	for {
		f.countLeases(ctx, logger)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// countLeases counts the leases this host holds (FleetStatus.LeasesHeld,
// the metric certserver_fleet_leases_held) with one GROUP BY, not a read
// of every lease. A failure keeps the last count, which the metric goes
// on showing, and marks it stale: FleetStatus.LeasesError (GET /v1/fleet's
// leases_error) says why until a count succeeds again.
func (f *fleetHost) countLeases(ctx context.Context, logger *slog.Logger) {
	n, err := f.shared.LeaseCounts(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		logger.Debug("count this host's leases", "error", err)
		msg := err.Error()
		f.leasesError.Store(&msg)
		return
	}
	f.leasesHeld.Store(int64(n[f.name]))
	f.leasesError.Store(nil)
}

// Hosts implements certserver.Fleet: every host that reported, with its
// lag behind the database's latest version, whether it is gone, and the
// leases it holds.
func (f *fleetHost) Hosts(ctx context.Context) ([]api.FleetHost, uint64, error) {
	hs, err := f.shared.Hosts(ctx)
	if err != nil {
		return nil, 0, err
	}
	latest, err := f.shared.LatestVersion(ctx)
	if err != nil {
		return nil, 0, err
	}
	held, err := f.shared.LeaseCounts(ctx)
	if err != nil {
		return nil, 0, err
	}
	return fleetHosts(hs, latest, held, time.Now()), latest, nil
}

// fleetHosts describes hs, as the database knows them at latest, with
// the count of leases each held at now (held, by host).
func fleetHosts(hs []store.Host, latest uint64, held map[string]int, now time.Time) []api.FleetHost {
	out := make([]api.FleetHost, len(hs))
	for i, h := range hs {
		out[i] = api.FleetHost{
			Name:       h.Name,
			Applied:    h.Applied,
			LagSeconds: h.LagSeconds,
			SeenAt:     h.SeenAt,
			Gone:       now.Sub(h.SeenAt) >= api.FleetHostGoneAfter,
			Renews:     h.Renews,
			LeasesHeld: held[h.Name],
			InFlight:   h.InFlight,
		}
		if latest > h.Applied {
			out[i].LagVersions = latest - h.Applied
		}
	}
	return out
}
