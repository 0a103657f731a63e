package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/postgres"
	"github.com/certserver/certserver/store/sealed"
)

const fleetHelp = `
Commands for a fleet of hosts that share one PostgreSQL database
([fleet] in the configuration; README, "Running a fleet").

Subcommands:
  migrate   copy a single host's store into the fleet's database
  status    every host of the fleet: lag, last seen, renews, leases, orders

Run 'certserver fleet <subcommand> --help' for flags and examples.
`

// fleetCommands are the subcommands of `certserver fleet`.
func fleetCommands() []command {
	return []command{
		{"migrate", "copy a single host's store into the fleet's database", runFleetMigrate},
		{"status", "every host of the fleet: lag, last seen, renews, leases, orders", runFleetStatus},
	}
}

func runFleet(ctx context.Context, e *env, args []string) int {
	return runGroup(ctx, e, "fleet", "<subcommand> [flags]", fleetHelp, fleetCommands(), args)
}

const fleetMigrateHelp = `
Copies a single host's Badger store (the directory [store] path names:
its names with their state and due times, certificates, ACME accounts,
rate-limit buckets and challenge tokens) into the fleet's PostgreSQL
database, the one the configuration's [fleet] section names. Private keys
are sealed under the configuration's [store] key_encryption_key_file; a
store whose keys were already encrypted is read with the same file.

Stop 'certserver serve' on the host first: its store is one process's at a
time (nginx goes on serving the certificates its workers hold meanwhile).

It is safe to run again, and to run from several hosts one after another:
a record the database already has is left as it is (a name the fleet
manages keeps its record; a certificate is replaced only by one that
expires later; a rate-limit bucket only by one that spent more), so a
second run copies nothing and says so. An interrupted run is completed by
running it again.

Progress goes to standard error (a bar on a terminal, else a line every
5s); the summary to standard output.

Exit codes: 0 copied (or nothing new); 1 failed (what was copied stays);
2 bad command line.

Examples:
  systemctl stop certserver
  certserver fleet migrate --from /var/lib/certserver --config /etc/certserver/certserver.toml
`

func runFleetMigrate(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("fleet migrate", "--from STORE_DIR [flags]", fleetMigrateHelp)
	from := fs.String("from", "", "the single host's store `directory` ([store] path of its configuration)")
	configPath := fs.String("config", defaultConfigPath, "the configuration `file` whose [fleet] names the database")
	progressMode := fs.String("progress", progressAuto, "report progress on standard error: `mode` auto (a bar on a terminal, else a line every "+progressInterval.String()+"), bar, lines or none")
	if code, ok := fs.parseNone(e, args); !ok {
		return code
	}
	switch *progressMode {
	case progressAuto, progressBar, progressLines, progressNone:
	default:
		return usageError(e, fs.Name(), "--progress must be auto, bar, lines or none")
	}
	if *from == "" {
		return usageError(e, fs.Name(), "--from is required: the directory of the single host's store ([store] path)")
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return fail(e, fs.Name(), err)
	}
	if !cfg.fleetEnabled() {
		return fail(e, fs.Name(), fmt.Errorf("%s has no [fleet] section: it names the database to copy into", *configPath))
	}
	if err := fleetMigrate(ctx, e, cfg, *from, *progressMode); err != nil {
		return fail(e, fs.Name(), err)
	}
	return exitOK
}

// fleetMigrate copies the store at dir into the database of cfg.
func fleetMigrate(ctx context.Context, e *env, cfg config, dir, progressMode string) error {
	logger := newLogger(e.stderr, logConfig{Level: "warn", Format: cfg.Log.Format})
	keyring, err := loadKeyring(cfg.Store)
	if err != nil {
		return err
	}
	badger, err := store.OpenBadger(dir, store.BadgerOptions{Logger: logger.With("subsystem", "store")})
	if err != nil {
		return fmt.Errorf("open store %s (stop certserver serve on this host first): %w", dir, err)
	}
	defer badger.Close()
	shared, err := openShared(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer shared.Close()

	exp, err := badger.Export(ctx)
	if err != nil {
		return fmt.Errorf("read store %s: %w", dir, err)
	}
	m := &migration{src: sealed.Wrap(badger, keyring), exp: exp, dst: sealed.Wrap(shared, keyring)}
	total, err := m.total(ctx)
	if err != nil {
		return fmt.Errorf("read store %s: %w", dir, err)
	}
	start := e.now()
	m.prog = newProgress(progressMode, e.stderr, "records", total, e.now)
	sum, err := m.run(ctx)
	m.prog.finish(m.done)
	if err != nil {
		fmt.Fprintf(e.stdout, "stopped after %d of %d records; what was copied stays, run the command again to go on:\n", m.done, total)
		sum.print(e.stdout)
		return fmt.Errorf("copy into %s: %w", shared.Database(), err)
	}
	took := e.now().Sub(start).Round(time.Millisecond)
	if sum.copied() == 0 {
		fmt.Fprintf(e.stdout, "nothing new: the database %s already holds the %d records of %s (%s)\n", shared.Database(), total, dir, took)
	} else {
		fmt.Fprintf(e.stdout, "copied %s into the database %s in %s:\n", dir, shared.Database(), took)
	}
	sum.print(e.stdout)
	return nil
}

// openShared opens the fleet's database of cfg's [fleet] section.
func openShared(ctx context.Context, cfg config, logger *slog.Logger) (*postgres.Store, error) {
	url, err := cfg.Fleet.databaseURL()
	if err != nil {
		return nil, err
	}
	st, err := postgres.Open(ctx, sharedOptions(cfg.Fleet, url, logger))
	if err != nil {
		if errors.Is(err, store.ErrUnavailable) {
			return nil, fmt.Errorf("the fleet's database: %w", err)
		}
		return nil, err
	}
	return st, nil
}

// sharedOptions are the options of the fleet's database for [fleet]
// fc: pool_size counts every connection a host opens, the one Listen
// opens beside the pool included.
func sharedOptions(fc fleetConfig, url string, logger *slog.Logger) postgres.Options {
	return postgres.Options{
		URL:      url,
		MaxConns: int32(fc.PoolSize - 1),
		Logger:   logger.With("subsystem", "fleet"),
	}
}
