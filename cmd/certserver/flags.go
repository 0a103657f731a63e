package main

import (
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
)

// Flag values that are checked while the command line is parsed, so that
// a bad value is a usage error (exit code 2, naming the flag) the same way
// in every command, and never reaches the admin API to come back as a
// failure. Each checks with the rule the admin API applies.

// windowFlag is a time window ("7d", "72h") as GET /v1/domains?expiring=
// takes it; it keeps the text the operator gave.
type windowFlag struct{ s string }

func (w *windowFlag) String() string { return w.s }

func (w *windowFlag) Set(s string) error {
	if _, err := certserver.ParseWindow(s); err != nil {
		return err
	}
	w.s = s
	return nil
}

// windowVar defines a window flag with a default ("" for none).
func windowVar(fs *flagSet, name, def, usage string) *string {
	w := &windowFlag{s: def}
	fs.Var(w, name, usage)
	return &w.s
}

// positiveDuration is a duration that must be above zero (--timeout).
type positiveDuration struct{ d *time.Duration }

func (p positiveDuration) String() string {
	if p.d == nil {
		return ""
	}
	return p.d.String()
}

func (p positiveDuration) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return errors.New("want a duration such as 30s or 2m")
	}
	if d <= 0 {
		return errors.New("must be positive")
	}
	*p.d = d
	return nil
}

// positiveDurationVar defines a positive duration flag.
func positiveDurationVar(fs *flagSet, name string, def time.Duration, usage string) *time.Duration {
	d := def
	fs.Var(positiveDuration{&d}, name, usage)
	return &d
}

// statesFlag is a comma-separated list of domain states.
type statesFlag struct{ states []string }

func (f *statesFlag) String() string { return strings.Join(f.states, ",") }

func (f *statesFlag) Set(s string) error {
	var out []string
	for st := range strings.SplitSeq(s, ",") {
		st = strings.ToLower(strings.TrimSpace(st))
		if !slices.Contains(store.States, store.State(st)) {
			var names []string
			for _, v := range store.States {
				names = append(names, string(v))
			}
			return fmt.Errorf("unknown state %q: want one or more of %s, separated by commas", st, strings.Join(names, ", "))
		}
		out = append(out, st)
	}
	f.states = out
	return nil
}

// reasonFlag is an RFC 5280 revocation reason, by name or code.
type reasonFlag struct{ s string }

func (r *reasonFlag) String() string { return r.s }

func (r *reasonFlag) Set(s string) error {
	if _, err := certserver.ParseRevocationReason(s); err != nil {
		var ae *api.Error
		if errors.As(err, &ae) {
			return errors.New(ae.Message)
		}
		return err
	}
	r.s = s
	return nil
}

// reasonVar defines a revocation reason flag, "" until set.
func reasonVar(fs *flagSet, name, usage string) *string {
	r := &reasonFlag{}
	fs.Var(r, name, usage)
	return &r.s
}

var (
	_ flag.Value = (*windowFlag)(nil)
	_ flag.Value = positiveDuration{}
	_ flag.Value = (*statesFlag)(nil)
	_ flag.Value = (*reasonFlag)(nil)
)
