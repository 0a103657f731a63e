package renewer

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/certserver/certserver/store"
)

// joinSet keeps a certificate's set of names together when names of the
// set come under management one by one (certbot lineages imported, then
// their names added). cur serves d; when it carries other names too:
//
//   - d is cur's primary name (cur.ID) and takes cur's set (takesSet):
//     d's ExtraNames become cur's other names, so that d's orders ask
//     for the same exact set (a renewal, for the CA's limits);
//   - d is one of the other names, and the primary is managed with d in
//     its set (or about to take it): d's record is marked ManagedWith the
//     primary and leaves the due index; it is never ordered alone. It
//     returns true then, and the caller stops.
//
// Otherwise d is returned as it is: a name whose certificate's primary is
// not managed is ordered for itself, as before.
func (r *Renewer) joinSet(ctx context.Context, log *slog.Logger, d *store.Domain, cur *store.Certificate) (*store.Domain, bool) {
	if cur.ID == d.CertID || len(d.ExtraNames) > 0 || len(cur.Names) < 2 || !slices.Contains(cur.Names, d.Name) {
		return d, false // the name holds this certificate already, or carries a set of its own
	}
	if cur.ID == d.Name {
		if !r.takesSet(d, cur) {
			return d, false
		}
		extra := slices.Clone(cur.Names[1:])
		var out store.Domain
		if !r.record(ctx, log, d.Name, func(d *store.Domain) {
			if r.takesSet(d, cur) {
				d.ExtraNames = extra
			}
			out = *d
		}) {
			return d, true
		}
		log.Info("managed name takes every name of its certificate", "cert_id", cur.ID, "extra_names", strings.Join(out.ExtraNames, ","))
		return &out, false
	}
	owner, err := r.store.GetDomain(ctx, cur.ID)
	if err != nil || owner.State == store.StateRemoved || owner.ManagedWith != "" ||
		!slices.Contains(owner.ExtraNames, d.Name) && !r.takesSet(owner, cur) {
		return d, false
	}
	now := r.cfg.Now()
	if r.record(ctx, log, d.Name, func(d *store.Domain) {
		d.ManagedWith, d.ExtraNames, d.CertID = owner.Name, nil, cur.ID
		d.State, d.NextAttempt, d.UpdatedAt = store.StateValid, time.Time{}, now
		d.Failures, d.FailingSince, d.LastError = 0, time.Time{}, ""
	}) {
		log.Info("name is served by another managed name's certificate and renewed with it", "managed_with", owner.Name, "cert_id", cur.ID)
	}
	return d, true
}

// takesSet reports whether d, a managed name, takes the set of names of
// cur, the certificate stored under its name, when it first takes cur:
// when d carries no set of its own, and the set can be ordered with a
// challenge the configuration answers (a wildcard needs dns-01).
func (r *Renewer) takesSet(d *store.Domain, cur *store.Certificate) bool {
	if d.ManagedWith != "" || len(d.ExtraNames) > 0 || d.CertID == cur.ID || cur.ID != d.Name || len(cur.Names) < 2 {
		return false
	}
	ch, err := r.cfg.Challenges.Choose(cur.Names, d.Challenge)
	if err != nil {
		return false
	}
	for _, n := range cur.Names {
		if checkOrderName(n, ch) != nil {
			return false
		}
	}
	return true
}
