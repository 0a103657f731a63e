package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
	"github.com/certserver/certserver/store"
)

const queueHelp = `
Shows what the renewer has to do, from GET /v1/queue:

  due now, within an hour, within a day   names whose next attempt has come
                                          (or comes by then), from the due
                                          index; "≥" when over 1,000,000
  in flight                               orders under way
  throughput                              names finished per second over the
                                          last 15 minutes, whatever the outcome
  backlog done                            when the names due now will have
                                          been worked on at that rate
  pending done                            when the names waiting for their
                                          first certificate can all be
                                          ordered at the CAs' new-order rate
                                          limits, and each CA's share (the
                                          enrollment planner); on a fleet
                                          host, at the fleet's budget
  names by state                          a count of every record, reused for
                                          10s; "≥" when the scan ran out of
                                          time (3s) before the end; from
                                          50,000 names on, the metrics
                                          inventory's count ("counted ...
                                          ago" says how old)
  CA NAME                                 per CA, since the sidecar started:
                                          orders sent and how they ended,
                                          orders the limits held back,
                                          renewal information polls, whether
                                          the CA rests after failures; then
                                          the account's limits: the room in
                                          the account-wide buckets, and how
                                          many per-domain, per-set or per-name
                                          buckets are empty (the first to
                                          free up named). On a fleet host
                                          ("budget: the fleet's") they are
                                          the fleet's: every host spends the
                                          buckets kept in the database, so
                                          they count the whole fleet's orders

Exit codes: 0 shown; 1 the request failed; 2 bad command line.
` + adminHelp + `
Examples:
  certserver queue
  certserver queue --json | jq .due_now.n
`

