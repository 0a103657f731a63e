package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/certserver/certserver/certserver/api"
)

const fleetStatusHelp = `
Lists every host of the fleet, as the fleet's database knows them, through
the admin API of any one of its hosts (GET /v1/fleet):

  HOST       the host's name ([fleet] host_name)
  LAG        how many versions of the database its local copy had not
             applied when it last reported (the database's latest
             version minus the host's), and for how long the oldest of
             them had waited
  LAST-SEEN  when it last reported (every 10 s while it runs); "gone"
             after a minute without one: stopped, cut off from the
             database, or removed from the fleet
  RENEWS     yes when its renewer orders certificates ([fleet] renew)
  LEASES     names it holds a lease on: the renewal work it has claimed
  IN-FLIGHT  orders its renewer had under way when it last reported

The line above the table is the asked host's own view: whether the
database is up and how far its copy is behind.

Exit codes: 0 every host is seen and in step; 1 attention: a host is
gone (no report for a minute or more), a host's copy lags (its oldest
missing change waited a minute or more), or the fleet's database is down
(the hosts cannot be listed); 2 bad command line; 3 unknown: the admin
API could not be asked, or the host it names runs no fleet ([fleet]).
` + adminHelp + `
Examples:
  certserver fleet status
  certserver fleet status --json | jq '.hosts[] | select(.gone)'
  certserver fleet status >/dev/null || page-oncall
`

// fleetStatusReport is what `fleet status` prints, and its --json
// document: GET /v1/fleet's answer and what needs attention.
type fleetStatusReport struct {
	Admin string    `json:"admin"`
	Now   time.Time `json:"now"`
	api.Fleet
	// Attention says what needs attention; empty when all is well.
	Attention []string `json:"attention"`
}

func runFleetStatus(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet("fleet status", "[flags]", fleetStatusHelp)
	asJSON := fs.Bool("json", false, "print the hosts as JSON")
	af := addAdminFlags(fs)
	if code, ok := fs.parseNone(e, args); !ok {
		return code
	}
	cl, err := af.client(e)
	if err != nil {
		fmt.Fprintf(e.stderr, "certserver fleet status: %v\n", err)
		return exitUnknown
	}
	rctx, cancel := context.WithTimeout(ctx, *af.timeout)
	fl, err := cl.Fleet(rctx)
	cancel()
	if err != nil {
		fmt.Fprintf(e.stderr, "certserver fleet status: %v\n", explain(cl, err))
		return exitUnknown
	}
	if fl == nil {
		fmt.Fprintf(e.stderr, "certserver fleet status: the certserver at %s runs no fleet (its configuration has no [fleet]): see 'certserver status'\n", cl.URL())
		return exitUnknown
	}
	rep := &fleetStatusReport{Admin: cl.URL(), Now: e.now(), Fleet: *fl, Attention: fleetAttention(fl)}
	if *asJSON {
		printJSON(e.stdout, rep)
	} else {
		printFleetStatus(e, rep)
	}
	if len(rep.Attention) > 0 {
		return exitAttention
	}
	return exitOK
}

// fleetAttention says what of the fleet needs attention: the database
// down, a host gone, a host's copy lagging as long as `status` calls for
// attention on the host itself (fleetLagAttention).
func fleetAttention(fl *api.Fleet) []string {
	out := []string{}
	if fl.HostsError != "" {
		if !fl.Database.Up {
			out = append(out, fleetDown(fl))
		} else {
			out = append(out, "the fleet's hosts could not be read: "+fl.HostsError)
		}
		return out
	}
	for _, h := range fl.Hosts {
		switch {
		case h.Gone:
			out = append(out, fmt.Sprintf("host %s has not reported since %s", h.Name, h.SeenAt.UTC().Format("2006-01-02 15:04:05 UTC")))
		case time.Duration(h.LagSeconds*float64(time.Second)) >= fleetLagAttention:
			out = append(out, fmt.Sprintf("host %s's copy is %d changes behind, the oldest waiting %s",
				h.Name, h.LagVersions, roughly(time.Duration(h.LagSeconds*float64(time.Second)))))
		}
	}
	return out
}

// printFleetStatus prints the report as a table.
func printFleetStatus(e *env, rep *fleetStatusReport) {
	w := e.stdout
	fmt.Fprintf(w, "certserver at %s, %s\n", rep.Admin, rep.Now.UTC().Format("2006-01-02 15:04:05 UTC"))
	fmt.Fprintf(w, "asked     %s\n", fleetLine(&rep.Fleet, rep.Now))
	if rep.HostsError == "" {
		fmt.Fprintf(w, "database  latest version %d, %s\n\n", rep.LatestVersion, plural(len(rep.Hosts), "host"))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST\tLAG\tLAST-SEEN\tRENEWS\tLEASES\tIN-FLIGHT")
		for _, h := range rep.Hosts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", h.Name, hostLag(h), lastSeen(h, rep.Now), yesNo(h.Renews), h.LeasesHeld, h.InFlight)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	if len(rep.Attention) == 0 {
		fmt.Fprint(w, "VERDICT   ok\n")
		return
	}
	fmt.Fprintf(w, "VERDICT   attention: %s\n", strings.Join(rep.Attention, "; "))
}

// hostLag is a host's LAG column: "0", or "12 (40s)".
func hostLag(h api.FleetHost) string {
	s := strconv.FormatUint(h.LagVersions, 10)
	if h.LagSeconds >= 1 {
		s += " (" + roughly(time.Duration(h.LagSeconds*float64(time.Second))) + ")"
	}
	return s
}

// lastSeen is a host's LAST-SEEN column: "3s ago", or "gone, 2h ago".
func lastSeen(h api.FleetHost, now time.Time) string {
	s := roughly(max(0, now.Sub(h.SeenAt))) + " ago"
	if h.Gone {
		s = "gone, " + s
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
