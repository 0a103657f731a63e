package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
)

// Exit codes of `status`, on top of exitOK and exitUsage.
const (
	exitAttention = 1 // names are failing, or certificates expire within --warn
	exitUnknown   = 3 // the admin API could not be asked
)

// statusShown is how many failing and expiring names `status` lists.
const statusShown = 10

// maxExpiring is how many expiring names `status` collects before it only
// counts.
const maxExpiring = 10000

const statusHelp = `
Prints a one-screen summary for the on-call engineer:

  FLEET     on a fleet host: whether the fleet's database is up, and how
            far this host's copy of it is behind
  NAMES     how many names are in each state
  QUEUE     names due now, within an hour and a day; orders in flight;
            throughput; when the names due now will be done
  FAILING   how many names are failing, and the first 10 with their errors
  EXPIRING  names (not removed) whose certificate expires within --warn,
            soonest first
  CAS       per CA, orders sent, issued and failed since the start, and
            whether it rests after failures of its own (other CAs go
            first); the limits are in 'certserver queue'
  VERDICT   ok, or what needs attention

Finding the expiring names reads every name and its certificate (there is
no index by expiry): on a store with a million names it takes seconds.

On a fleet host ([fleet]) a FLEET line comes first: the host, whether
the fleet's database is up, and how far the host's copy is behind it.
While the database is down only that is known: status says since when
and why, and exits 1.

Exit codes: 0 ok; 1 attention: some names are failing, a certificate
of a managed name expires within --warn (default 7d), a CA rests
after failing, or (on a fleet host) the fleet's database is down or the
host's copy lags a minute or more; 2 bad command line;
3 the status is unknown: the admin API could not be asked (unreachable,
refused the token, failed).
` + adminHelp + `
Examples:
  certserver status
  certserver status --warn 14d || page-oncall
  certserver status --json | jq .attention
`

// statusReport is what `status` prints, and its --json document.
type statusReport struct {
	Admin string     `json:"admin"`
	Now   time.Time  `json:"now"`
	Queue *api.Queue `json:"queue"`
	// Failing lists the first failing names, in name order; FailingCount
	// counts them all (from the queue's count of states).
	Failing      []api.DomainSummary `json:"failing"`
	FailingCount api.Count           `json:"failing_count"`
	// Expiring lists the names whose certificate expires within Warn,
	// soonest first, the first statusShown; ExpiringCount counts them.
	Warn          string              `json:"warn"`
	Expiring      []api.DomainSummary `json:"expiring"`
	ExpiringCount api.Count           `json:"expiring_count"`
	// Fleet is the host's place in its fleet; left out on a single host.
	Fleet *api.Fleet `json:"fleet,omitempty"`
	// Attention says what needs attention; empty when all is well.
	Attention []string `json:"attention"`
}

// fleetLagAttention is how long the oldest change a host's local copy
// has not applied may wait before `status` calls for attention: a
// change reaches every host within seconds.
const fleetLagAttention = time.Minute

func runStatus(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("status", "[flags]", statusHelp)
	warn := windowVar(fs, "warn", "7d", "report certificates that expire within this `window` (7d, 72h)")
	asJSON := fs.Bool("json", false, "print the summary as JSON")
	af := addAdminFlags(fs)
	if code, ok := fs.parseNone(e, args); !ok {
		return code
	}
	cl, err := af.client(e)
	if err != nil {
		fmt.Fprintf(e.stderr, "certserver status: %v\n", err)
		return exitUnknown
	}
	rep, err := gatherStatus(ctx, cl, *warn, *af.timeout)
	if err != nil {
		fmt.Fprintf(e.stderr, "certserver status: %v\n", explain(cl, err))
		return exitUnknown
	}
	if *asJSON {
		printJSON(e.stdout, rep)
	} else {
		printStatus(e, rep)
	}
	if len(rep.Attention) > 0 {
		return exitAttention
	}
	return exitOK
}

