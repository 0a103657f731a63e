package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
)

// TestImportStreams: import uploads the first batch before the walk has
// found the later lineages, so it never holds a whole tree. The walk
// stops after the first batch's lineages and goes on only once the
// server has stored them; an import that read everything before
// uploading would wait forever (the test gives up after a minute).
func TestImportStreams(t *testing.T) {
	root := filepath.Join(t.TempDir(), "letsencrypt")
	now := time.Now()
	const n = 7
	for i := range n {
		c, k := genCert(t, now.Add(60*24*time.Hour), fmt.Sprintf("s%d.example.com", i))
		writeLineage(t, root, fmt.Sprintf("s%d.example.com", i), c, k)
	}
	url, st := startAdmin(t)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	cl, err := client.New(url, testToken, &http.Client{Transport: tr})
	if err != nil {
		t.Fatal(err)
	}
	e, _, _ := testEnv(nil)
	im := &importer{e: e, cl: cl, timeout: time.Minute, batch: 2, now: now}

	var walked []string
	waited := false
	walk := func(yield func(importItem) bool) {
		walkImports(root, func(it importItem) bool {
			// The first batch (2 lineages) is sent when the third
			// lineage comes; before the fourth, wait for the server to
			// have stored it.
			if len(walked) == 3 {
				first := filepath.Base(walked[0])
				deadline := time.Now().Add(time.Minute)
				for {
					if _, err := st.GetCertificate(context.Background(), first); err == nil {
						waited = true
						break
					}
					if time.Now().After(deadline) {
						t.Errorf("the first batch was not uploaded while the walk waited")
						return false
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
			walked = append(walked, it.path)
			return yield(it)
		})
	}
	var got []importOutcome
	if err := im.run(context.Background(), walk, func(o importOutcome) { got = append(got, o) }); err != nil {
		t.Fatal(err)
	}
	if !waited {
		t.Error("the walk never waited for the first batch")
	}
	if len(got) != n {
		t.Fatalf("%d outcomes, want %d", len(got), n)
	}
	for i, o := range got {
		if o.Result != api.ResultImported || o.Path != walked[i] {
			t.Errorf("outcome %d: %+v, want %s imported, in the order walked", i, o, walked[i])
		}
	}
}

// TestImportProgress: --progress lines reports the certificates sent out
// of those found, their rate and the time left, and the report and its
// summary still go to standard output.
func TestImportProgress(t *testing.T) {
	root := filepath.Join(t.TempDir(), "letsencrypt")
	now := time.Now()
	for i := range 5 {
		c, k := genCert(t, now.Add(60*24*time.Hour), fmt.Sprintf("p%d.example.com", i))
		writeLineage(t, root, fmt.Sprintf("p%d.example.com", i), c, k)
	}
	url, _ := startAdmin(t)
	e, stdout, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN": url, "CERTSERVER_ADMIN_TOKEN": testToken})
	if code := run(context.Background(), e, []string{"import", "--progress", "lines", "--batch", "2", root}); code != exitOK {
		t.Fatalf("exit code %d\n%s%s", code, stdout, stderr)
	}
	re := regexp.MustCompile(`^sent 5/5 certificates \(100%\), (\d+|-) certificates/s, ETA (0s|-)\n$`)
	if !re.MatchString(stderr.String()) {
		t.Errorf("progress %q does not match %s", stderr, re)
	}
	if !strings.Contains(stdout.String(), "5 certificates: 5 imported, 0 unchanged, 0 skipped") {
		t.Errorf("report:\n%s", stdout)
	}
	for _, args := range [][]string{{"--batch", "0"}, {"--batch", fmt.Sprint(api.MaxImportBatch + 1)}, {"--progress", "fancy"}} {
		e, _, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN": url, "CERTSERVER_ADMIN_TOKEN": testToken})
		if code := run(context.Background(), e, append(append([]string{"import"}, args...), root)); code != exitUsage {
			t.Errorf("%q: exit code %d, want %d (%s)", args, code, exitUsage, stderr)
		}
	}
}

// TestProgressETA: the time left is the items left at the rate so far.
func TestProgressETA(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start
	var out strings.Builder
	p := newProgress(progressLines, &out, "certificates", 4000, func() time.Time { return now })
	p.eta = true
	now = start.Add(10 * time.Second)
	if got, want := p.line(1000, now), "sent 1000/4000 certificates (25%), 100 certificates/s, ETA 30s"; got != want {
		t.Errorf("line = %q, want %q", got, want)
	}
	if got, want := p.line(0, now), "sent 0/4000 certificates (0%), 0 certificates/s, ETA -"; got != want {
		t.Errorf("line at 0 = %q, want %q", got, want)
	}
	p.bar = true
	if got := p.line(2000, now); !strings.HasSuffix(got, " 200 certificates/s ETA 10s ") {
		t.Errorf("bar = %q, want the ETA at its end", got)
	}
}
