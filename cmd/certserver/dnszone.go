package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/renewer"
	"github.com/certserver/certserver/renewer/dnszone"
	"github.com/certserver/certserver/store"
)

// dns01ZoneConfig is [dns01.zone]; every key is documented in
// deploy/certserver.toml. The zone is served when name is set.
type dns01ZoneConfig struct {
	Name                string   `toml:"name"`
	Listen              string   `toml:"listen"`
	Nameservers         []string `toml:"nameservers"`
	NameserverAddresses []string `toml:"nameserver_addresses"`
	Contact             string   `toml:"contact"`
	TTL                 duration `toml:"ttl"`
}

// defaultDNS01ZoneConfig returns the defaults of [dns01.zone].
func defaultDNS01ZoneConfig() dns01ZoneConfig {
	return dns01ZoneConfig{Listen: dnszone.DefaultListen, TTL: duration(dnszone.DefaultTTL)}
}

// enabled reports whether the zone is served.
func (c dns01ZoneConfig) enabled() bool { return c.Name != "" }

// zone returns the configured zone's Zone and its server's Config
// (without the stores and metrics, which serve adds).
func (c dns01ZoneConfig) zone() (dnszone.Zone, dnszone.Config, error) {
	z, err := dnszone.NewZone(c.Name)
	if err != nil {
		return z, dnszone.Config{}, err
	}
	cfg := dnszone.Config{Zone: z, Listen: c.Listen, Nameservers: append([]string(nil), c.Nameservers...),
		Contact: c.Contact, TTL: time.Duration(c.TTL)}
	for _, s := range c.NameserverAddresses {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return z, cfg, fmt.Errorf("%q is not an IP address", s)
		}
		cfg.NameserverAddrs = append(cfg.NameserverAddrs, a)
	}
	return z, cfg, nil
}

// validateDNS01Zone checks [dns01.zone], naming the key.
func (c *config) validateDNS01Zone(bad func(key, format string, args ...any)) {
	zc := c.DNS01.Zone
	if !zc.enabled() {
		return
	}
	if _, err := dnszone.NewZone(zc.Name); err != nil {
		bad("dns01.zone.name", "%v", err)
		return
	}
	_, scfg, err := zc.zone()
	if err != nil {
		bad("dns01.zone.nameserver_addresses", "%v", err)
		return
	}
	// The server's own checks (listen, nameservers, contact, ttl), run
	// now so that a bad value stops the start; its errors name the key.
	if err := scfg.Check(); err != nil {
		bad("dns01.zone", "%v", err)
	}
}

// zoneRecordFunc returns what GET /v1/domains/{name} shows as dns01_cname:
// the record of z for a name whose orders may go through the zone, as
// ch (renewer.Challenges.Route) routes them: one whose set has a
// wildcard (always dns-01), or that asks for dns-01 or auto, itself or
// by the default acme.challenge; "" for the others.
func zoneRecordFunc(z dnszone.Zone, ch renewer.Challenges) func(d *store.Domain) string {
	return func(d *store.Domain) string {
		names := append([]string{d.Name}, d.ExtraNames...)
		asked := d.Challenge
		if asked == "" {
			asked = ch.Default
		}
		if c, _ := ch.Choose(names, asked); c != store.ChallengeDNS01 && asked != store.ChallengeAuto {
			return ""
		}
		return z.Record(d.Name)
	}
}

// newDNSZone returns the zone's server reading local (on a fleet host the
// copy, with shared, the fleet's database, read with it), counting its
// queries into metrics when there are metrics.
func newDNSZone(cfg config, local, shared store.Store, metrics *certserver.Metrics, logger *slog.Logger) (*dnszone.Server, error) {
	_, scfg, err := cfg.DNS01.Zone.zone()
	if err != nil {
		return nil, fmt.Errorf("dns01.zone: %w", err)
	}
	scfg.Shared = shared
	if metrics != nil {
		if scfg.Metrics, err = dnszone.NewMetrics(metrics.Registerer()); err != nil {
			return nil, err
		}
	}
	return dnszone.New(scfg, local, logger)
}
