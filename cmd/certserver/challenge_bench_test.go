package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
	"github.com/certserver/certserver/renewer/bindtest"
	"github.com/certserver/certserver/renewer/dnszone"
	"github.com/certserver/certserver/renewer/pebbletest"
)

// BenchmarkChallenge measures the time per certificate of each challenge
// against the local Pebble, resolving through a real BIND 9, with one
// worker so that orders do not overlap: http-01 (Pebble fetches the token
// from the sidecar's challenge listener), dns-01 through lego's rfc2136
// provider (a TSIG-signed update to BIND, then lego polls BIND until it
// serves the record), and dns-01 through certserver's own zone (Pebble
// follows the name's CNAME through BIND into the zone). One op is one
// certificate for one name: b.N names are added at once and the clock
// runs until the last is valid; the account is registered, with a first
// certificate, before it starts.
//
//	go test -run '^$' -bench Challenge -benchtime 8x ./cmd/certserver/
//
// Reported: s/cert. lego waits a polling interval (200 ms here) before
// its first look at DNS, and Pebble's Retry-After of one second between
// looks at an authorization, for every challenge.
func BenchmarkChallenge(b *testing.B) {
	for _, ch := range []string{"http-01", "dns-01-rfc2136", "dns-01-zone"} {
		b.Run("challenge="+ch, func(b *testing.B) {
			const zoneName = "acme.hoster.example"
			zone, err := dnszone.NewZone(zoneName)
			if err != nil {
				b.Fatal(err)
			}
			names := make([]string, b.N+1) // the first warms up
			records := []string{"* 1 IN A 127.0.0.1"}
			for i := range names {
				names[i] = fmt.Sprintf("n%d.bench.example", i)
				if ch == "dns-01-zone" {
					records = append(records, strings.Replace(zone.Record(names[i]), " CNAME ", " 1 IN CNAME ", 1))
				}
			}
			zoneAddr := fmt.Sprintf("127.0.0.1:%d", bindtest.FreePort(b))
			bind := bindtest.Start(b, bindtest.Zone{Name: "bench.example", Records: records},
				bindtest.Zone{Name: zoneName, Forward: zoneAddr})
			ca := pebbletest.Start(b, pebbletest.Options{DNSAddr: bind.Addr()})
			var more, challenge string
			switch ch {
			case "http-01":
				challenge = "http-01"
			case "dns-01-rfc2136":
				challenge, more = "dns-01", dns01Section(b, bind)
			case "dns-01-zone":
				challenge = "dns-01"
				more = `
[dns01]
polling_interval = "200ms"
resolvers = ["` + bind.Addr() + `"]
check_authoritative = false
[dns01.zone]
name = "` + zoneName + `"
listen = "` + zoneAddr + `"
contact = "hostmaster@hoster.example"
`
			}
			s, _ := servePebbleRenewer(b, ca, "profile = \"default\"\n", "workers = 1\n", more)
			cl, err := client.New(s.admin, testToken, nil)
			if err != nil {
				b.Fatal(err)
			}
			add := func(names ...string) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if _, err := cl.AddDomains(ctx, &api.AddDomainsRequest{Names: names, Challenge: challenge}); err != nil {
					b.Fatal(err)
				}
			}
			wait := func(names ...string) {
				deadline := time.Now().Add(time.Duration(len(names))*20*time.Second + time.Minute)
				for _, n := range names {
					for {
						d, err := cl.Domain(context.Background(), n)
						if err == nil && d.State == "valid" {
							break
						}
						if err == nil && (d.State == "failing" || d.State == "given_up") {
							b.Fatalf("%s: %s", n, d.LastError)
						}
						if time.Now().After(deadline) {
							b.Fatalf("%s not valid in time: %+v %v", n, d, err)
						}
						time.Sleep(20 * time.Millisecond)
					}
				}
			}
			add(names[0])
			wait(names[0])
			b.ResetTimer()
			add(names[1:]...)
			wait(names[1:]...)
			b.StopTimer()
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/cert")
		})
	}
}
