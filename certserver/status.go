package certserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
	"github.com/valyala/fasthttp"
)

// The status page is one self-contained HTML document: its CSS is inline
// and allowed by hash in the Content-Security-Policy, it has no script
// and loads nothing, and html/template escapes every value in it.
var (
	//go:embed status.html.tmpl
	statusHTML string
	//go:embed status.css
	statusCSS string

	statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
		"utc":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
		"ago":  func(now, t time.Time) string { return relative(t.Sub(now)) },
		"took": func(d time.Duration) string { return d.Round(time.Millisecond).String() },
	}).Parse(statusHTML))

	statusCSP = "default-src 'none'; style-src 'sha256-" + hashCSS(statusCSS) + "'; img-src data:; " +
		"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

func hashCSS(css string) string {
	sum := sha256.Sum256([]byte(css))
	return base64.StdEncoding.EncodeToString(sum[:])
}

// Page reload intervals: while the first inventory runs, and after.
const (
	statusReloadWaiting = 5
	statusReload        = 60
)

// statusView is what the template shows.
type statusView struct {
	Host   string
	Now    time.Time
	Reload int
	CSS    template.CSS
	// Inv is the inventory shown, nil before the first scan.
	Inv *Inventory
	// Level is "ok", "warn" or "crit"; Verdict says it in words and
	// Findings list what made it so.
	Level    string
	Verdict  string
	Findings []string
	States   []stateRow
	// FailingCount counts the failing names; MoreFailing is how many of
	// them the page does not list.
	FailingCount, MoreFailing int
	// Expiries are the certificates that expire soonest.
	Expiries []expiryRow
	// Stale is set when the inventory is older than expected.
	Stale bool
	// CAs are the CAs the renewer orders from, nil without a renewer.
	CAs []caRow
}

// caRow is one CA on the status page.
type caRow struct {
	api.CAStatus
	// Resting is set while the CA rests after failures of its own.
	Resting bool
	// NewOrders says the room in the account's new-orders bucket: "280 of
	// 300 per 3h", "none until in 20m", "no limit".
	NewOrders string
	// Blocked lists the other limits with empty buckets: "failed
	// validations per name: 3 blocked".
	Blocked []string
}

// limitLabels name the rate limits on the status page.
var limitLabels = map[string]string{
	"new_order_requests":                                "order requests",
	"certificates_per_registered_domain":                "certificates per registered domain",
	"certificates_per_exact_set":                        "certificates per exact set",
	"authorization_failures_per_identifier":             "failed validations per name",
	"consecutive_authorization_failures_per_identifier": "consecutive failed validations per name",
}

// period writes a limit's period in its one unit when it has one: "3h",
// "7d", else roughly.
func period(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d >= day && d%day == 0:
		return fmt.Sprintf("%dd", d/day)
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return roughly(d)
}

// caRows turns the CAs' states into rows of the status page.
func caRows(cas []api.CAStatus, now time.Time) []caRow {
	rows := make([]caRow, 0, len(cas))
	for _, c := range cas {
		r := caRow{CAStatus: c, Resting: c.RestingUntil.After(now), NewOrders: "no limit"}
		for _, l := range c.Limits {
			per := period(time.Duration(l.PerSeconds * float64(time.Second)))
			switch {
			case l.Limit == "new_orders_per_account" && l.Burst >= 0 && len(l.Buckets) > 0:
				b := l.Buckets[0]
				r.NewOrders = fmt.Sprintf("%d of %d per %s", int(b.Tokens), l.Burst, per)
				if b.Tokens < 1 {
					r.NewOrders = fmt.Sprintf("none of %d per %s until %s", l.Burst, per, relative(b.Available.Sub(now)))
				}
			case l.Limit == "new_orders_per_account" && l.Blocked > 0 && len(l.Buckets) > 0:
				r.NewOrders = "held back by the CA until " + relative(l.Buckets[0].Available.Sub(now))
			case l.Blocked > 0:
				label := limitLabels[l.Limit]
				if label == "" {
					label = l.Limit
				}
				r.Blocked = append(r.Blocked, fmt.Sprintf("%s: %d blocked", label, l.Blocked))
			}
		}
		rows = append(rows, r)
	}
	return rows
}

