package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// renewerLock is the key of the session advisory lock a fleet's renewing
// hosts contend for ("renw" in ASCII): the host whose session holds it
// is the fleet's one active renewer.
const renewerLock = 0x72656e77

// Pauses of HoldRenewerLock: how often a host standing by asks for the
// lock again, and how often the holder checks that its session is still
// there (a session the server closed has released the lock, so another
// host may have it a moment later).
var (
	renewerLockRetry = 5 * time.Second
	renewerLockCheck = 5 * time.Second
)

// HoldRenewerLock contends for the fleet's renewer role until ctx ends or
// the store is closed: on a connection of its own, outside the pool (a
// session advisory lock needs a session: a direct connection, or a
// PgBouncer in session mode), it asks for the lock every renewerLockRetry
// until it has it, then keeps the session and checks it every
// renewerLockCheck. PostgreSQL releases the lock when the session ends,
// so when the holding host dies, is cut off or closes its store, another
// takes the role over; a host whose session failed contends again on a
// new one.
//
// onChange is called with true when the lock is taken and with false when
// it is lost or given up, before the session that held it is closed, so
// that two hosts never both believe they hold it for longer than the
// holder takes to notice a session the server closed (renewerLockCheck).
// It is called from HoldRenewerLock's goroutine and must not block.
// HoldRenewerLock returns ctx's error, or nil when the store was closed.
func (s *Store) HoldRenewerLock(ctx context.Context, onChange func(held bool)) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-s.closed:
			stop()
		case <-ctx.Done():
		}
	}()
	connected := true // so that the first failure to connect is logged
	for {
		wasConnected := connected
		var err error
		connected, err = s.holdRenewerLock(ctx, onChange)
		if ctx.Err() != nil {
			break
		}
		// Logged when a session that was made fails, and once when
		// connecting starts failing, not every try of an outage.
		if connected || wasConnected {
			s.log.Warn("renewer lock: the session failed; contending again on a new one", "error", err)
		}
		if !pause(ctx, renewerLockRetry) {
			break
		}
	}
	select {
	case <-s.closed:
		return nil
	default:
		return ctx.Err()
	}
}

// holdRenewerLock contends for the lock on one session, and holds it
// while the session lasts. It returns when ctx ends or the session fails,
// and says whether the session was made.
func (s *Store) holdRenewerLock(ctx context.Context, onChange func(held bool)) (connected bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, s.conf.Copy())
	if err != nil {
		return false, fmt.Errorf("renewer lock: %w", s.unreachable(err))
	}
	held := false
	defer func() {
		if held {
			onChange(false)
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		conn.Close(cctx)
		cancel()
	}()
	for {
		if !held {
			if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", int64(renewerLock)).Scan(&held); err != nil {
				return true, fmt.Errorf("renewer lock: %w", s.unreachable(err))
			}
			if held {
				onChange(true)
			}
		} else {
			pctx, cancel := context.WithTimeout(ctx, listenPing)
			err := conn.Ping(pctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				return true, fmt.Errorf("renewer lock: no answer to a ping: %w", s.unreachable(err))
			}
		}
		wait := renewerLockRetry
		if held {
			wait = renewerLockCheck
		}
		if !pause(ctx, wait) {
			return true, ctx.Err()
		}
	}
}

// pause waits for d, and reports false when ctx ended first.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
