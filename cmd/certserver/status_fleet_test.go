package main

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/certserver/api"
)

// stateFleet is a certserver.Fleet that reports a fixed state.
type stateFleet struct{ s api.FleetStatus }

func (f stateFleet) FleetStatus() api.FleetStatus { return f.s }

func (f stateFleet) Hosts(context.Context) ([]api.FleetHost, uint64, error) {
	if !f.s.Database.Up {
		return nil, 0, errors.New("database unavailable")
	}
	return []api.FleetHost{{Name: "edge-1"}, {Name: "edge-2"}}, 40, nil
}

// TestStatusFleet: on a fleet host, status says whether the database is
// up and how far the copy is behind; with the database down it says since
// when and why, and exits 1 (attention) instead of failing to ask.
func TestStatusFleet(t *testing.T) {
	since := time.Now().Add(-5 * time.Minute)
	down := api.FleetStatus{Host: "edge-1", Renews: true, Ready: true,
		Database: api.FleetDatabase{Since: since, Error: "127.0.0.1:5432/certserver: connection refused"},
		Replica:  api.FleetReplica{Applied: 40, Latest: 40}}
	up := down
	up.Database = api.FleetDatabase{Up: true, Since: since}

	t.Run("database down", func(t *testing.T) {
		// The admin API's own store is the database, which fails.
		url, _ := startAdminWith(t, certserver.AdminConfig{Fleet: stateFleet{down}})
		code, out, errOut := runCLI(t, url, "", "status")
		if code != exitAttention {
			t.Fatalf("exit %d, want %d\n%s%s", code, exitAttention, out, errOut)
		}
		for _, re := range []string{
			`\nFLEET     host edge-1, database DOWN for 5m, copy at version 40, 0 behind, renews\n`,
			`\nVERDICT   attention: the fleet's database is down since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(127.0.0.1:5432/certserver: connection refused\): certificates are served`,
		} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("output does not match %q:\n%s", re, out)
			}
		}
	})
	t.Run("database up", func(t *testing.T) {
		url, _ := startAdminWith(t, certserver.AdminConfig{Fleet: stateFleet{up}, StateCountTTL: -1})
		code, out, errOut := runCLI(t, url, "", "status")
		if code != exitOK {
			t.Fatalf("exit %d, want 0\n%s%s", code, out, errOut)
		}
		if !strings.Contains(out, "\nFLEET     host edge-1, database up, copy at version 40, 0 behind, 2 hosts in the fleet, renews\n") {
			t.Errorf("no FLEET line:\n%s", out)
		}
	})
	t.Run("single host", func(t *testing.T) {
		url, _ := startAdminWith(t, certserver.AdminConfig{StateCountTTL: -1})
		_, out, _ := runCLI(t, url, "", "status")
		if strings.Contains(out, "FLEET") {
			t.Errorf("a FLEET line on a single host:\n%s", out)
		}
	})
}
