package main

import (
	"context"
	"reflect"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/dnszone"
	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/pgtest"
	"github.com/certserver/certserver/store/postgres"
	"github.com/certserver/certserver/store/sealed"
	"github.com/jackc/pgx/v5"
	"github.com/miekg/dns"
)

// TestSharedGateAbilities: every optional ability of the fleet's
// database that a part of certserver looks for with store.As is found
// through the key decorator and the gate, as serve wires them
// (sealed.Wrap(gate)); and the gate has every method of the database but
// those that are its own (Close, Database), so that an ability added to
// the database later is not lost behind the gate.
func TestSharedGateAbilities(t *testing.T) {
	st := sealed.Wrap(newSharedGate(), nil)
	for _, tc := range []struct {
		desc  string
		found func() bool
	}{
		{"store.ChallengeLister (the DNS zone)", func() bool { _, ok := store.As[store.ChallengeLister](st); return ok }},
		{"store.Leaser (the renewer's leases)", func() bool { _, ok := store.As[store.Leaser](st); return ok }},
		{"store.LeaseCounter (GET /v1/fleet, the leases metric)", func() bool { _, ok := store.As[store.LeaseCounter](st); return ok }},
		{"store.AccountLocker (the fleet's ACME account)", func() bool { _, ok := store.As[store.AccountLocker](st); return ok }},
		{"ratelimit.SharedStore (the fleet's rate limits)", func() bool { _, ok := store.As[ratelimit.SharedStore](st); return ok }},
		{"store.RateBucketUpdater", func() bool { _, ok := store.As[store.RateBucketUpdater](st); return ok }},
		{"store.RateBucketReader", func() bool { _, ok := store.As[store.RateBucketReader](st); return ok }},
		{"store.KeyRewriter (keys rotate)", func() bool { _, ok := store.As[store.KeyRewriter](st); return ok }},
		{"store.ReplicationSource (the follower)", func() bool { _, ok := store.As[store.ReplicationSource](st); return ok }},
		{"store.Verdicts (on-demand verdicts)", func() bool { _, ok := store.As[store.Verdicts](st); return ok }},
		{"store.DomainsReader", func() bool { _, ok := store.As[store.DomainsReader](st); return ok }},
		{"store.KeyPool (the fleet's key pool)", func() bool { _, ok := store.As[store.KeyPool](st); return ok }},
		{"store.CertificateScanner (the metrics inventory)", func() bool { _, ok := store.As[store.CertificateScanner](st); return ok }},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if !tc.found() {
				t.Errorf("store.As does not find it through sealed.Wrap(newSharedGate(), nil)")
			}
		})
	}

	own := []string{"Close", "Database"}
	gate := reflect.TypeFor[*sharedGate]()
	db := reflect.TypeFor[*postgres.Store]()
	for i := range db.NumMethod() {
		m := db.Method(i)
		if slices.Contains(own, m.Name) {
			continue
		}
		g, ok := gate.MethodByName(m.Name)
		if !ok {
			t.Errorf("*sharedGate has no %s: *postgres.Store's %s is lost behind the gate", m.Name, m.Type)
			continue
		}
		if g.Type.NumIn() != m.Type.NumIn() || g.Type.NumOut() != m.Type.NumOut() {
			t.Errorf("*sharedGate's %s is %s, *postgres.Store's is %s", m.Name, g.Type, m.Type)
		}
	}
}

// TestFleetServeDNSZone: a fleet host with [dns01.zone] starts, and its
// zone answers over UDP a TXT value that only the fleet's database holds
// (put there by another host, not yet in this host's copy).
func TestFleetServeDNSZone(t *testing.T) {
	url := pgtest.New(t)
	dir := t.TempDir()
	cfgPath := fleetConfigFile(t, dir, url, `renew = false
[certs]
socket = ""
listen = "127.0.0.1:0"
[challenge]
listen = ""
[admin]
listen = "127.0.0.1:0"
[dns01.zone]
name = "acme.hoster.test"
listen = "127.0.0.1:0"
contact = "hostmaster@hoster.test"
`)
	e, _, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN_TOKEN": testToken})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- run(ctx, e, []string{"serve", "--config", cfgPath}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("serve exit code %d", code)
			}
		case <-time.After(time.Minute):
			t.Error("serve did not stop")
		}
		if t.Failed() {
			t.Logf("serve log:\n%s", stderr)
		}
	})
	// The zone logs its address just after the start line: wait for it.
	zoneLine := regexp.MustCompile(`dns zone serving".*listen=(127\.0\.0\.1:\d+)`)
	var m []string
	waitForLong(t, "the zone's line", func() bool {
		select {
		case code := <-done:
			done <- code
			t.Fatalf("serve exited with %d:\n%s", code, stderr)
		default:
		}
		m = zoneLine.FindStringSubmatch(stderr.String())
		return m != nil
	})

	// The value goes into the database the way no host's copy sees it:
	// version 0 is below every follower's cursor, so only the database
	// holds it, and the zone can only answer it by reading there.
	value := dnszone.TXTValue("token.thumbprint")
	label := dnszone.Label("shop.example")
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	waitForLong(t, "the database's schema (serve migrates it)", func() bool {
		_, err := conn.Exec(t.Context(), "INSERT INTO challenges (token, key_auth, expires_ns, version) VALUES ($1, $2, $3, 0)",
			"dns-01:"+label+":"+value, value, time.Now().Add(time.Hour).UnixNano())
		return err == nil
	})

	q := new(dns.Msg)
	q.SetQuestion(label+".acme.hoster.test.", dns.TypeTXT)
	var last *dns.Msg
	waitForLong(t, "the zone's answer with the database's value", func() bool {
		r, _, err := (&dns.Client{Timeout: 10 * time.Second}).Exchange(q, m[1])
		if err != nil {
			return false
		}
		last = r
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
			return false
		}
		txt, ok := r.Answer[0].(*dns.TXT)
		return ok && len(txt.Txt) == 1 && txt.Txt[0] == value
	})
	if last == nil || !last.Authoritative {
		t.Errorf("answer %v, want it authoritative", last)
	}
}
