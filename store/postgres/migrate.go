package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// The schema's migrations: migrations/NNNN_what.sql, numbered from 0001
// up, each applied once, in order. A number may be missing: numbers are
// handed out to branches of work ahead of their merge, and a branch
// carries only its own. A database records every migration it applied
// (certserver_schema), and migrate applies each one it has not, so one
// that a later merge brings in below the newest applied still runs. A
// released file is never edited: a change of schema is a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one numbered SQL file.
type migration struct {
	version int
	name    string // file name
	sql     string
}

// migrations returns the embedded migrations in version order, or an error
// when their numbering is broken (a bug of the build, caught by tests).
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("migration file %s is not named NNNN_what.sql", e.Name())
		}
		if last := len(out); v < 1 || last > 0 && v <= out[last-1].version {
			return nil, fmt.Errorf("migration file %s: numbers must start at 1 and increase", e.Name())
		}
		b, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	return out, nil
}

// SchemaVersion is the version of the newest schema this binary knows: the
// number of its last migration.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// migrationLock is the key of the advisory lock under which migrations
// are applied ("cert" in ASCII), so that hosts starting together apply
// each one once.
const migrationLock = 0x63657274

// migrate brings the schema up to date in one transaction under the
// migration lock: it applies every migration above the version the
// database records in certserver_schema, and records each. A database
// whose schema is newer than this binary knows is refused.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	known := ms[len(ms)-1].version
	var from int
	var ran []string // the migrations applied now
	err = s.tx(ctx, pgx.TxOptions{}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrationLock)); err != nil {
			return fmt.Errorf("lock for migrations: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS certserver_schema (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return fmt.Errorf("create certserver_schema: %w", err)
		}
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM certserver_schema").Scan(&from); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if from > known {
			return fmt.Errorf("the database's schema is version %d, newer than this certserver knows (version %d): run a certserver at least as new as the one that upgraded it", from, known)
		}
		ran = ran[:0]
		applied := map[int]bool{}
		rows, err := tx.Query(ctx, "SELECT version FROM certserver_schema")
		if err != nil {
			return fmt.Errorf("read schema versions: %w", err)
		}
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return fmt.Errorf("read schema versions: %w", err)
			}
			applied[v] = true
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read schema versions: %w", err)
		}
		for _, m := range ms {
			if applied[m.version] {
				continue
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("apply migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO certserver_schema (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
				return fmt.Errorf("record migration %s: %w", m.name, err)
			}
			ran = append(ran, m.name)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(ran) > 0 {
		s.log.Info("database schema upgraded", "from_version", from, "to_version", known, "applied", strings.Join(ran, ","))
	}
	return nil
}
