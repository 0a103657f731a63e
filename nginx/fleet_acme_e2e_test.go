package nginx_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/certserver/certserver/nginx/nginxtest"
	"github.com/certserver/certserver/renewer/dnstest"
	"github.com/certserver/certserver/renewer/pebbletest"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/jackc/pgx/v5"
)

// issueBound is how long a fleet ACME test waits for names to be issued:
// Pebble answers at once, but each order waits about a second for lego to
// look at its authorization again, and the machine is loaded.
const issueBound = 10 * time.Minute

// fleetLeaseTTL is [fleet] lease_ttl in the tests: short, so that a name
// whose host died or paused is taken over within seconds, not minutes.
const fleetLeaseTTL = 6 * time.Second

// fleetHostIPs are the addresses of a fleet's three hosts.
var fleetHostIPs = []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}

// fleetACMEEnv is what the subtests of TestFleetACME share: one PostgreSQL
// cluster (each fleet gets a database of its own), one Pebble, and Pebble's
// DNS server, which answers every name under fleet.test with the three
// hosts' addresses in rotation, so that Pebble's validations of one
// challenge (three at once, from its three "perspectives") reach a
// different host each time: every host must answer every token.
type fleetACMEEnv struct {
	cluster  *pgtest.Cluster
	ca       *pebbletest.Server
	dns      *dnstest.Server
	httpPort int    // every host's port-80 stand-in, Pebble's HTTP-01 port
	roots    string // [acme] ca_roots: Pebble's listener certificate
}

func startFleetACMEEnv(t testing.TB) *fleetACMEEnv {
	t.Helper()
	e := &fleetACMEEnv{httpPort: nginxtest.FreePortOn(t, fleetHostIPs...), dns: dnstest.Start(t, dnstest.Options{})}
	var addrs []netip.Addr
	for _, ip := range fleetHostIPs {
		addrs = append(addrs, netip.MustParseAddr(ip))
	}
	e.dns.SetA("*.fleet.test", addrs...)
	e.dns.SetRotation("*.fleet.test", true)
	e.ca = pebbletest.Start(t, pebbletest.Options{HTTPPort: e.httpPort, DNS: e.dns})
	e.roots = filepath.Join(t.TempDir(), "pebble-listener.pem")
	writeListenerPEM(t, e.ca, e.roots)
	e.cluster = pgtest.Start(t)
	return e
}

// fleetACMEOptions configures fleetACMEEnv.fleet.
type fleetACMEOptions struct {
	// NewOrders is [acme.limits] new_orders, the fleet's budget. Default
	// "unlimited". Every other limit is unlimited: the tests order
	// hundreds of names under one registered domain.
	NewOrders string
	// Workers is [renewer] workers of each host. Default 4.
	Workers int
	// Hosts is the number of hosts, from 1 to 3. Default 3.
	Hosts int
	// Extra is TOML appended to every host's configuration (an
	// [on_demand] section). Default "".
	Extra string
}

// fleet starts opts.Hosts hosts (three by default) ordering from the
// shared Pebble, on a new database of the shared cluster.
func (e *fleetACMEEnv) fleet(t testing.TB, opts fleetACMEOptions) *fleet {
	t.Helper()
	if opts.NewOrders == "" {
		opts.NewOrders = "unlimited"
	}
	if opts.Workers == 0 {
		opts.Workers = 4
	}
	if opts.Hosts == 0 {
		opts.Hosts = len(fleetHostIPs)
	}
	f := startFleetWith(t, opts.Hosts, fleetOptions{
		Cluster:  e.cluster,
		HTTPPort: e.httpPort,
		Extra:    func(*fleetMember) string { return e.hostConfig(opts) },
	})
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range f.hosts {
				t.Logf("%s nginx error log:\n%s", m.name, m.ngx.ErrorLog())
			}
		}
	})
	return f
}

// hostConfig is what a host of a fleet of e adds to its configuration
// after its [fleet] section.
func (e *fleetACMEEnv) hostConfig(opts fleetACMEOptions) string {
	return fmt.Sprintf(`lease_ttl = %q

[acme]
directory = %q
agree_terms = true
ca_roots = %q
profile = "default"
timeout = "1m"

[acme.limits]
new_orders = %q
certificates_per_registered_domain = "unlimited"
certificates_per_exact_set = "unlimited"
order_requests = "unlimited"

[renewer]
workers = %d
idle_wait = "1s"

[preflight]
resolvers = [%q]
targets = %s
`, fleetLeaseTTL, e.ca.DirectoryURL, e.roots, opts.NewOrders, opts.Workers, e.dns.Addr(), tomlStrings(fleetHostIPs)) + opts.Extra
}