type stateRow struct {
	State store.State
	N     int
	// Bad marks a count that needs attention (failing names).
	Bad bool
}

// expiryRow is one line of the soonest expiries: Class marks the
// expired and the soon expiring, Left says how long is left.
type expiryRow struct {
	ExpiringCertificate
	Class, Left string
}

// statusPage answers GET /: the status page, an HTML summary of the last
// inventory for the on-call engineer.
func (a *AdminAPI) statusPage(_ context.Context, rc *fasthttp.RequestCtx, _ params) error {
	now := a.cfg.Now()
	v := statusView{Now: now, Reload: statusReload, CSS: template.CSS(statusCSS), Inv: a.cfg.Metrics.Inventory()}
	v.Host, _ = os.Hostname()
	if c, ok := a.cfg.Queue.(CAReporter); ok {
		v.CAs = caRows(c.CAs(), now)
	}
	if v.Inv == nil {
		v.Reload = statusReloadWaiting
	} else {
		v.judge(a.cfg.Metrics.fresh(v.Inv, now))
	}
	var buf bytes.Buffer
	if err := statusTemplate.Execute(&buf, &v); err != nil {
		return fmt.Errorf("status page: %w", err)
	}
	rc.SetStatusCode(fasthttp.StatusOK)
	rc.SetContentType("text/html; charset=utf-8")
	h := &rc.Response.Header
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", statusCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	rc.SetBody(buf.Bytes())
	return nil
}

// judge fills the verdict of v from its inventory: critical when a
// certificate has expired or expires within 7 days, a warning when names
// are failing, a certificate expires within 14 days or the inventory is
// old.
func (v *statusView) judge(fresh bool) {
	inv := v.Inv
	for _, s := range store.States {
		n := inv.States[s]
		v.States = append(v.States, stateRow{State: s, N: n, Bad: (s == store.StateFailing || s == store.StateGivenUp) && n > 0})
	}
	for s, n := range inv.States {
		if !knownState(s) {
			v.States = append(v.States, stateRow{State: s, N: n})
		}
	}
	failing, givenUp := inv.States[store.StateFailing], inv.States[store.StateGivenUp]
	v.FailingCount, v.MoreFailing = failing+givenUp, failing+givenUp-len(inv.Failing)
	for _, c := range inv.Soonest {
		r := expiryRow{ExpiringCertificate: c, Left: relative(c.NotAfter.Sub(v.Now))}
		switch left := c.NotAfter.Sub(inv.At); {
		case left <= 0:
			r.Class, r.Left = "bad", "expired "+r.Left
		case left <= expiringSoon:
			r.Class = "bad"
		case left <= expiringLater:
			r.Class = "warn"
		}
		v.Expiries = append(v.Expiries, r)
	}
	v.Level = "ok"
	crit := func(f string) { v.Level = "crit"; v.Findings = append(v.Findings, f) }
	warn := func(f string) {
		if v.Level == "ok" {
			v.Level = "warn"
		}
		v.Findings = append(v.Findings, f)
	}
	if inv.Expired > 0 {
		crit(plural(inv.Expired, "certificate has expired", "certificates have expired") + " and still " + pick(inv.Expired, "is", "are") + " served")
	}
	if inv.Expiring7d > 0 {
		crit(plural(inv.Expiring7d, "certificate expires", "certificates expire") + " within 7 days")
	}
	if failing > 0 {
		warn(plural(failing, "name is failing", "names are failing"))
	}
	if givenUp > 0 {
		warn(plural(givenUp, "name was given up", "names were given up") + " after failing too long: renew or re-add " + pick(givenUp, "it", "them"))
	}
	if n := inv.Expiring14d - inv.Expiring7d; n > 0 {
		warn(plural(n, "more certificate expires", "more certificates expire") + " within 14 days")
	}
	for _, c := range v.CAs {
		if c.Resting {
			warn(fmt.Sprintf("CA %s failed %d orders in a row: the other CAs go first for the next %s", c.Name, c.FailureStreak, roughly(c.RestingUntil.Sub(v.Now))))
		}
	}
	if !fresh {
		age := v.Now.Sub(inv.At)
		v.Stale = true
		warn("the inventory is " + roughly(age) + " old: scans are failing (see the log)")
	}
	switch v.Level {
	case "ok":
		v.Verdict = "All good"
	case "warn":
		v.Verdict = "Needs attention"
	default:
		v.Verdict = "Urgent"
	}
}

