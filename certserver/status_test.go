package certserver

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
)

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

// chromium runs headless Chromium on rawURL with the given extra flags
// (--dump-dom, --screenshot=…) and returns its standard output. A missing
// browser fails the test: it never skips.
func chromium(t *testing.T, rawURL string, flags ...string) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s: %v: install the Debian package chromium (scripts/deps.sh does, and make test runs it)", chromiumPath, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir(),
	}, flags...)
	cmd := exec.CommandContext(ctx, chromiumPath, append(args, rawURL)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v\n%s", flags, err, stderr.String())
	}
	return string(out)
}

// withBasic returns base with the token in its user information: Chromium
// sends it as HTTP Basic credentials when the page asks for them.
func withBasic(t *testing.T, base, user, password string) string {
	u, err := url.Parse(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, password)
	return u.String()
}

// TestStatusPageInChromium loads the status page in a real browser, over
// the real admin API and a real store holding valid, failing, expiring
// and expired names, and checks what the page shows. Set
// CERTSERVER_STATUS_SCREENSHOT=FILE.png to keep a screenshot of it.
func TestStatusPageInChromium(t *testing.T) {
	now := time.Now()
	ctx := context.Background()
	st := newTestStore(t)
	m := newTestMetrics(t, st, func() time.Time { return now })
	m.cfg.FailingLimit, m.cfg.SoonestLimit = 20, 20
	cas := caQueue{
		{Name: "letsencrypt", Directory: "https://acme-v02.api.letsencrypt.org/directory", OffersARI: true,
			Orders: 12, Issued: 7, Failed: 5, RateLimited: 1, Deferred: 40, FailureStreak: 3, RestingUntil: now.Add(10*time.Minute + 30*time.Second),
			Limits: []api.LimitStatus{
				{Limit: "new_orders_per_account", Scope: "account", Burst: 300, PerSeconds: 3 * 3600, Blocked: 1,
					Buckets: []api.Bucket{{Tokens: 0.4, Available: now.Add(22*time.Minute + 30*time.Second), Full: now.Add(3 * time.Hour)}}},
				{Limit: "authorization_failures_per_identifier", Scope: "name", Burst: 5, PerSeconds: 3600, Tracked: 4, Blocked: 2},
			}},
		{Name: "zerossl", Directory: "https://acme.zerossl.com/v2/DV90", Orders: 3, Issued: 3,
			Limits: []api.LimitStatus{{Limit: "new_orders_per_account", Scope: "account", Burst: -1, Buckets: []api.Bucket{{Tokens: -1}}}}},
		{Name: "https://ca.example/dir", Directory: "https://ca.example/dir"},
	}
	base := startAdmin(t, AdminConfig{Token: testToken, Metrics: m, Queue: cas, Now: func() time.Time { return now }}, st)

	const hostileError = `acme unauthorized: <script>alert("x")</script> & "quotes"`
	names := []struct {
		name    string
		state   store.State
		left    time.Duration // certificate lifetime left; 0 for none
		lastErr string
	}{
		{name: "shop.example.com", state: store.StateValid, left: 60 * 24 * time.Hour},
		{name: "blog.example.com", state: store.StateValid, left: 5 * 24 * time.Hour},
		{name: "old.example.com", state: store.StateRenewing, left: -2 * 24 * time.Hour},
		{name: "caa.example.net", state: store.StateFailing, left: 12 * 24 * time.Hour,
			lastErr: "obtain caa.example.net: acme caa: CAA record for example.net prevents issuance"},
		{name: "hostile.example.net", state: store.StateFailing, lastErr: hostileError},
		{name: "new.example.org", state: store.StatePending},
		{name: "gone.example.org", state: store.StateGivenUp,
			lastErr: "given up after 31 days of failures; renew or re-add the name to try again. Last error: acme dns: NXDOMAIN"},
	}
	var ds []*store.Domain
	for i, n := range names {
		d := &store.Domain{Name: n.name, State: n.state, LastError: n.lastErr, NextAttempt: now.Add(time.Hour), AddedAt: now}
		if n.left != 0 {
			putCert(t, st, fakeCert(n.name, now.Add(n.left)))
			d.CertID = n.name
		}
		if n.state == store.StateFailing || n.state == store.StateGivenUp {
			d.Failures, d.FailingSince = i+1, now.Add(-time.Duration(i)*time.Hour)
		}
		if n.state == store.StatePending {
			d.NextAttempt = now
		}
		ds = append(ds, d)
	}
	if _, _, err := st.AddDomains(ctx, ds); err != nil {
		t.Fatal(err)
	}
	putCert(t, st, fakeCert("imported.example.io", now.Add(20*24*time.Hour)))

	// Before the first inventory the page says it is counting.
	dom := chromium(t, withBasic(t, base, "oncall", testToken), "--dump-dom")
	if !strings.Contains(dom, "The first inventory of the store is running") {
		t.Errorf("page before the first inventory:\n%s", dom)
	}
	if err := m.Refresh(ctx); err != nil {
		t.Fatal(err)
	}

	t.Run("no credentials", func(t *testing.T) {
		// Headless Chromium cannot answer the Basic challenge: it shows
		// nothing. TestMetricsAuth checks the challenge itself.
		dom := chromium(t, base+"/", "--dump-dom")
		if strings.Contains(dom, "shop.example.com") || strings.Contains(dom, "data-count") {
			t.Errorf("page without credentials:\n%s", dom)
		}
	})
	t.Run("wrong token", func(t *testing.T) {
		dom := chromium(t, withBasic(t, base, "oncall", "wrong"), "--dump-dom")
		if strings.Contains(dom, "shop.example.com") {
			t.Errorf("page with a wrong token shows names:\n%s", dom)
		}
	})

	dom = chromium(t, withBasic(t, base, "oncall", testToken), "--dump-dom")
	text := regexp.MustCompile(`\s+`).ReplaceAllString(dom, " ")
	for _, want := range []struct{ desc, html string }{
		{"verdict", `<p class="verdict">Urgent</p>`},
		{"expired finding", `<li>1 certificate has expired and still is served</li>`},
		{"7-day finding", `<li>1 certificate expires within 7 days</li>`},
		{"failing finding", `<li>2 names are failing</li>`},
		{"given-up finding", `<li>1 name was given up after failing too long: renew or re-add it</li>`},
		{"given-up count", `data-state="given_up">1<`},
		{"given-up name", `gone.example.org <span class="tag">given up</span> <span class="tag">no certificate</span>`},
		{"given-up reason", `given up after 31 days of failures`},
		{"14-day finding", `<li>1 more certificate expires within 14 days</li>`},
		{"valid count", `data-state="valid">2<`},
		{"failing count", `data-state="failing">2<`},
		{"renewing count", `data-state="renewing">1<`},
		{"pending count", `data-state="pending">1<`},
		{"issuing count", `data-state="issuing">0<`},
		{"total", `data-count="domains">7<`},
		{"certificates", `data-count="certificates">5<`},
		{"expired", `data-count="expired">1<`},
		{"expiring 7d", `data-count="expiring-7d">1<`},
		{"expiring 14d", `data-count="expiring-14d">2<`},
		{"queue", `data-count="queue-depth">1<`},
		{"failing name", `<td class="name">caa.example.net</td>`},
		{"its error", `CAA record for example.net prevents issuance`},
		{"failing without certificate", `hostile.example.net <span class="tag">no certificate</span>`},
		{"hostile error escaped", `acme unauthorized: &lt;script&gt;alert("x")&lt;/script&gt; &amp; "quotes"`},
		{"expired first", `<tr class="bad"> <td class="name">old.example.com</td>`},
		{"expired left", `expired 2d 0h ago`},
		{"expiring soon", `<td class="name">blog.example.com</td>`},
		{"unmanaged certificate", `<td class="name">imported.example.io</td>`},
		{"not managed tag", `<span class="tag">not managed</span>`},
		{"resting finding", `<li>CA letsencrypt failed 3 orders in a row: the other CAs go first for the next 10m</li>`},
		{"resting CA", `<tr class="warn" data-ca="letsencrypt"> <td class="name">letsencrypt <span class="tag">resting</span> <span class="tag">ARI</span><br><span class="dir">https://acme-v02.api.letsencrypt.org/directory</span></td> <td class="num">12</td> <td class="num">7</td> <td class="num">5</td> <td class="num">1</td> <td class="num">40</td>`},
		{"empty new-orders bucket", `<td>none of 300 per 3h until in 22m</td> <td>failed validations per name: 2 blocked<br></td>`},
		{"second CA", `<tr data-ca="zerossl"> <td class="name">zerossl<br><span class="dir">https://acme.zerossl.com/v2/DV90</span></td> <td class="num">3</td> <td class="num">3</td> <td class="num">0</td>`},
		{"no limit", `<td>no limit</td> <td>room everywhere</td>`},
		{"CA named by its directory, once", `<td class="name">https://ca.example/dir</td>`},
	} {
		if !strings.Contains(text, want.html) {
			t.Errorf("%s: the page does not show %q", want.desc, want.html)
		}
	}
	if strings.Contains(dom, "<script>") {
		t.Error("the page holds a script element: an error text was not escaped")
	}
	// Soonest first: expired, 5 days, 12 days, 20 days, 60 days.
	order := []string{"old.example.com", "blog.example.com", "caa.example.net", "imported.example.io", "shop.example.com"}
	at := strings.Index(text, `id="expiring"`)
	for _, name := range order {
		i := strings.Index(text[max(at, 0):], `<td class="name">`+name+`</td>`)
		if at < 0 || i < 0 {
			t.Fatalf("soonest expiries are not in order %v:\n%s", order, dom)
		}
		at += i
	}
	if t.Failed() {
		t.Logf("the page:\n%s", dom)
	}

	if path := os.Getenv("CERTSERVER_STATUS_SCREENSHOT"); path != "" {
		abs, err := filepath.Abs(path)
		if err != nil {
			t.Fatal(err)
		}
		chromium(t, withBasic(t, base, "oncall", testToken), "--screenshot="+abs, "--window-size=1280,1400", "--hide-scrollbars")
		t.Logf("screenshot in %s", abs)
	}
}

