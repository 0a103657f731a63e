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
// this host holds (FleetStatus.LeasesHeld, the metric
// certserver_fleet_leases_held), once the database is open. A failure
// keeps the last count; the follower already says when the database is
// down.
func (f *fleetHost) watchLeases(ctx context.Context, logger *slog.Logger) {
	select {
	case <-f.shared.Opened():
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(leaseWatchEvery)
	defer t.Stop()
	for {
		ls, err := f.shared.Leases(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			logger.Debug("count this host's leases", "error", err)
		case err == nil:
			f.leasesHeld.Store(int64(leasesOf(ls)[f.name]))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
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
	ls, err := f.shared.Leases(ctx)
	if err != nil {
		return nil, 0, err
	}
	return fleetHosts(hs, latest, ls, time.Now()), latest, nil
}

// fleetHosts describes hs, as the database knows them at latest, with
// the leases ls held at now.
func fleetHosts(hs []store.Host, latest uint64, ls []store.Lease, now time.Time) []api.FleetHost {
	held := leasesOf(ls)
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

// leasesOf counts the leases of ls by host.
func leasesOf(ls []store.Lease) map[string]int {
	n := map[string]int{}
	for _, l := range ls {
		n[l.Host]++
	}
	return n
}
