package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/renewer/pebbletest"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestServeMetricsWithPebble runs the real sidecar against a real Pebble,
// has it issue one name and fail another (no DNS for it), asks the
// certificate endpoint for a stored and an unknown name, and checks what
// GET /metrics says about all of it: the wiring of the renewer's metrics
// into the admin API's registry, next to the endpoint's, the inventory's
// and the runtime's.
func TestServeMetricsWithPebble(t *testing.T) {
	ca := pebbletest.Start(t, pebbletest.Options{})
	const good, bad = "shop.metrics.test", "nowhere.metrics.test"
	ca.DNS.SetA(good, netip.MustParseAddr("127.0.0.1"))

	s, sock := servePebble(t, ca, "", "")
	if code, out, errOut := runCLI(t, s.admin, "", "domains", "add", good, bad); code != exitOK {
		t.Fatalf("domains add: exit code %d\n%s%s", code, out, errOut)
	}
	for name, want := range map[string]string{good: "valid", bad: "failing"} {
		waitFor(t, name+" to become "+want, func() bool {
			code, out, _ := runCLI(t, s.admin, "", "domains", "show", "--json", name)
			var d api.Domain
			return code == exitOK && json.Unmarshal([]byte(out), &d) == nil && string(d.State) == want
		})
	}
	hc := unixHTTPClient(sock)
	for _, name := range []string{good, "unknown.metrics.test"} {
		resp, err := hc.Get("http://certs/v1/certs/" + name)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	req, _ := http.NewRequest("GET", s.admin+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		desc   string
		name   string
		labels map[string]string
		min    float64
		max    float64
	}{
		{desc: "one certificate issued", name: "certserver_orders_total",
			labels: map[string]string{"ca": ca.DirectoryURL, "result": "issued"}, min: 1, max: 1},
		// The name without DNS fails at the CA (a connection problem:
		// Pebble cannot resolve it), or before any order when a
		// pre-flight check runs (refused, preflight_resolve).
		{desc: "the name without DNS failed", name: "certserver_orders_total",
			labels: map[string]string{"ca": ca.DirectoryURL, "result": "failed|refused"}, min: 1, max: 2},
		{desc: "as a permanent failure", name: "certserver_order_failures_total",
			labels: map[string]string{"ca": ca.DirectoryURL, "kind": "permanent", "problem": "connection|preflight_resolve"}, min: 1, max: 2},
		{desc: "nothing in flight", name: "certserver_orders_in_flight",
			labels: map[string]string{"ca": ca.DirectoryURL}, min: 0, max: 0},
		{desc: "certificate served", name: "certserver_cert_requests_total",
			labels: map[string]string{"code": "200"}, min: 1, max: 1},
		{desc: "unknown name", name: "certserver_cert_requests_total",
			labels: map[string]string{"code": "404"}, min: 1, max: 1},
		{desc: "inventory at start-up", name: "certserver_domains",
			labels: map[string]string{"state": "removed"}, min: 0, max: 0},
		{desc: "Go runtime", name: "go_goroutines", min: 1, max: 1e6},
		{desc: "process", name: "process_open_fds", min: 1, max: 1e6},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			v, ok := sum(mfs[tc.name], tc.labels)
			if !ok {
				t.Fatalf("%s%v missing", tc.name, tc.labels)
			}
			if v < tc.min || v > tc.max {
				t.Errorf("%s%v = %v, want %v to %v", tc.name, tc.labels, v, tc.min, tc.max)
			}
		})
	}

	// The status page answers the browser's credentials.
	req, _ = http.NewRequest("GET", s.admin+"/", nil)
	req.SetBasicAuth("oncall", testToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "<h1>certserver") {
		t.Errorf("status page: %d %.300s", resp.StatusCode, page)
	}
}

// sum adds the values (counters, gauges, untyped) of the samples of mf
// whose labels match: a label's value is one of the alternatives
// separated by "|". It reports whether any sample matched.
func sum(mf *dto.MetricFamily, labels map[string]string) (float64, bool) {
	var total float64
	found := false
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if !slices.Contains(strings.Split(v, "|"), have[k]) {
				continue next
			}
		}
		found = true
		total += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
	}
	return total, found
}