func runQueue(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("queue", "[flags]", queueHelp)
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	af := addAdminFlags(fs)
	if code, ok := fs.parseNone(e, args); !ok {
		return code
	}
	q, code, ok := request(ctx, e, fs, af, func(ctx context.Context, cl *client.Client) (*api.Queue, error) {
		return cl.Queue(ctx)
	})
	if !ok {
		return code
	}
	if *asJSON {
		printJSON(e.stdout, q)
		return exitOK
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	line := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	line("due now", count(q.DueNow))
	line("due within an hour", count(q.DueWithinHour))
	line("due within a day", count(q.DueWithinDay))
	if !q.Issuance {
		line("renewer", "off (acme.directory is not set): names wait")
	} else {
		line("in flight", strconv.Itoa(q.InFlight))
		line("throughput", fmt.Sprintf("%s names/s (last 15 minutes)", rate(q.Throughput)))
		line("backlog done", backlog(q))
	}
	line("pending", count(q.Pending))
	if p := q.Plan; p != nil && p.Pending > 0 {
		line("pending done", planLine(p, q.Now))
		for _, c := range p.CAs {
			room := "no limit"
			if c.Room >= 0 {
				room = fmt.Sprintf("%.0f orders now, then %s/h", c.Room, rate(c.OrdersPerSecond*3600))
			}
			if c.Fleet {
				room += ", the fleet's budget"
			}
			line("  "+c.Name, fmt.Sprintf("%d names (%s)", c.Orders, room))
		}
	}
	line("failing", count(q.Failing))
	line("names by state", stateCounts(q))
	for _, c := range q.CAs {
		caLines(line, c, q.Now)
	}
	tw.Flush()
	return exitOK
}

// limitNames are the rate limits as the queue output names them.
var limitNames = map[string]string{
	"new_orders_per_account":                            "new orders",
	"new_order_requests":                                "order requests",
	"certificates_per_registered_domain":                "certs per registered domain",
	"certificates_per_exact_set":                        "certs per exact set",
	"authorization_failures_per_identifier":             "failed validations per name",
	"consecutive_authorization_failures_per_identifier": "consecutive failures per name",
}

// caLines prints one CA: its counters since the start, whether it rests,
// and its account's limits, the blocked ones with the bucket that frees up
// first.
func caLines(line func(k, v string), c api.CAStatus, now time.Time) {
	head := c.Directory
	if head == c.Name {
		head = "" // named by its directory: once is enough
	}
	if c.OffersARI {
		head = strings.TrimSpace(head + " (ARI)")
	}
	line("CA "+c.Name, head)
	line("  orders", fmt.Sprintf("%d sent: %d issued, %d failed, %d rate-limited; %d held back by the limits, %d refused by pre-flight",
		c.Orders, c.Issued, c.Failed, c.RateLimited, c.Deferred, c.Refused))
	if c.OffersARI {
		line("  renewal info", fmt.Sprintf("%d polls, %d failed, %d windows moved", c.ARIPolls, c.ARIPollErrors, c.WindowsMoved))
	}
	if !c.RestingUntil.IsZero() {
		line("  resting", fmt.Sprintf("until %s after %d failures in a row: other CAs go first", when(c.RestingUntil, now), c.FailureStreak))
	}
	switch {
	case c.LimitsUnavailable:
		line("  budget", "the fleet's, shared in the database: cannot be read now (database unavailable)")
	case c.FleetLimits:
		line("  budget", "the fleet's: every host spends these limits, shared in the database")
	}
	for _, l := range c.Limits {
		name := limitNames[l.Limit]
		if name == "" {
			name = l.Limit
		}
		per := roughly(time.Duration(l.PerSeconds * float64(time.Second)))
		switch {
		case l.Burst < 0 && l.Blocked == 0:
			continue // no limit, and the CA has not asked to wait
		case l.Scope == "account" && len(l.Buckets) > 0:
			b := l.Buckets[0]
			v := fmt.Sprintf("%.1f of %d per %s", b.Tokens, l.Burst, per)
			if l.Burst < 0 {
				v = "no limit"
			}
			if b.Tokens < 1 {
				v += ", next " + when(b.Available, now)
			}
			line("  "+name, v)
		case l.Blocked > 0:
			what := plural(l.Blocked, l.Scope)
			v := fmt.Sprintf("%d per %s: %s blocked", l.Burst, per, what)
			if l.Burst < 0 {
				v = what + " held back by the CA"
			}
			if len(l.Buckets) > 0 {
				v += fmt.Sprintf(", first %s %s", l.Buckets[0].Key, when(l.Buckets[0].Available, now))
			}
			line("  "+name, v)
		}
	}
}

// planLine says when the pending names will have been ordered at the CAs'
// new-order limits, and what to do when that is far off.
func planLine(p *api.Plan, now time.Time) string {
	if !p.Limited {
		return "as fast as the workers go (a CA has no new-order limit)"
	}
	s := fmt.Sprintf("%s, at %s new orders/h", when(p.DoneAt, now), rate(p.OrdersPerSecond*3600))
	if p.DoneInSeconds > (7 * 24 * time.Hour).Seconds() {
		s += ": ask the CA for a rate limit override (see README, Rate limits)"
	}
	return s
}

// count formats a count, with "≥" when it is a lower bound.
func count(c api.Count) string {
	if c.AtLeast {
		return "≥" + strconv.Itoa(c.N)
	}
	return strconv.Itoa(c.N)
}

// rate formats names per second with two significant decimals.
func rate(r float64) string {
	if r >= 10 {
		return strconv.FormatFloat(r, 'f', 0, 64)
	}
	return strconv.FormatFloat(r, 'f', 2, 64)
}

// backlog says when the names due now will be done.
func backlog(q *api.Queue) string {
	switch {
	case q.DueNow.N == 0:
		return "nothing is due"
	case q.BacklogDoneAt.IsZero():
		return "unknown (no name finished in the last 15 minutes)"
	}
	s := when(q.BacklogDoneAt, q.Now)
	if q.DueNow.AtLeast {
		s = "not before " + s
	}
	return s
}

// stateCounts formats the names by state on one line, with how the count
// was made.
func stateCounts(q *api.Queue) string {
	var parts []string
	total := 0
	for _, st := range store.States {
		s := string(st)
		parts = append(parts, s+" "+strconv.Itoa(q.States[s]))
		total += q.States[s]
	}
	note := fmt.Sprintf("%d names", total)
	if !q.StatesComplete {
		note = fmt.Sprintf("≥%d names: the count ran out of time", total)
	}
	if age := q.Now.Sub(q.StatesAt); age >= time.Second {
		note += ", counted " + roughly(age) + " ago"
	}
	return strings.Join(parts, ", ") + " (" + note + ")"
}

// writeQueueLine writes the queue in one line for `status`.
func writeQueueLine(w io.Writer, q *api.Queue) {
	fmt.Fprintf(w, "due now %s, within 1h %s, within 24h %s", count(q.DueNow), count(q.DueWithinHour), count(q.DueWithinDay))
	if !q.Issuance {
		fmt.Fprint(w, "; renewer off (acme.directory is not set)\n")
		return
	}
	fmt.Fprintf(w, "; %d in flight; %s names/s; backlog done: %s\n", q.InFlight, rate(q.Throughput), backlog(q))
}
