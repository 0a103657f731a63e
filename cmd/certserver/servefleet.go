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
	"github.com/certserver/certserver/store/replica"
	"github.com/certserver/certserver/store/sealed"
)

// fleetHost is what `serve` runs beside the servers on a fleet host
// ([fleet]): the shared database, which the admin API, the renewer and
// the metrics read and write, and the follower that keeps the host's
// local Badger copy in step with it, which the certificate and challenge
// endpoints read. No handshake waits on the database, and neither does
// the start: the database is opened in the background (connect), and
// until it answers the shared store answers store.ErrUnavailable.
type fleetHost struct {
	name   string
	renews bool
	shared *sharedGate
	// store is shared through the key decorator.
	store    *sealed.Store
	follower fleetFollower
	// renewer is this host's renewer once serve made it (setRenewer);
	// nil on a host that does not renew. leasesHeld is how many leases
	// this host held when countLeases last succeeded, leasesError why its
	// last attempt failed (nil when it did not).
	renewer     atomic.Pointer[renewer.Renewer]
	leasesHeld  atomic.Int64
	leasesError atomic.Pointer[string]
}

var _ certserver.Fleet = (*fleetHost)(nil)

// fleetFollower is what serve needs of the follower that keeps the local
// copy in step with the database.
type fleetFollower interface {
	// Run applies the database's changes to the local copy until ctx
	// ends, reconnecting by itself.
	Run(ctx context.Context) error
	// Retry syncs and listens again at once: the database answers now.
	Retry()
	// FleetStatus is the follower's state now, without I/O.
	FleetStatus() api.FleetStatus
}

// newFleetHost returns the fleet host cfg describes, whose follower
// copies the fleet's database into local. Nothing is opened yet: connect
// opens the database.
func newFleetHost(cfg config, keyring *sealed.Keyring, local *store.Badger, logger *slog.Logger) (*fleetHost, error) {
	// Refuse a database URL that cannot be read now, rather than in the
	// background.
	if _, err := cfg.Fleet.databaseURL(); err != nil {
		return nil, err
	}
	shared := newSharedGate()
	f := &fleetHost{name: cfg.Fleet.HostName, renews: cfg.renews(), shared: shared, store: sealed.Wrap(shared, keyring)}
	var err error
	f.follower, err = newFollower(cfg.Fleet.HostName, f.renews, f.inFlight, shared, local, logger.With("subsystem", "follower"))
	if err != nil {
		return nil, err
	}
	return f, nil
}

// connect opens the fleet's database, waiting for it while it is
// unavailable (store.ErrUnavailable): meanwhile the host serves its
// local copy, admin writes answer 503 and nothing is ordered. It says so
// once in the log, and once when the database answers; then it lets the
// shared store through and wakes the follower. Any other failure (a bad
// URL, a schema newer than this binary) is returned: serve stops with it,
// as a start would.
func (f *fleetHost) connect(ctx context.Context, cfg config, logger *slog.Logger) error {
	pause := sharedRetryMin
	var since time.Time
	for {
		db, err := openShared(ctx, cfg, logger)
		if err == nil {
			if !since.IsZero() {
				logger.Info("the fleet's database answers: admin writes and renewals are on", "waited", time.Since(since).Round(time.Second))
			}
			f.shared.open(db)
			f.follower.Retry()
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		if !errors.Is(err, store.ErrUnavailable) {
			return err
		}
		f.shared.notYet(err)
		if since.IsZero() {
			since = time.Now()
			logger.Warn("the fleet's database is unavailable: serving the local copy; admin writes answer 503 and nothing is ordered until it answers",
				"error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, sharedRetryMax)
	}
}

// FleetStatus implements certserver.Fleet.
func (f *fleetHost) FleetStatus() api.FleetStatus {
	s := f.follower.FleetStatus()
	s.Host, s.Renews = f.name, f.renews
	s.InFlight = f.inFlight()
	s.LeasesHeld = int(f.leasesHeld.Load())
	if e := f.leasesError.Load(); e != nil {
		s.LeasesError = *e
	}
	return s
}

// Close closes the database, if it was opened. Call it once everything
// that used it has stopped.
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

// GetChallenge implements store.Store. When the copy misses and the
// database cannot answer (down, or slower than the lookup's bound), the
// copy is asked once more, since the token may have reached it
// meanwhile; failing that, the database's error is returned rather than
// "not found", so that the endpoint logs why and the CA's request gets a
// 500 that says the host failed, not that the token does not exist.
// While the database is down, a miss is "not found", as the copy says.
func (s fleetChallenges) GetChallenge(ctx context.Context, token string) (string, error) {
	ka, err := s.Store.GetChallenge(ctx, token)
	if !errors.Is(err, store.ErrNotFound) {
		return ka, err
	}
	shared, serr := s.shared.GetChallenge(ctx, token)
	switch {
	case serr == nil:
		return shared, nil
	case errors.Is(serr, store.ErrNotFound):
		return "", err
	}
	if ka, lerr := s.Store.GetChallenge(context.WithoutCancel(ctx), token); lerr == nil {
		return ka, nil
	}
	if errors.Is(serr, store.ErrUnavailable) && !errors.Is(serr, context.DeadlineExceeded) {
		return "", err
	}
	return "", fmt.Errorf("the copy has no such token and the fleet's database did not answer: %w", serr)
}

// Bounds of the pause between two attempts to open the fleet's
// database: those of the copy's follower, so that both come back together.
const (
	sharedRetryMin = replica.DefaultRetryMin
	sharedRetryMax = replica.DefaultRetryMax
)
