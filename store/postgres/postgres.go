// Package postgres is the store.Store of a fleet: one PostgreSQL database
// that every certserver of the fleet shares, through pgx.
//
// It keeps the semantics store.Store documents, as Badger does, and is a
// store.ReplicationSource: every write of a certificate record or a
// challenge token takes the next version of one sequence and announces it
// with NOTIFY (the version only, never the record), so that each host's
// local copy can follow. Its schema is created and upgraded at Open by the
// numbered SQL files of migrations/.
//
// When the database cannot be reached (refused, timed out, shut down,
// gone in the middle of a statement) its errors wrap store.ErrUnavailable;
// a write that returns one wrote nothing, since every write is one
// transaction, except when the connection broke while its commit was
// under way: that error also wraps store.ErrUncertain, and the write is
// not tried again. The database URL, which may hold a password, is never
// logged and never part of an error.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/certserver/certserver/store"
)

// Options configures Open. The zero value of every field but URL and
// Logger selects its default.
type Options struct {
	// URL is the database's connection URL or key=value string, as libpq
	// and pgx take it (postgres://user:password@host:5432/db?sslmode=…).
	// It is a secret: never logged. Required.
	URL string

	// MaxConns bounds the connections of the store's pool. Listen takes
	// one more of its own. Default 10.
	MaxConns int32

	// ConnectTimeout bounds one attempt to connect; a database that does
	// not answer within it is unavailable (store.ErrUnavailable). Default
	// 5 seconds.
	ConnectTimeout time.Duration

	// HostRetention is how long a host that stopped reporting
	// (ReportHost) still holds back the pruning of tombstones. A host
	// silent for longer no longer does; should it come back, ChangesAfter
	// answers it ErrPruned and it must copy the store afresh. Default 30
	// days.
	HostRetention time.Duration

	// Logger receives the store's own messages (schema migrations).
	// Required.
	Logger *slog.Logger

	// Clock returns the current time; it decides when challenges and
	// rate buckets expire and which certificate a name falls back to,
	// and stamps zero StoredAt, AddedAt, UpdatedAt and SeenAt fields.
	// Default time.Now. Leases (store.Leaser) are claimed, renewed and
	// compared with the database's clock unless Clock is set (tests set
	// it), so that the fleet's hosts agree on when a lease lapses
	// whatever their own clocks say.
	Clock func() time.Time
}

// Defaults of Options.
const (
	defaultMaxConns       = 10
	defaultConnectTimeout = 5 * time.Second
	defaultHostRetention  = 30 * 24 * time.Hour
)

// Channel is the NOTIFY channel on which the store announces versions.
const Channel = "certserver_changes"

// Store is the store.Store kept in PostgreSQL. It is safe for concurrent
// use; Close ends it.
type Store struct {
	pool  *pgxpool.Pool
	conf  *pgx.ConnConfig // for Listen's connections of their own
	where string          // "host:port/database", for errors; never the URL
	log   *slog.Logger
	now   func() time.Time
	// dbClock says that leases go by the database's clock (Options.Clock
	// unset): see leaseNow.
	dbClock bool
	opts    Options
}

var (
	_ store.Store             = (*Store)(nil)
	_ store.ReplicationSource = (*Store)(nil)
)