// pointAt makes every name under label.fleet.test answer the addresses of
// hosts, in rotation: what a load balancer or a DNS name in front of the
// fleet sends the CA's validations to.
func (e *fleetACMEEnv) pointAt(label string, hosts []*fleetMember) {
	var addrs []netip.Addr
	for _, m := range hosts {
		addrs = append(addrs, netip.MustParseAddr(m.ip))
	}
	e.dns.SetA("*."+label+".fleet.test", addrs...)
	e.dns.SetRotation("*."+label+".fleet.test", true)
}

// fleetNames returns n names under fleet.test: "n000.<label>.fleet.test", ….
func fleetNames(label string, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("n%03d.%s.fleet.test", i, label)
	}
	return names
}

// ordersOf returns the orders of all that name one of names, by name, in
// the order they reached the front.
func ordersOf(all []pebbletest.Order, names []string) map[string][]pebbletest.Order {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	by := map[string][]pebbletest.Order{}
	for _, o := range all {
		for _, n := range o.Names {
			if want[n] {
				by[n] = append(by[n], o)
			}
		}
	}
	return by
}

// servesVerified is a condition for eventually: every host's nginx serves
// each name a chain that a TLS client verifies for the name against
// Pebble's roots.
func (e *fleetACMEEnv) servesVerified(t testing.TB, f *fleet, names []string) func() error {
	roots := e.ca.Roots(t)
	pending := slices.Clone(names)
	return func() error {
		for _, m := range f.hosts {
			var still []string
			for _, n := range pending {
				if _, err := handshake(m.ngx.HTTPSAddr(), n, roots); err != nil {
					still = append(still, n)
				}
			}
			if len(still) > 0 {
				_, err := handshake(m.ngx.HTTPSAddr(), still[0], roots)
				return fmt.Errorf("%s: %d of %d names not served a verified chain (first %s: %v)", m.name, len(still), len(names), still[0], err)
			}
		}
		return nil
	}
}

// challengesAnswered returns how many HTTP-01 validations each host's
// challenge endpoint answered, from its (debug) log.
func challengesAnswered(f *fleet) []int {
	var n []int
	for _, m := range f.hosts {
		n = append(n, countLines(m.side.log(), "challenge answered"))
	}
	return n
}

// leases returns the fleet's unexpired leases, from its database.
func (f *fleet) leases(t testing.TB) []store.Lease {
	t.Helper()
	l, ok := any(f.pg).(store.Leaser)
	if !ok {
		t.Fatalf("the PostgreSQL store does not implement store.Leaser")
	}
	ls, err := l.Leases(context.Background())
	if err != nil {
		t.Fatalf("leases: %v", err)
	}
	return ls
}