// gatherStatus asks the admin API for everything `status` shows, each
// request bounded by timeout.
func gatherStatus(ctx context.Context, cl *client.Client, warn string, timeout time.Duration) (*statusReport, error) {
	rep := &statusReport{Admin: cl.URL(), Warn: warn, Failing: []api.DomainSummary{}, Expiring: []api.DomainSummary{}, Attention: []string{}}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	fl, err := cl.Fleet(rctx)
	cancel()
	if err != nil {
		return nil, err
	}
	if fl != nil {
		rep.Fleet = fl
		if !fl.Database.Up {
			// Everything else comes from the database: say what is known.
			rep.Now = time.Now()
			rep.Attention = append(rep.Attention, fleetDown(fl))
			return rep, nil
		}
		if lag := time.Duration(fl.Replica.LagSeconds * float64(time.Second)); lag >= fleetLagAttention {
			rep.Attention = append(rep.Attention, fmt.Sprintf("the local copy is %d changes behind the fleet's database, the oldest waiting %s",
				fl.Replica.LagVersions, roughly(lag)))
		}
		if fl.Replica.SyncError != "" {
			rep.Attention = append(rep.Attention, "the local copy cannot follow the fleet's database: "+fl.Replica.SyncError)
		}
		if !fl.Ready {
			rep.Attention = append(rep.Attention, "the local copy is still catching up with the fleet's database: not ready")
		}
	}
	rctx, cancel = context.WithTimeout(ctx, timeout)
	q, err := cl.Queue(rctx)
	cancel()
	if err != nil {
		return nil, err
	}
	rep.Queue, rep.Now = q, q.Now

	// The first failing names, with their errors.
	opts := client.ListOptions{Failing: "true", Limit: statusShown}
	for len(rep.Failing) < statusShown {
		opts.Limit = statusShown - len(rep.Failing)
		page, err := listPage(ctx, cl, opts, timeout)
		if err != nil {
			return nil, err
		}
		rep.Failing = append(rep.Failing, page.Domains...)
		if page.Next == "" {
			break
		}
		opts.After = page.Next
	}
	rep.FailingCount = q.Failing
	if len(rep.Failing) < statusShown || len(rep.Failing) > rep.FailingCount.N {
		// The list is newer than the count (which may come from an
		// inventory minutes old), and when it is short it is whole.
		rep.FailingCount = api.Count{N: len(rep.Failing), AtLeast: len(rep.Failing) >= statusShown}
	}

	// Every managed name whose certificate expires within warn.
	opts = client.ListOptions{Expiring: warn, Limit: api.MaxListLimit, States: []string{"pending", "issuing", "valid", "renewing", "failing"}}
	for {
		page, err := listPage(ctx, cl, opts, timeout)
		if err != nil {
			return nil, err
		}
		if room := maxExpiring - len(rep.Expiring); room > 0 {
			rep.Expiring = append(rep.Expiring, page.Domains[:min(room, len(page.Domains))]...)
		}
		rep.ExpiringCount.N += len(page.Domains)
		if page.Next == "" {
			break
		}
		opts.After = page.Next
	}
	slices.SortStableFunc(rep.Expiring, func(a, b api.DomainSummary) int { return a.Certificate.NotAfter.Compare(b.Certificate.NotAfter) })
	rep.Expiring = rep.Expiring[:min(len(rep.Expiring), statusShown)]

	if rep.FailingCount.N > 0 {
		rep.Attention = append(rep.Attention, plural(rep.FailingCount.N, "name")+" failing")
	}
	if rep.ExpiringCount.N > 0 {
		rep.Attention = append(rep.Attention, plural(rep.ExpiringCount.N, "certificate")+" expiring within "+warn)
	}
	for _, c := range q.CAs {
		if !c.RestingUntil.IsZero() {
			rep.Attention = append(rep.Attention, fmt.Sprintf("CA %s resting after %d failures in a row", c.Name, c.FailureStreak))
		}
	}
	return rep, nil
}

// listPage asks for one page of names.
func listPage(ctx context.Context, cl *client.Client, opts client.ListOptions, timeout time.Duration) (*api.DomainList, error) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return cl.Domains(rctx, opts)
}