// Open connects to the database of opts.URL, brings its schema up to date
// (see Migrate) and returns the store. A database whose schema is newer
// than this binary knows is refused. A database that cannot be reached
// returns an error wrapping store.ErrUnavailable.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.URL == "" {
		return nil, errors.New("open postgres: empty database URL")
	}
	if opts.Logger == nil {
		return nil, errors.New("open postgres: nil logger")
	}
	if opts.MaxConns == 0 {
		opts.MaxConns = defaultMaxConns
	}
	if opts.MaxConns < 1 {
		return nil, fmt.Errorf("open postgres: max conns %d below 1", opts.MaxConns)
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = defaultConnectTimeout
	}
	if opts.HostRetention == 0 {
		opts.HostRetention = defaultHostRetention
	}
	dbClock := opts.Clock == nil
	if dbClock {
		opts.Clock = time.Now
	}
	pc, err := pgxpool.ParseConfig(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("open postgres: the database URL cannot be parsed%s (the URL is not shown: it may hold a password); see https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-CONNSTRING", parseReason(err))
	}
	pc.MaxConns = opts.MaxConns
	pc.ConnConfig.ConnectTimeout = opts.ConnectTimeout
	pc.HealthCheckPeriod = 10 * time.Second
	pc.ConnConfig.RuntimeParams["application_name"] = "certserver"
	where := describe(pc.ConnConfig)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("open postgres %s: %w", where, err)
	}
	s := &Store{
		pool:    pool,
		conf:    pc.ConnConfig,
		where:   where,
		log:     opts.Logger.With("engine", "postgres", "database", where),
		now:     opts.Clock,
		dbClock: dbClock,
		opts:    opts,
	}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres %s: %w", where, s.fail(err))
	}
	return s, nil
}

// parseReason returns ": " and why pgx could not parse a database URL,
// when that can be said without quoting the URL; else "". pgx's own
// message quotes the URL, its password masked on a best effort basis
// only, and so does a net/url error.
func parseReason(err error) string {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return ""
	}
	inner := errors.Unwrap(err)
	if inner == nil {
		return ""
	}
	return ": " + inner.Error()
}

// describe names a database for errors and logs: host, port and database,
// never the user's password.
func describe(c *pgx.ConnConfig) string {
	host := c.Host
	if strings.HasPrefix(host, "/") {
		return fmt.Sprintf("%s/.s.PGSQL.%d/%s", host, c.Port, c.Database)
	}
	return fmt.Sprintf("%s/%s", net.JoinHostPort(host, fmt.Sprint(c.Port)), c.Database)
}

// Database names the store's database as errors and logs do:
// "host:port/database" (never the URL, which may hold a password).
func (s *Store) Database() string { return s.where }

// Close closes the store's pool, waiting for connections in use to be
// returned. No method may be called after it.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// fail returns err, wrapping store.ErrUnavailable around it when it says
// that the database could not be reached, with the database's name.
func (s *Store) fail(err error) error {
	if err == nil || errors.Is(err, store.ErrUnavailable) || errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded) || !unavailable(err) {
		return err
	}
	var fe final
	if errors.As(err, &fe) && fe.commit {
		return fmt.Errorf("%w (postgres %s), %w: %w", store.ErrUnavailable, s.where, store.ErrUncertain, fe.err)
	}
	return fmt.Errorf("%w (postgres %s): %w", store.ErrUnavailable, s.where, err)
}

// final marks an error of a function run by retry that must not be run
// again: it may have done what cannot be undone. ScanCertificates has
// handed records to its caller; a transaction's COMMIT (commit) lost its
// answer, and the database may have made the write.
type final struct {
	err    error
	commit bool
}

func (e final) Error() string {
	if e.commit {
		return "commit: " + e.err.Error()
	}
	return e.err.Error()
}

func (e final) Unwrap() error { return e.err }

// unavailable reports whether err says that the database could not be
// reached or went away, as opposed to refusing what was asked.
func unavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			pgErr.Code == "57P01", // admin_shutdown
			pgErr.Code == "57P02", // crash_shutdown
			pgErr.Code == "57P03", // cannot_connect_now (starting up, shutting down)
			pgErr.Code == "53300", // too_many_connections
			pgErr.Code == "25006": // read_only_sql_transaction: a standby, after a failover
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr),
		pgconn.Timeout(err),
		errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		errors.As(err, &netErr):
		return true
	}
	return false
}

// retryable reports whether a transaction that failed with err may be run
// again whole: the server chose it as the victim of a deadlock or a
// serialization conflict, or its connection failed before anything was
// sent.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	return pgconn.SafeToRetry(err)
}

// rollbackTimeout bounds the rollback of a transaction whose work failed.
const rollbackTimeout = 5 * time.Second