// leaseRows returns the names of every row of the fleet's leases table
// that host holds, expired or not, straight from the database: read
// right after host died, these are the names whose work it was cut off
// from (a row stays when its lease expires until another host claims the
// name, and goes only when its holder releases it).
func (f *fleet) leaseRows(t testing.TB, host string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, f.url)
	if err != nil {
		t.Fatalf("connect to the fleet's database: %v", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT name FROM leases WHERE host = $1 ORDER BY name", host)
	if err != nil {
		t.Fatalf("leases of %s: %v", host, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("leases of %s: %v", host, err)
	}
	return names
}

// member returns the host named name.
func (f *fleet) member(t testing.TB, name string) *fleetMember {
	t.Helper()
	for _, m := range f.hosts {
		if m.name == name {
			return m
		}
	}
	t.Fatalf("no host %q in the fleet", name)
	return nil
}

// TestFleetACME: issue 13's fleet work sharing, end to end: three hosts
// on 127.0.0.2-4 (sidecar and nginx each, every port-80 stand-in on the
// same port), one PostgreSQL, one Pebble whose validations reach a
// different host each time. The subtests share the cluster and Pebble and
// run one after another, each on a fleet and database of its own.
func TestFleetACME(t *testing.T) {
	e := startFleetACMEEnv(t)

	// 300 names added on host 1: 300 orders at Pebble, one per name,
	// every name valid and served by all three hosts; Pebble's
	// validations reached every host.
	t.Run("300 names added on host 1", func(t *testing.T) {
		f := e.fleet(t, fleetACMEOptions{})
		names := fleetNames("add", 300)
		before := e.ca.OrderCount()
		start := time.Now()
		f.hosts[0].side.addDomains(t, names...)
		newAdminClient(t, f.hosts[0].side).waitValid(t, names, issueBound)
		t.Logf("300 names valid after %v", time.Since(start).Round(time.Millisecond))
		within(t, "every name served a verified chain by every host", e.servesVerified(t, f, names))

		orders := e.ca.Orders()[before:]
		by := ordersOf(orders, names)
		for _, n := range names {
			if len(by[n]) != 1 {
				t.Errorf("%s: %d orders at Pebble, want 1", n, len(by[n]))
			}
		}
		if len(orders) != len(names) {
			t.Errorf("%d orders at Pebble for %d names, want one each", len(orders), len(names))
		}
		answered := challengesAnswered(f)
		t.Logf("validations answered by each host: %v", answered)
		for i, n := range answered {
			if n == 0 {
				t.Errorf("%s answered no validation: Pebble's requests did not reach every host", f.hosts[i].name)
			}
		}
	})

	// The host holding the most leases is killed (SIGKILL) while names
	// are being ordered, and started again: every name ends valid; a name
	// is ordered a second time only when its order was cut off (the
	// killed host held its lease, or the order failed at Pebble because
	// its validation reached the host as it died), and at most once more;
	// no name's two orders overlap.
	t.Run("host with the most leases killed mid-issuance", func(t *testing.T) {
		f := e.fleet(t, fleetACMEOptions{})
		names := fleetNames("kill", 60)
		before := e.ca.OrderCount()
		f.hosts[0].side.addDomains(t, names...)

		// Mid-issuance: orders under way at Pebble and leases held.
		var held map[string][]string
		eventually(t, issueBound, "orders under way", func() error {
			pending := 0
			for _, o := range e.ca.Orders()[before:] {
				if o.Result == "" {
					pending++
				}
			}
			held = map[string][]string{}
			for _, l := range f.leases(t) {
				held[l.Host] = append(held[l.Host], l.Name)
			}
			if pending < 4 || len(held) == 0 {
				return fmt.Errorf("%d orders pending at Pebble, leases %v", pending, held)
			}
			return nil
		})
		victimName := ""
		for h, ns := range held {
			if victimName == "" || len(ns) > len(held[victimName]) {
				victimName = h
			}
		}
		victim := f.member(t, victimName)
		// The CA's validations go to the live hosts only while the
		// victim is down, as a health-checked load balancer sends them:
		// a validation reaching a host whose sidecar is dead fails the
		// order whoever sent it, which is not what this test is about.
		var live []*fleetMember
		for _, m := range f.hosts {
			if m != victim {
				live = append(live, m)
			}
		}
		e.pointAt("kill", live)
		victim.side.kill(t)
		killed := time.Now()
		// The names it held when it died, read now from the database:
		// the poll above is too early, as the victim may have claimed
		// (and ordered) more names since.
		cut := map[string]bool{}
		rows := f.leaseRows(t, victimName)
		for _, n := range rows {
			cut[n] = true
		}
		t.Logf("killed %s holding %d leases %v (leases at the last poll: %v)", victimName, len(cut), rows, held)
		victim.side.restart(t)
		e.pointAt("kill", f.hosts)

		// A validation already on its way to the victim when it died
		// fails its order, whichever host sent it: that name is failing
		// and ordered again after the first backoff (a minute).
		admin := newAdminClient(t, f.hosts[0].side)
		eventually(t, issueBound, "every name valid", func() error {
			for _, n := range names {
				d, err := admin.domain(n)
				if err != nil {
					return err
				}
				if d.State != "valid" {
					return fmt.Errorf("%s is %s (%s)", n, d.State, d.LastError)
				}
			}
			return nil
		})
		t.Logf("every name valid %v after the kill", time.Since(killed).Round(time.Millisecond))
		within(t, "every name served a verified chain by every host", e.servesVerified(t, f, names))

		extra, failed := 0, 0
		for _, n := range names {
			ords := ordersOf(e.ca.Orders()[before:], []string{n})[n]
			switch {
			case len(ords) == 0:
				t.Errorf("%s: no order at Pebble", n)
			case len(ords) > 2:
				t.Errorf("%s: %d orders at Pebble, want at most 2", n, len(ords))
			case len(ords) == 2 && !cut[n] && ords[0].Result != "invalid":
				t.Errorf("%s: ordered twice, but %s did not hold its lease when killed, and the first order did not fail (%q)", n, victimName, ords[0].Result)
			case len(ords) == 2 && !cut[n]:
				failed++
			}
			if len(ords) > 1 {
				extra += len(ords) - 1
			}
			for i := 1; i < len(ords); i++ {
				if ords[i].Received.Before(ords[i-1].Last) {
					t.Errorf("%s: ordered twice at once: an order at %v while the one of %v was still going (last request %v)",
						n, ords[i].Received.Format(time.StampMilli), ords[i-1].Received.Format(time.StampMilli), ords[i-1].Last.Format(time.StampMilli))
				}
			}
		}
		t.Logf("%d extra orders: for the %d names whose lease the killed host held, and %d whose validation reached it as it died", extra, len(cut), failed)
	})

	// A fleet budget of 20 new orders a minute, three hosts ordering 30
	// names: what Pebble sees never exceeds the budget. The budget is a
	// GCRA bucket, as Let's Encrypt's limits are: a full bucket allows 20
	// orders at once, then one every 3 s (a minute / 20) as it refills.
	// So the check is: any stretch of orders at Pebble, from one order to
	// a later one d apart, holds at most 20 + one per 3 s of d (plus
	// budgetSkew, below).
	t.Run("budget of 20 new orders a minute", func(t *testing.T) {
		const burst, per = 20, time.Minute
		// budgetSkew is allowed for the time from a host taking its
		// token to its order reaching Pebble, which on a loaded machine
		// can exceed a second: 10 s, worth 3 more orders (10 s / 3 s).
		// Each host has 10 workers, so three hosts each spending a
		// budget of their own (20 at once) would order all 30 names at
		// once: 30 orders within seconds against the 20 + 3 = 23 the
		// check allows (30 would pass only spread over 20 s or more).
		const budgetSkew = 10 * time.Second
		f := e.fleet(t, fleetACMEOptions{NewOrders: fmt.Sprintf("%d/%v", burst, "1m"), Workers: 10})
		names := fleetNames("budget", 30)
		before := e.ca.OrderCount()
		// Added on every host, a third each, so that all three order.
		for i, m := range f.hosts {
			m.side.addDomains(t, names[i*10:(i+1)*10]...)
		}
		newAdminClient(t, f.hosts[0].side).waitValid(t, names, issueBound)

		var at []time.Time
		for _, o := range e.ca.Orders()[before:] {
			at = append(at, o.Received)
		}
		slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
		if len(at) != len(names) {
			t.Errorf("%d orders at Pebble for %d names, want one each", len(at), len(names))
		}
		if err := withinBudget(at, burst, per, budgetSkew); err != nil {
			t.Error(err)
		}
		t.Logf("orders over %v; at most %d in any minute", at[len(at)-1].Sub(at[0]).Round(time.Millisecond), maxInWindow(at, time.Minute))
	})

	// On demand across the fleet: 1,000 handshakes for one new allowed
	// name spread over the three nginx make one order; 1,000 random names
	// the ask URL refuses, each asked for on all three hosts, make no
	// order and one policy check each, fleet-wide.
	t.Run("on demand", func(t *testing.T) {
		const allowed = "wanted.od.fleet.test"
		var mu sync.Mutex
		asked := map[string]int{}
		ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d := r.URL.Query().Get("domain")
			mu.Lock()
			asked[d]++
			mu.Unlock()
			if d != allowed {
				http.Error(w, "not ours", http.StatusNotFound)
			}
		}))
		t.Cleanup(ask.Close)
		asks := func(name string) int {
			mu.Lock()
			defer mu.Unlock()
			return asked[name]
		}
		// Verdicts are kept an hour, so that "asked once" holds however
		// long the handshakes take on a loaded machine (deny_ttl's
		// default is a minute).
		f := e.fleet(t, fleetACMEOptions{Extra: fmt.Sprintf("\n[on_demand]\nask_url = %q\nresolvers = [%q]\nallow_ttl = \"1h\"\ndeny_ttl = \"1h\"\n", ask.URL, e.dns.Addr())})
		before := e.ca.OrderCount()

		// spread makes handshake i for name(i) on host i%3, 12 at a
		// time. A handshake can fail on a loaded machine (it times out
		// after 5 s), so a failed one is tried again, up to three times
		// in all, and at most 1% of all attempts may fail; but every
		// handshake i must complete once, or the host did not surely see
		// its name.
		var handshakes, failed atomic.Int64
		spread := func(n int, name func(i int) string) {
			var wg sync.WaitGroup
			var next, missed atomic.Int64
			for range 12 {
				wg.Go(func() {
					for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
						m := f.hosts[i%len(f.hosts)]
						var err error
						for range 3 {
							handshakes.Add(1)
							if _, err = handshake(m.ngx.HTTPSAddr(), name(i), nil); err == nil {
								break
							}
							if failed.Add(1) <= 5 {
								t.Logf("%s: handshake for %s: %v", m.name, name(i), err)
							}
						}
						if err != nil && missed.Add(1) <= 5 {
							t.Errorf("%s: no handshake for %s completed in three tries (last: %v)", m.name, name(i), err)
						}
					}
				})
			}
			wg.Wait()
			if n := missed.Load(); n > 5 {
				t.Errorf("... %d handshakes in all never completed", n)
			}
			if h, fl := handshakes.Load(), failed.Load(); fl > h/100 {
				t.Errorf("%d of %d handshakes failed, want at most 1%%", fl, h)
			}
		}
		spread(1000, func(int) string { return allowed })
		within(t, allowed+" served a verified chain by every host", e.servesVerified(t, f, []string{allowed}))
		eventually(t, issueBound, "every host idle", func() error {
			for _, m := range f.hosts {
				if err := m.side.idle(); err != nil {
					return fmt.Errorf("%s: %w", m.name, err)
				}
			}
			return nil
		})
		if n := e.ca.OrdersFor(allowed); n != 1 {
			t.Errorf("%s: %d orders at Pebble after 1,000 handshakes over three hosts, want 1", allowed, n)
		}
		if n := asks(allowed); n != 1 {
			t.Errorf("%s: the ask URL was asked %d times, want once for the fleet", allowed, n)
		}

		refused := make([]string, 1000)
		for i := range refused {
			refused[i] = fmt.Sprintf("r%04d-%x.scan.fleet.test", i, time.Now().UnixNano()&0xffffff)
		}
		ordersBefore := e.ca.OrderCount()
		// Each name on every host, one after another: handshake i is for
		// name i/3 on host i%3.
		spread(3*len(refused), func(i int) string { return refused[i/3] })
		eventually(t, issueBound, "every refused name asked", func() error {
			for _, n := range refused {
				if asks(n) == 0 {
					return fmt.Errorf("%s not asked yet", n)
				}
			}
			return nil
		})
		eventually(t, issueBound, "every host idle", func() error {
			for _, m := range f.hosts {
				if err := m.side.idle(); err != nil {
					return fmt.Errorf("%s: %w", m.name, err)
				}
			}
			return nil
		})
		twice := 0
		for _, n := range refused {
			if c := asks(n); c != 1 {
				twice++
				if twice <= 5 {
					t.Errorf("%s: asked %d times, want once for the fleet", n, c)
				}
			}
		}
		if twice > 5 {
			t.Errorf("... %d names in all not asked exactly once", twice)
		}
		if n := e.ca.OrderCount() - ordersBefore; n != 0 {
			t.Errorf("%d orders at Pebble for refused names, want 0", n)
		}
		t.Logf("%d handshakes (%d failed); %d orders in all", handshakes.Load(), failed.Load(), e.ca.OrderCount()-before)
	})

	// A host paused (SIGSTOP) mid-order, past its lease, then resumed:
	// another host takes the name over and its certificate is stored; the
	// paused host's late result is discarded (fencing), and the other
	// host's certificate stands on every host.
	t.Run("lease holder paused past its lease", func(t *testing.T) {
		f := e.fleet(t, fleetACMEOptions{Workers: 1})
		ctx := context.Background()
		name := "n000.pause.fleet.test"
		e.pointAt("pause", f.hosts)
		before := e.ca.OrderCount()
		f.hosts[0].side.addDomains(t, name)

		var holder *fleetMember
		eventually(t, issueBound, name+" leased", func() error {
			for _, l := range f.leases(t) {
				if l.Name == name {
					holder = f.member(t, l.Host)
					return nil
				}
			}
			return fmt.Errorf("no lease on %s yet", name)
		})
		// While it is paused the CA's validations go to the other hosts
		// only, as a health-checked load balancer sends them: one sent
		// to a host whose sidecar is paused times out and fails the
		// order, whichever host sent it.
		var others []*fleetMember
		for _, m := range f.hosts {
			if m != holder {
				others = append(others, m)
			}
		}
		e.pointAt("pause", others)
		// The holder is paused as soon as its order reaches Pebble.
		for deadline := time.Now().Add(issueBound); e.ca.OrderCount() == before; time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no order for %s within %v", name, issueBound)
			}
		}
		if err := holder.side.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		paused := time.Now()
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				holder.side.cmd.Process.Signal(syscall.SIGCONT)
			}
		}
		t.Cleanup(resume)
		if o := e.ca.Orders()[before]; o.Result != "" {
			t.Fatalf("%s's order was %s before %s could be paused; the test cannot pause it mid-order", name, o.Result, holder.name)
		}

		// Another host takes the name over once the lease expires.
		var doc *domainDoc
		eventually(t, issueBound, name+" valid through another host", others[0].side.domainState(name, "valid", &doc))
		t.Logf("%s paused for %v; another host's certificate stored", holder.name, time.Since(paused).Round(time.Millisecond))
		standing := doc.Certificate.Serial

		// Resumed: it finishes what it was doing (its order completes at
		// Pebble, or it gives up on the lease it lost) and writes nothing.
		resume()
		eventually(t, issueBound, holder.name+" resumed and idle", holder.side.idle)
		e.pointAt("pause", f.hosts)
		first := e.ca.Orders()[before]
		t.Logf("the paused host's order ended %q", first.Result)
		got, err := f.shared.GetCertificate(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if !sameSerialHex(got.Serial, standing) {
			t.Errorf("the fleet's certificate for %s is serial %s after the paused host resumed, want %s (the other host's)", name, got.Serial, standing)
		}
		// renewer/lease.go logs one of these when a lease is lost or
		// lapses under a running order.
		if log := holder.side.log(); !strings.Contains(log, "lease on "+name+" lost") && !strings.Contains(log, "cannot renew the lease on "+name) {
			t.Errorf("%s's log says neither \"lease on %s lost\" nor \"cannot renew the lease on %s\"", holder.name, name, name)
		}
		within(t, "the other host's certificate served by every host", func() error {
			for _, m := range f.hosts {
				certs, err := handshake(m.ngx.HTTPSAddr(), name, e.ca.Roots(t))
				if err != nil {
					return fmt.Errorf("%s: %w", m.name, err)
				}
				if !sameSerial(standing, certs[0].SerialNumber) {
					return fmt.Errorf("%s serves serial %x, want %s", m.name, certs[0].SerialNumber, standing)
				}
			}
			return nil
		})
	})
}

