package certserver

import (
	"github.com/prometheus/client_golang/prometheus"
)

// fleetCollector exports a fleet host's state (MetricsConfig.Fleet) at
// every scrape:
//
//	certserver_fleet_database_up            1 while the shared database answers, else 0
//	certserver_fleet_database_since_seconds when it last went down or came up (Unix time)
//	certserver_fleet_replica_applied_version  the last version the local copy applied
//	certserver_fleet_replica_lag_versions   changes the local copy has not applied yet
//	certserver_fleet_replica_lag_seconds    how long the oldest of them has waited
//	certserver_fleet_ready                  1 once the local copy caught up since the start
//	certserver_fleet_orders_in_flight       orders this host's renewer has under way
//	certserver_fleet_leases_held            names this host holds a lease on (read every 10 s)
//
// The version lag of a host is certserver_fleet_replica_lag_versions;
// GET /v1/fleet lists every host's, as the database knows them.
type fleetCollector struct{ f Fleet }

var (
	descFleetUp = prometheus.NewDesc("certserver_fleet_database_up",
		"1 while the fleet's database (PostgreSQL) answers, 0 while it is down: handshakes go on from the local copy, admin writes answer 503 and nothing is ordered.",
		[]string{"host"}, nil)
	descFleetSince = prometheus.NewDesc("certserver_fleet_database_since_seconds",
		"When the fleet's database last went down (while certserver_fleet_database_up is 0) or came up, in seconds since the Unix epoch.",
		[]string{"host"}, nil)
	descFleetApplied = prometheus.NewDesc("certserver_fleet_replica_applied_version",
		"Version of the last change of the fleet's database this host's local copy applied.",
		[]string{"host"}, nil)
	descFleetLagVersions = prometheus.NewDesc("certserver_fleet_replica_lag_versions",
		"Changes of the fleet's database this host's local copy has not applied yet (0 when it is in step).",
		[]string{"host"}, nil)
	descFleetLagSeconds = prometheus.NewDesc("certserver_fleet_replica_lag_seconds",
		"How long the oldest change this host's local copy has not applied has been waiting, in seconds (0 when it is in step).",
		[]string{"host"}, nil)
	descFleetReady = prometheus.NewDesc("certserver_fleet_ready",
		"1 once this host's local copy has caught up with the fleet's database since the start, else 0.",
		[]string{"host"}, nil)
	descFleetInFlight = prometheus.NewDesc("certserver_fleet_orders_in_flight",
		"Orders this host's renewer has under way now (0 on a host that does not renew).",
		[]string{"host"}, nil)
	descFleetLeases = prometheus.NewDesc("certserver_fleet_leases_held",
		"Names this host holds an unexpired lease on (the renewal work it has claimed), as last read from the fleet's database, every 10 s.",
		[]string{"host"}, nil)
)

func (c fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFleetUp, descFleetSince, descFleetApplied, descFleetLagVersions, descFleetLagSeconds, descFleetReady, descFleetInFlight, descFleetLeases} {
		ch <- d
	}
}

func (c fleetCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.f.FleetStatus()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, s.Host)
	}
	gauge(descFleetUp, boolGauge(s.Database.Up))
	if !s.Database.Since.IsZero() {
		gauge(descFleetSince, float64(s.Database.Since.UnixNano())/1e9)
	}
	gauge(descFleetApplied, float64(s.Replica.Applied))
	gauge(descFleetLagVersions, float64(s.Replica.LagVersions))
	gauge(descFleetLagSeconds, s.Replica.LagSeconds)
	gauge(descFleetReady, boolGauge(s.Ready))
	gauge(descFleetInFlight, float64(s.InFlight))
	gauge(descFleetLeases, float64(s.LeasesHeld))
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
