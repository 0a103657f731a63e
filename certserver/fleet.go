package certserver

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/valyala/fasthttp"
)

// Fleet is what the admin API and the metrics of a fleet host ([fleet])
// report of its place in the fleet: the state its follower keeps (the
// local copy's lag, whether the shared database answers). It is declared
// here and satisfied in cmd. Its methods are safe for concurrent use.
type Fleet interface {
	// FleetStatus returns the host's state now. It does no I/O and does
	// not wait: GET /readyz and every scrape of /metrics call it.
	FleetStatus() api.FleetStatus
	// Hosts returns the fleet's hosts as the shared database knows them,
	// in name order, and the database's latest version, which their lag
	// is counted from. It fails, wrapping store.ErrUnavailable, while the
	// database is down.
	Hosts(ctx context.Context) (hosts []api.FleetHost, latest uint64, err error)
}

// showFleet answers GET /v1/fleet: this host's state and the fleet's
// hosts. The state comes from the follower, so it is answered while the
// database is down too (with the hosts left out and the reason).
func (a *AdminAPI) showFleet(ctx context.Context, rc *fasthttp.RequestCtx, _ params) error {
	out := api.Fleet{FleetStatus: a.cfg.Fleet.FleetStatus()}
	hosts, latest, err := a.cfg.Fleet.Hosts(ctx)
	if err != nil {
		out.HostsError = err.Error()
	} else {
		out.Hosts, out.LatestVersion = hosts, latest
	}
	writeJSON(rc, fasthttp.StatusOK, out)
	return nil
}

// fleetReadiness is what GET /readyz says of the fleet, a line of its
// own ("database: up", "database: down since …"), and, when the local
// copy has not caught up since the start, why the host is not ready.
// The database being down does not make a host unready: it serves from
// its local copy for as long as the outage lasts.
func fleetReadiness(s api.FleetStatus) (line string, notReady error) {
	line = "database: up"
	if !s.Database.Up {
		line = "database: down"
		if !s.Database.Since.IsZero() {
			line += " since " + s.Database.Since.UTC().Format(time.RFC3339)
		}
		if s.Database.Error != "" {
			line += ": " + s.Database.Error
		}
	}
	line += "\nreplica: applied " + strconv.FormatUint(s.Replica.Applied, 10) +
		", lag " + strconv.FormatUint(s.Replica.LagVersions, 10) + " versions"
	if s.Replica.SyncError != "" {
		line += ", cannot follow: " + s.Replica.SyncError
	}
	if !s.Ready {
		notReady = fmt.Errorf("the local copy is catching up with the fleet's database (applied version %d of %d)",
			s.Replica.Applied, s.Replica.Latest)
	}
	return line, notReady
}
