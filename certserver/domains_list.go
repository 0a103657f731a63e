package certserver

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
	"github.com/valyala/fasthttp"
)

// maxCursor is the longest after= value accepted.
const maxCursor = 1024

// maxQuery is the longest q= value accepted: a host name is at most 253
// bytes.
const maxQuery = 253

// filterBatch is the most records a filtered listing reads from the store
// at once.
const filterBatch = 1000

// filterBudget bounds the time a filtered page spends scanning, on top of
// api.ListDomainsScan records: a page cut short says where to go on.
const filterBudget = 5 * time.Second

// domainFilter selects the names GET /v1/domains lists. Its zero value
// selects every name.
type domainFilter struct {
	states   []store.State // any of these; none means every state
	expiring time.Duration // > 0: a certificate serves the name and expires before now+expiring
	failing  string        // "true": in a run of failures; "false": not; "": either
	query    string        // a substring of the name
}

// active reports whether f selects anything less than every name.
func (f *domainFilter) active() bool {
	return len(f.states) > 0 || f.expiring > 0 || f.failing != "" || f.query != ""
}

// match reports whether f selects d, served by c (nil for none), at now.
func (f *domainFilter) match(d *store.Domain, c *store.Certificate, now time.Time) bool {
	switch {
	case len(f.states) > 0 && !slices.Contains(f.states, d.State):
		return false
	case f.query != "" && !strings.Contains(d.Name, f.query):
		return false
	case f.failing != "" && isFailing(d) != (f.failing == "true"):
		return false
	case f.expiring > 0 && (c == nil || !c.NotAfter.Before(now.Add(f.expiring))):
		return false
	}
	return true
}

// isFailing reports whether d is in a run of failed attempts: failing, or
// being retried after failures. A removed name is not.
func isFailing(d *store.Domain) bool {
	return d.State == store.StateFailing || d.Failures > 0 && d.State != store.StateRemoved
}

// parseListQuery reads the query of GET /v1/domains. Its errors are
// *api.Error values naming the parameter.
func parseListQuery(args *fasthttp.Args) (after string, limit int, f domainFilter, err error) {
	limit = api.DefaultListLimit
	seen := map[string]bool{}
	var bad error
	args.VisitAll(func(k, v []byte) {
		if bad != nil {
			return
		}
		key, val := string(k), string(v)
		if seen[key] && key != "state" {
			bad = errorf(fasthttp.StatusBadRequest, "query parameter %q given twice", key)
			return
		}
		seen[key] = true
		switch key {
		case "after":
			if len(val) > maxCursor {
				bad = errorf(fasthttp.StatusBadRequest, "after is longer than %d bytes", maxCursor)
			}
			after = val
		case "limit":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > api.MaxListLimit {
				bad = errorf(fasthttp.StatusBadRequest, "limit %q: want a number from 1 to %d", val, api.MaxListLimit)
			}
			limit = n
		case "state":
			for s := range strings.SplitSeq(val, ",") {
				st := store.State(strings.ToLower(strings.TrimSpace(s)))
				if !slices.Contains(store.States, st) {
					bad = errorf(fasthttp.StatusBadRequest, "state %q: want one of %s (several separated by commas)", s, stateList())
					return
				}
				f.states = append(f.states, st)
			}
		case "expiring":
			d, err := ParseWindow(val)
			if err != nil {
				bad = errorf(fasthttp.StatusBadRequest, "expiring %q: %v", val, err)
			}
			f.expiring = d
		case "failing":
			b, err := strconv.ParseBool(val)
			if err != nil {
				bad = errorf(fasthttp.StatusBadRequest, "failing %q: want true or false", val)
			}
			f.failing = strconv.FormatBool(b)
		case "q":
			if val == "" || len(val) > maxQuery {
				bad = errorf(fasthttp.StatusBadRequest, "q: want 1 to %d bytes of a name", maxQuery)
			}
			f.query = strings.ToLower(val)
		default:
			bad = errorf(fasthttp.StatusBadRequest, "unknown query parameter %q (parameters: after, limit, state, expiring, failing, q)", key)
		}
	})
	return after, limit, f, bad
}

// stateList names the states for an error message.
func stateList() string {
	s := make([]string, len(store.States))
	for i, st := range store.States {
		s[i] = string(st)
	}
	return strings.Join(s, ", ")
}

// ParseWindow reads a time window such as "7d", "72h" or "90m": a whole
// number of days with "d", or a Go duration. It must be positive. It is
// the rule of GET /v1/domains?expiring= and of the CLI's flags that end
// up there (--expiring, --warn), so that the CLI refuses what the API
// would.
func ParseWindow(s string) (time.Duration, error) {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n > 100000 {
			return 0, fmt.Errorf("want a whole number of days (7d) or a duration (72h, 90m)")
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("want a whole number of days (7d) or a duration (72h, 90m)")
		}
	}
	if d <= 0 {
		return 0, fmt.Errorf("must be positive")
	}
	return d, nil
}

// listDomains answers GET /v1/domains: up to limit records in name order
// after the name after= (the cursor: the last name of the previous page),
// with a summary of their certificates, and the cursor of the next page.
//
// Paging is stable while names are added or removed: a page starts
// strictly after the cursor, so a name listed once is never listed again,
// a name present all along is never skipped, and a name added meanwhile
// shows up once if it sorts after the cursor and not at all otherwise.
//
// Filters (state=, expiring=, failing=, q=) are applied while scanning the
// records in name order: there is no index for them, so a filtered page
// reads records until it has limit matches, and expiring= also reads the
// certificate of every record it scans. A page stops scanning after
// api.ListDomainsScan records or filterBudget, whichever comes first, and
// may then hold fewer names than limit, even none, with a cursor to go on
// from.
func (a *AdminAPI) listDomains(ctx context.Context, rc *fasthttp.RequestCtx, _ params) error {
	after, limit, f, err := parseListQuery(rc.QueryArgs())
	if err != nil {
		return err
	}
	now := a.cfg.Now()
	start := time.Now()
	// A page reads a record past limit to know whether more follow; a
	// filtered page reads more at a time as long as the matches are few.
	batch := limit + 1
	resp := api.DomainList{Domains: make([]api.DomainSummary, 0, min(limit, 64))}
	cursor := after
scan:
	for {
		ds, err := a.store.ListDomains(ctx, cursor, batch)
		if err != nil {
			return fmt.Errorf("list domains: %w", err)
		}
		for _, d := range ds {
			if len(resp.Domains) == limit {
				// A record follows a full page: there is more to see.
				resp.Next = cursor
				break scan
			}
			resp.Scanned++
			cursor = d.Name
			var c *store.Certificate
			if f.expiring > 0 {
				if c, err = a.servingCertificate(ctx, d); err != nil {
					return err
				}
			}
			if !f.match(d, c, now) {
				continue
			}
			if f.expiring == 0 {
				if c, err = a.servingCertificate(ctx, d); err != nil {
					return err
				}
			}
			s := api.DomainSummary{DomainRecord: domainRecord(d)}
			if c != nil {
				s.Certificate = &api.CertificateSummary{ID: c.ID, Serial: c.Serial, NotAfter: c.NotAfter, RenewAt: c.RenewAt}
			}
			resp.Domains = append(resp.Domains, s)
		}
		switch {
		case len(ds) < batch:
			break scan
		case resp.Scanned >= a.listScan, time.Since(start) > filterBudget:
			resp.Next = cursor
			break scan
		}
		batch = max(batch, min(2*batch, filterBatch))
	}
	writeJSON(rc, fasthttp.StatusOK, resp)
	return nil
}