// fleetDown says that the fleet's database is down, since when and why.
func fleetDown(fl *api.Fleet) string {
	msg := "the fleet's database is down"
	if !fl.Database.Since.IsZero() {
		msg += " since " + fl.Database.Since.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	if fl.Database.Error != "" {
		msg += " (" + fl.Database.Error + ")"
	}
	return msg + ": certificates are served from this host's copy; nothing is ordered and admin writes fail until it is back"
}

// fleetLine describes a fleet host in one line.
func fleetLine(fl *api.Fleet, now time.Time) string {
	s := "host " + fl.Host
	if fl.Database.Up {
		s += ", database up"
	} else {
		s += ", database DOWN"
		if !fl.Database.Since.IsZero() {
			s += " for " + roughly(now.Sub(fl.Database.Since))
		}
	}
	s += fmt.Sprintf(", copy at version %d, %d behind", fl.Replica.Applied, fl.Replica.LagVersions)
	if fl.Replica.LagVersions > 0 {
		s += fmt.Sprintf(" (oldest %s)", roughly(time.Duration(fl.Replica.LagSeconds*float64(time.Second))))
	}
	if fl.Hosts != nil {
		s += fmt.Sprintf(", %s in the fleet", plural(len(fl.Hosts), "host"))
	}
	if fl.Renews {
		s += ", renews"
	} else {
		s += ", serves only (renew = false)"
	}
	return s
}

// printStatus prints the summary as a screen of text.
func printStatus(e *env, rep *statusReport) {
	w, q := e.stdout, rep.Queue
	fmt.Fprintf(w, "certserver at %s, %s\n\n", rep.Admin, rep.Now.UTC().Format("2006-01-02 15:04:05 UTC"))
	if rep.Fleet != nil {
		fmt.Fprintf(w, "FLEET     %s\n", fleetLine(rep.Fleet, rep.Now))
	}
	if q == nil {
		// The database is down: the rest is not known.
		fmt.Fprintf(w, "VERDICT   attention: %s\n", strings.Join(rep.Attention, "; "))
		return
	}
	fmt.Fprintf(w, "NAMES     %s\n", stateCounts(q))
	fmt.Fprint(w, "QUEUE     ")
	writeQueueLine(w, q)

	fmt.Fprintf(w, "FAILING   %s\n", count(rep.FailingCount))
	if len(rep.Failing) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tFAILURES\tSINCE\tNEXT-ATTEMPT\tLAST-ERROR")
		for _, d := range rep.Failing {
			since := "-"
			if !d.FailingSince.IsZero() {
				since = roughly(rep.Now.Sub(d.FailingSince)) + " ago"
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\n", d.Name, d.Failures, since, stamp(d.NextAttempt), shorten(d.LastError, maxErrorColumn))
		}
		tw.Flush()
		if more := rep.FailingCount.N - len(rep.Failing); more > 0 {
			fmt.Fprintf(w, "  … %d more: certserver domains ls --failing\n", more)
		}
	}

	fmt.Fprintf(w, "EXPIRING  %s within %s\n", count(rep.ExpiringCount), rep.Warn)
	if len(rep.Expiring) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  NAME\tNOT-AFTER\tSTATE\tLAST-ERROR")
		for _, d := range rep.Expiring {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", d.Name, when(d.Certificate.NotAfter, rep.Now), d.State, shorten(d.LastError, maxErrorColumn))
		}
		tw.Flush()
		if more := rep.ExpiringCount.N - len(rep.Expiring); more > 0 {
			fmt.Fprintf(w, "  … %d more: certserver domains ls --expiring %s\n", more, rep.Warn)
		}
	}

	if len(q.CAs) > 0 {
		var cas []string
		for _, c := range q.CAs {
			v := fmt.Sprintf("%s %d sent, %d issued, %d failed", c.Name, c.Orders, c.Issued, c.Failed)
			if !c.RestingUntil.IsZero() {
				v += ", resting until " + when(c.RestingUntil, rep.Now)
			}
			cas = append(cas, v)
		}
		fmt.Fprintf(w, "CAS       %s\n", strings.Join(cas, "; "))
	}

	if len(rep.Attention) == 0 {
		fmt.Fprint(w, "VERDICT   ok\n")
		return
	}
	fmt.Fprintf(w, "VERDICT   attention: %s\n", strings.Join(rep.Attention, "; "))
}

// plural returns "1 name", "2 names".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
