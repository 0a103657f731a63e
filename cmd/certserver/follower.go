package main

import (
	"context"
	"errors"
	"log/slog"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/replica"
)

// follower adapts store/replica's Follower to what serve needs of it.
type follower struct{ f *replica.Follower }

// newFollower returns the follower that applies the changes of the
// fleet's database to the host's local Badger store, reporting host (and
// whether it renews, and inFlight's count of its orders under way) to the
// fleet. Both hold private
// keys sealed; the local store's decorator opens them when they are
// served.
func newFollower(host string, renews bool, inFlight func() int, shared store.ReplicationSource, local *store.Badger, logger *slog.Logger) (fleetFollower, error) {
	f, err := replica.New(replica.Config{Source: shared, Replica: local, Host: host, Renews: renews, InFlight: inFlight, Logger: logger})
	if err != nil {
		return nil, err
	}
	return follower{f}, nil
}

// Run follows until ctx ends; its end is no error.
func (f follower) Run(ctx context.Context) error {
	err := f.f.Run(ctx)
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return nil
	}
	return err
}

// Retry implements fleetFollower.
func (f follower) Retry() { f.f.Retry() }

// FleetStatus maps the follower's status to the admin API's.
func (f follower) FleetStatus() api.FleetStatus {
	s := f.f.Status()
	return api.FleetStatus{
		Host:  s.Host,
		Ready: s.Ready,
		Database: api.FleetDatabase{
			Up:    s.DatabaseUp,
			Since: s.DownSince,
			Error: s.DownCause,
		},
		Replica: api.FleetReplica{Applied: s.Applied, Latest: s.Latest, LagVersions: s.LagVersions, LagSeconds: s.LagSeconds,
			SyncError: s.SyncError},
	}
}
