package nginx_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"
)

// BenchmarkIssuance measures certificates issued per second by the sidecar
// against the local Pebble, every order validated over HTTP-01 through
// nginx's port-80 snippet (Pebble -> nginx -> the sidecar's challenge
// listener), with [renewer] workers = 1, 4 and 16. One op is one
// certificate: b.N new names are added at once with `certserver domains
// add`, and the time is until the admin API reports every one valid. The
// ACME account is registered, with a first certificate, before the clock
// starts.
//
//	go test -run '^$' -bench Issuance -benchtime 32x ./nginx/
//
// Reported: certs/s. Pebble answers without sleeping, but lego waits for
// the Retry-After of one second (which pebbletest's front sets) before it
// looks at an authorization again, so one order takes about one to two
// seconds whatever the machine: one worker does well under one order a
// second, and more workers overlap those waits.
func BenchmarkIssuance(b *testing.B) {
	for _, workers := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			env := startACMEEnv(b, acmeEnvOptions{Workers: workers})
			const warm = "warm.bench.test"
			names := make([]string, b.N)
			for i := range names {
				names[i] = fmt.Sprintf("n%d.bench.test", i)
			}
			env.pointHere(append(names, warm)...)
			admin := newAdminClient(b, env.side)

			env.side.addDomains(b, warm)
			admin.waitValid(b, []string{warm}, 30*time.Second)

			b.ResetTimer()
			env.side.addDomains(b, names...)
			admin.waitValid(b, names, time.Duration(b.N)*10*time.Second+30*time.Second)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")

			// Issued for real, and served through nginx.
			eventually(b, 5*time.Second, names[0]+" served", env.issued(b, names[0], nil))
			if n := env.issuedCount(); n != b.N+1 {
				b.Errorf("Pebble issued %d certificates, want %d", n, b.N+1)
			}
			env.ngx.AssertCleanErrorLog(b)
		})
	}
}

// adminClient reads domains straight from the admin API: cheaper than a
// CLI process per look, while a benchmark's clock runs.
type adminClient struct {
	base  string
	token string
	hc    *http.Client
}

func newAdminClient(t testing.TB, s *sidecar) *adminClient {
	t.Helper()
	tok, err := os.ReadFile(s.tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	return &adminClient{base: "http://" + s.admin, token: strings.TrimSpace(string(tok)), hc: &http.Client{Timeout: 10 * time.Second}}
}

// domain returns GET /v1/domains/{name}.
func (c *adminClient) domain(name string) (*domainDoc, error) {
	req, err := http.NewRequest(http.MethodGet, c.base+"/v1/domains/"+url.PathEscape(name), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/domains/%s: %s: %s", name, resp.Status, body)
	}
	var d domainDoc
	if err := json.Unmarshal(body, &d); err != nil {
		return nil, fmt.Errorf("GET /v1/domains/%s: %v", name, err)
	}
	return &d, nil
}

// waitValid polls until every name is valid, failing t when one fails or
// timeout passes.
func (c *adminClient) waitValid(t testing.TB, names []string, timeout time.Duration) {
	t.Helper()
	pending := append([]string(nil), names...)
	deadline := time.Now().Add(timeout)
	for {
		var still []string
		for _, n := range pending {
			d, err := c.domain(n)
			if err != nil {
				t.Fatal(err)
			}
			switch d.State {
			case "valid":
			case "failing":
				t.Fatalf("%s failed: %s", n, d.LastError)
			default:
				still = append(still, n)
			}
		}
		if pending = still; len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d names not valid within %v (first: %s)", len(pending), len(names), timeout, pending[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
}