// sameSerialHex reports whether two serials as the store and the admin API
// write them (hex, any case, colons or not) are one.
func sameSerialHex(a, b string) bool {
	norm := func(s string) string { return strings.TrimLeft(strings.ToLower(strings.ReplaceAll(s, ":", "")), "0") }
	return norm(a) == norm(b)
}

// withinBudget checks sorted order times against a GCRA budget of burst
// per period: any stretch from one order to a later one holds at most
// burst orders plus one for each interval (period/burst) the stretch
// spans. skew is allowed for the time between a host taking its token
// and its order reaching the front.
func withinBudget(at []time.Time, burst int, per, skew time.Duration) error {
	interval := per / time.Duration(burst)
	for i := range at {
		for j := i; j < len(at); j++ {
			allowed := burst + int((at[j].Sub(at[i])+skew)/interval)
			if n := j - i + 1; n > allowed {
				return fmt.Errorf("%d orders from %v to %v (%v), the budget of %d per %v allows %d",
					n, at[i].Format(time.StampMilli), at[j].Format(time.StampMilli), at[j].Sub(at[i]).Round(time.Millisecond), burst, per, allowed)
			}
		}
	}
	return nil
}

// maxInWindow returns the most of the sorted times in any window of d.
func maxInWindow(at []time.Time, d time.Duration) int {
	most := 0
	for i, j := 0, 0; j < len(at); j++ {
		for at[j].Sub(at[i]) >= d {
			i++
		}
		most = max(most, j-i+1)
	}
	return most
}
