package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/renewer"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/postgres"
	"github.com/certserver/certserver/store/sealed"
)

// fleetHost is what `serve` runs beside the servers on a fleet host
// ([fleet]): the shared database, which the admin API, the renewer and
// the metrics read and write, and the follower that keeps the host's
// local Badger copy in step with it, which the certificate and challenge
// endpoints read. No handshake waits on the database.
type fleetHost struct {
	name   string
	renews bool
	shared *postgres.Store
	// store is shared through the key decorator.
	store    *sealed.Store
	follower fleetFollower
	// activeRenewer is set while this host holds the fleet's renewer
	// role (holdRenewerRole).
	activeRenewer atomic.Bool
}

var _ certserver.Fleet = (*fleetHost)(nil)

// fleetFollower is what serve needs of the follower that keeps the local
// copy in step with the database.
type fleetFollower interface {
	// Run applies the database's changes to the local copy until ctx
	// ends, reconnecting by itself.
	Run(ctx context.Context) error
	// FleetStatus is the follower's state now, without I/O.
	FleetStatus() api.FleetStatus
}

// openFleet opens the fleet's database named by cfg and the follower that
// copies it into local.
func openFleet(ctx context.Context, cfg config, keyring *sealed.Keyring, local *store.Badger, logger *slog.Logger) (*fleetHost, error) {
	shared, err := waitForShared(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	// A host renews when it may (renew) and can (a CA is configured).
	renews := cfg.Fleet.Renew && cfg.ACME.Directory != ""
	f := &fleetHost{name: cfg.Fleet.HostName, renews: renews, shared: shared, store: sealed.Wrap(shared, keyring)}
	f.follower, err = newFollower(cfg.Fleet.HostName, renews, shared, local, logger.With("subsystem", "follower"))
	if err != nil {
		shared.Close()
		return nil, err
	}
	return f, nil
}

// holdRenewerRole contends for the fleet's renewer role until ctx ends
// (see postgres.Store.HoldRenewerLock): rn, started standing by, claims
// work only while this host holds it. rn logs each change.
func (f *fleetHost) holdRenewerRole(ctx context.Context, rn *renewer.Renewer) {
	_ = f.shared.HoldRenewerLock(ctx, func(held bool) {
		f.activeRenewer.Store(held)
		rn.SetActive(held)
	})
}

// FleetStatus implements certserver.Fleet.
func (f *fleetHost) FleetStatus() api.FleetStatus {
	s := f.follower.FleetStatus()
	s.Host, s.Renews = f.name, f.renews
	s.ActiveRenewer = f.activeRenewer.Load()
	return s
}

// Hosts implements certserver.Fleet.
func (f *fleetHost) Hosts(ctx context.Context) ([]api.FleetHost, error) {
	hs, err := f.shared.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.FleetHost, len(hs))
	for i, h := range hs {
		out[i] = api.FleetHost{Name: h.Name, Applied: h.Applied, SeenAt: h.SeenAt, Renews: h.Renews}
	}
	return out, nil
}

// Close closes the database. Call it once everything that used it has
// stopped.
func (f *fleetHost) Close() error { return f.shared.Close() }

// fleetChallenges is the store a fleet host's challenge endpoint reads:
// its local copy, and on a miss the shared database. A token the renewer
// of this or another host has just written may reach the CA's request
// before it reaches this copy; a miss costs one read of the database,
// and when the database is down the copy's answer stands. Only the
// challenge endpoint reads it: handshakes never do.
type fleetChallenges struct {
	store.Store // the local copy
	shared      store.Store
}

// GetChallenge implements store.Store.
func (s fleetChallenges) GetChallenge(ctx context.Context, token string) (string, error) {
	ka, err := s.Store.GetChallenge(ctx, token)
	if !errors.Is(err, store.ErrNotFound) {
		return ka, err
	}
	if shared, serr := s.shared.GetChallenge(ctx, token); serr == nil {
		return shared, nil
	}
	return "", err
}

// Bounds of the pause between two attempts to reach the fleet's database
// at start.
const (
	sharedRetryMin = time.Second
	sharedRetryMax = 30 * time.Second
)

// waitForShared opens the fleet's database, waiting for it while it is
// unavailable (store.ErrUnavailable) rather than failing the start: a
// host restarted during an outage starts once the database is back, and
// nginx serves what its workers hold meanwhile. It says so once in the
// log, and once when the database answers. Any other failure (a bad
// URL, a schema newer than this binary) is returned at once.
func waitForShared(ctx context.Context, cfg config, logger *slog.Logger) (*postgres.Store, error) {
	pause := sharedRetryMin
	var since time.Time
	for {
		shared, err := openShared(ctx, cfg, logger)
		if err == nil {
			if !since.IsZero() {
				logger.Info("the fleet's database answers: starting", "waited", time.Since(since).Round(time.Second))
			}
			return shared, nil
		}
		if !errors.Is(err, store.ErrUnavailable) {
			return nil, err
		}
		if since.IsZero() {
			since = time.Now()
			logger.Warn("the fleet's database is unavailable: waiting for it before starting (nginx serves the certificates its workers hold meanwhile)",
				"error", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the fleet's database: %w (stopped while waiting for it)", err)
		case <-time.After(pause):
		}
		pause = min(2*pause, sharedRetryMax)
	}
}