// plural writes n with the singular or the plural phrase.
func plural(n int, one, many string) string {
	return strconv.Itoa(n) + " " + pick(n, one, many)
}

func pick(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// relative writes d roughly, in at most two units: "in 3d 4h", "5m ago".
func relative(d time.Duration) string {
	s := roughly(d.Abs())
	if d < 0 {
		return s + " ago"
	}
	return "in " + s
}

func roughly(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d >= 2*day:
		return fmt.Sprintf("%dd %dh", d/day, d%day/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh %dm", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%ds", d/time.Second)
}

// metrics answers GET /metrics.
func (a *AdminAPI) metrics(_ context.Context, rc *fasthttp.RequestCtx, _ params) error {
	a.cfg.Metrics.serveMetrics(rc)
	return nil
}

// basicRealm is the challenge of the browser routes.
const basicRealm = `Basic realm="certserver", charset="UTF-8"`

// authorizeBrowser checks the credentials of a browser route: the token
// as the password of HTTP Basic authentication (RFC 7617; the user name
// is ignored), or as a bearer token. When they are missing or wrong it
// answers 401 with a Basic challenge, which makes a browser ask for them.
// Basic credentials are accepted on browser routes only, which are
// read-only: a browser that remembers them sends them with requests
// other sites make it send too, and none of those may change anything.
func (a *AdminAPI) authorizeBrowser(rc *fasthttp.RequestCtx) bool {
	scheme, cred, _ := strings.Cut(string(rc.Request.Header.Peek("Authorization")), " ")
	cred = strings.TrimSpace(cred)
	msg := ""
	switch {
	case scheme == "":
		msg = "sign in with any user name and the admin token as the password"
	case strings.EqualFold(scheme, "Basic"):
		if pw, ok := basicPassword(cred); ok && a.tokenMatches(pw) {
			return true
		}
		msg = "invalid token: sign in with any user name and the admin token as the password"
	case strings.EqualFold(scheme, "Bearer"):
		if a.tokenMatches(cred) {
			return true
		}
		msg = "invalid token"
	default:
		msg = "the Authorization header must use the Basic or the Bearer scheme"
	}
	if scheme == "" {
		// A browser's first request never has credentials.
		a.log.Debug("status page asks for credentials", "remote_addr", rc.RemoteAddr().String())
	} else {
		a.log.Warn("unauthorized request", "method", string(rc.Method()), "path", string(rc.URI().PathOriginal()),
			"remote_addr", rc.RemoteAddr().String(), "problem", msg)
	}
	rc.Response.Header.Set("WWW-Authenticate", basicRealm)
	rc.Response.Header.Set("Cache-Control", "no-store")
	rc.SetStatusCode(fasthttp.StatusUnauthorized)
	rc.SetContentType("text/plain; charset=utf-8")
	rc.SetBodyString("401 unauthorized: " + msg + "\n")
	return false
}

// basicPassword returns the password of Basic credentials
// (base64 of "user:password").
func basicPassword(cred string) (string, bool) {
	b, err := base64.StdEncoding.DecodeString(cred)
	if err != nil {
		return "", false
	}
	_, pw, ok := strings.Cut(string(b), ":")
	return pw, ok
}

// tokenMatches compares token with the admin token in constant time.
func (a *AdminAPI) tokenMatches(token string) bool {
	sum := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(sum[:], a.tokenHash[:]) == 1
}