// maxAttempts bounds how often retry runs its function.
const maxAttempts = 5

// retry runs fn, again when it fails in a way retryable allows, and once
// more after the first failure that says the database is unreachable:
// the pool may hold connections a server that restarted has closed, so it
// drops them all (pgxpool.Pool.Reset) and the next attempt connects
// afresh. A server that is really gone fails that attempt too. An error
// wrapping a final is never retried, nor is any once ctx is done. Errors
// that say the database is unreachable wrap store.ErrUnavailable; a
// context that is done is its error.
func (s *Store) retry(ctx context.Context, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var (
		err   error
		reset bool
	)
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		err = fn()
		var fe final
		if err == nil || ctx.Err() != nil || errors.As(err, &fe) {
			break
		}
		if !reset && unavailable(err) {
			s.pool.Reset()
			reset = true
			continue
		}
		if !retryable(err) {
			break
		}
	}
	return s.fail(err)
}

// tx runs fn in a transaction of the given options and commits it,
// through retry (fn must not keep state across calls). Nothing fn wrote
// stays when it returns an error.
func (s *Store) tx(ctx context.Context, opts pgx.TxOptions, fn func(pgx.Tx) error) error {
	return s.retry(ctx, func() error { return s.tryTx(ctx, opts, fn) })
}

// tryTx runs fn in one transaction and commits it. An error of fn is
// returned as it is, whatever the rollback says.
func (s *Store) tryTx(ctx context.Context, opts pgx.TxOptions, fn func(pgx.Tx) error) error {
	tx, err := s.pool.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		// A rollback that fails (the connection is gone) leaves the
		// connection to be closed; the transaction ends with it.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		tx.Rollback(rctx)
		cancel()
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return final{err: err, commit: true}
	}
	return nil
}

// versioned runs fn as tx does, after taking the turn of versioned writes
// (the lock of replication_state's row, held to the commit, so that
// versions commit in order) and checking the lease ctx carries, if any
// (fence: an error wrapping store.ErrLeaseLost writes nothing). fn returns the highest version it took, or 0
// when it changed nothing replicated; the transaction then records it as
// the latest and announces it on Channel, both at its commit.
func (s *Store) versioned(ctx context.Context, fn func(pgx.Tx) (uint64, error)) error {
	return s.tx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT 1 FROM replication_state FOR UPDATE"); err != nil {
			return err
		}
		if err := fence(ctx, tx); err != nil {
			return err
		}
		v, err := fn(tx)
		if err != nil || v == 0 {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE replication_state SET latest_version = $1 RETURNING pg_notify($2, $3)",
			int64(v), Channel, strconv.FormatUint(v, 10))
		return err
	})
}

// read runs fn in a read-only transaction, as tx does.
func (s *Store) read(ctx context.Context, fn func(pgx.Tx) error) error {
	return s.tx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly}, fn)
}

// query runs fn with the pool, outside a transaction (each statement is
// its own), through retry. Each statement fn runs must do the same when
// it runs twice.
func (s *Store) query(ctx context.Context, fn func(q querier) error) error {
	return s.retry(ctx, func() error { return fn(s.pool) })
}

// write runs fn, a write of the domains row of name, as query does when
// ctx carries no lease; under a lease (store.WithLease) it runs fn in a
// transaction after checking the lease (fence), so that a write whose
// lease was lost writes nothing. The record's row is locked before the
// lease's, as a claim locks them, so that the two never wait for each
// other (a deadlock).
func (s *Store) write(ctx context.Context, name string, fn func(q querier) error) error {
	if _, ok := store.LeaseFrom(ctx); !ok {
		return s.query(ctx, fn)
	}
	return s.tx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT 1 FROM domains WHERE name = $1 FOR UPDATE", name); err != nil {
			return err
		}
		if err := fence(ctx, tx); err != nil {
			return err
		}
		return fn(tx)
	})
}

// querier is what a pool and a transaction both do.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// notFound turns pgx's missing row into store.ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}