// TestStatusPageJudge checks the verdict for inventories that differ in
// one way each.
func TestStatusPageJudge(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		desc     string
		inv      Inventory
		level    string
		findings string
	}{
		{desc: "all good", inv: Inventory{At: now}, level: "ok"},
		{desc: "one failing", inv: Inventory{At: now, States: map[store.State]int{store.StateFailing: 1}},
			level: "warn", findings: "1 name is failing"},
		{desc: "expiring within 14 days", inv: Inventory{At: now, Expiring14d: 2},
			level: "warn", findings: "2 more certificates expire within 14 days"},
		{desc: "expiring within 7 days", inv: Inventory{At: now, Expiring7d: 1, Expiring14d: 1},
			level: "crit", findings: "1 certificate expires within 7 days"},
		{desc: "expired", inv: Inventory{At: now, Expired: 3},
			level: "crit", findings: "3 certificates have expired and still are served"},
		{desc: "old inventory", inv: Inventory{At: now.Add(-4 * time.Minute)},
			level: "warn", findings: "the inventory is 4m old: scans are failing (see the log)"},
		{desc: "slow scans are not old", inv: Inventory{At: now.Add(-4 * time.Minute), Took: 10 * time.Second}, level: "ok"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			v := statusView{Now: now, Inv: &tc.inv}
			v.judge(inventoryFresh(&tc.inv, now, time.Minute))
			if v.Level != tc.level || strings.Join(v.Findings, "; ") != tc.findings {
				t.Errorf("level %q, findings %q; want %q, %q", v.Level, v.Findings, tc.level, tc.findings)
			}
		})
	}
}

func TestRelative(t *testing.T) {
	tests := []struct {
		desc string
		d    time.Duration
		want string
	}{
		{desc: "seconds ahead", d: 42 * time.Second, want: "in 42s"},
		{desc: "minutes ago", d: -5*time.Minute - 10*time.Second, want: "5m ago"},
		{desc: "hours", d: 25*time.Hour + 30*time.Minute, want: "in 25h 30m"},
		{desc: "days", d: -(3*24*time.Hour + 4*time.Hour), want: "3d 4h ago"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if got := relative(tc.d); got != tc.want {
				t.Errorf("relative(%v) = %q, want %q", tc.d, got, tc.want)
			}
		})
	}
}

// caQueue is a renewer that reports fixed CAs.
type caQueue []api.CAStatus

func (caQueue) InFlight() int         { return 0 }
func (caQueue) Throughput() float64   { return 0 }
func (q caQueue) CAs() []api.CAStatus { return q }
