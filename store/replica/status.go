package replica

import "time"

// Status is a snapshot of a Follower, for /readyz, `certserver status`
// and metrics. It holds no secret: the database's errors name it by host,
// port and database, never by its URL.
type Status struct {
	// Host is the host's name in the fleet.
	Host string `json:"host"`
	// Ready says the local copy may serve: its first sync is done, or
	// the database was unreachable at start and an earlier run of the
	// copy completed a sync (a copy whose first sync was cut short is
	// not ready until one completes). It never goes back to false: an outage later
	// leaves the host serving what it has.
	Ready bool `json:"ready"`
	// DatabaseUp says the last exchange with the shared store worked.
	// False also before the first one.
	DatabaseUp bool `json:"database_up"`
	// DownSince is when the current outage began (zero while up);
	// DownCause is the last failure seen in it.
	DownSince time.Time `json:"database_down_since,omitzero"`
	DownCause string    `json:"database_error,omitempty"`
	// SyncError is the last failure of a sync while the database
	// answers (a refused query, a local copy that cannot be written);
	// "" once a sync works.
	SyncError string `json:"sync_error,omitempty"`
	// Applied is the last version the local copy applied; Latest the
	// latest version the shared store is known to hold.
	Applied uint64 `json:"applied_version"`
	Latest  uint64 `json:"latest_version"`
	// LagVersions is Latest minus Applied, or 0 when nothing is left to
	// apply.
	LagVersions uint64 `json:"lag_versions"`
	// Lag is how long the oldest change known and not yet applied has
	// been known (0 when none is).
	Lag time.Duration `json:"-"`
	// LagSeconds is Lag in seconds.
	LagSeconds float64 `json:"lag_seconds"`
}

// Status returns the follower's state now. Safe for concurrent use.
func (f *Follower) Status() Status {
	now := f.now()
	f.mu.Lock()
	defer f.mu.Unlock()
	s := &f.st
	st := Status{
		Host:       f.cfg.Host,
		Ready:      s.ready,
		DatabaseUp: s.up,
		DownSince:  s.downSince,
		DownCause:  s.cause,
		SyncError:  s.syncErr,
		Applied:    s.applied,
		Latest:     max(s.latest, s.applied),
	}
	if len(s.pending) > 0 {
		st.LagVersions = st.Latest - st.Applied
		st.Lag = max(0, now.Sub(s.pending[0].at))
		st.LagSeconds = st.Lag.Seconds()
	}
	return st
}
