package pebbletest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestStart(t *testing.T) {
	start := time.Now()
	ca := Start(t, Options{})
	t.Logf("pebble up in %s", time.Since(start).Round(time.Millisecond))

	client := ca.HTTPClient()
	resp, err := client.Get(ca.DirectoryURL)
	if err != nil {
		t.Fatalf("get directory: %v", err)
	}
	var dir map[string]any
	err = json.NewDecoder(resp.Body).Decode(&dir)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("decode directory: %v", err)
	}
	front := strings.TrimSuffix(ca.DirectoryURL, "/dir")
	for _, key := range []string{"newNonce", "newAccount", "newOrder", "renewalInfo"} {
		if u, _ := dir[key].(string); !strings.HasPrefix(u, front+"/") {
			t.Errorf("directory %s = %q, want a URL on the front %s", key, u, front)
		}
	}
	meta, _ := dir["meta"].(map[string]any)
	profiles, _ := meta["profiles"].(map[string]any)
	for name := range DefaultProfiles() {
		if _, ok := profiles[name]; !ok {
			t.Errorf("directory meta.profiles = %v, missing %q", profiles, name)
		}
	}

	if inter := ca.Intermediates(t); len(inter) != 1 {
		t.Errorf("Intermediates: %d certificates, want 1", len(inter))
	}
	if ca.Roots(t) == nil {
		t.Error("Roots returned nil")
	}
	if ca.HTTPPort == 0 || ca.TLSPort == 0 {
		t.Errorf("ports not picked: http %d tls %d", ca.HTTPPort, ca.TLSPort)
	}
	if !strings.Contains(ca.Log(), "Disabling random VA sleeps") {
		t.Errorf("Pebble log does not show PEBBLE_VA_NOSLEEP at work:\n%s", ca.logTail(20))
	}
}

func TestAlternateRoots(t *testing.T) {
	ca := Start(t, Options{AlternateRoots: 1})
	if inter := ca.Intermediates(t); len(inter) != 2 {
		t.Errorf("Intermediates: %d certificates, want 2", len(inter))
	}
}

// TestFrontCountsOrders posts newOrder requests that Pebble refuses (they
// are not signed): the front counts them all the same, and faults stand in
// for Pebble's answer.
func TestFrontCountsOrders(t *testing.T) {
	ca := Start(t, Options{})
	client := ca.HTTPClient()
	var dir struct {
		NewOrder string `json:"newOrder"`
	}
	resp, err := client.Get(ca.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	post := func(names ...string) *http.Response {
		t.Helper()
		var ids []map[string]string
		for _, n := range names {
			ids = append(ids, map[string]string{"type": "dns", "value": n})
		}
		payload, _ := json.Marshal(map[string]any{"identifiers": ids, "profile": "shortlived"})
		body, _ := json.Marshal(map[string]string{
			"protected": "e30", "signature": "", "payload": base64.RawURLEncoding.EncodeToString(payload),
		})
		resp, err := client.Post(dir.NewOrder, "application/jose+json", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	if n := ca.OrderCount(); n != 0 {
		t.Fatalf("OrderCount before any order = %d", n)
	}
	if resp := post("a.example.test"); resp.StatusCode < 400 {
		t.Errorf("unsigned order answered %s, want an error from Pebble", resp.Status)
	}
	ca.FailNewOrders(1, Fault{Status: http.StatusTooManyRequests, Type: "urn:ietf:params:acme:error:rateLimited", Detail: "slow down", RetryAfter: "60"})
	resp = post("b.example.test", "a.example.test")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "60" {
		t.Errorf("fault answered %s Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
	}

	orders := ca.Orders()
	if len(orders) != 2 || ca.OrderCount() != 2 {
		t.Fatalf("Orders = %+v, want 2", orders)
	}
	if !slices.Equal(orders[1].Names, []string{"b.example.test", "a.example.test"}) || orders[1].Profile != "shortlived" || orders[1].Status != http.StatusTooManyRequests {
		t.Errorf("second order = %+v", orders[1])
	}
	if got := ca.OrdersFor("A.example.test"); got != 2 {
		t.Errorf("OrdersFor(a) = %d, want 2", got)
	}
	if got := ca.Requests("newOrder"); got != 2 {
		t.Errorf("Requests(newOrder) = %d, want 2", got)
	}
	if got := ca.Requests("newAccount"); got != 0 {
		t.Errorf("Requests(newAccount) = %d, want 0", got)
	}
	if got := ca.OrdersFor("c.example.test"); got != 0 {
		t.Errorf("OrdersFor(c) = %d, want 0", got)
	}
}

func TestStartResponder(t *testing.T) {
	port := StartResponder(t, func(_ context.Context, token string) (string, error) {
		if token == "known" {
			return "known.thumbprint", nil
		}
		return "", errors.New("unknown token")
	})
	for _, tc := range []struct {
		desc   string
		token  string
		status int
		body   string
	}{
		{desc: "known token", token: "known", status: http.StatusOK, body: "known.thumbprint"},
		{desc: "unknown token", token: "other", status: http.StatusNotFound},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/.well-known/acme-challenge/" + tc.token)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || (tc.body != "" && string(body) != tc.body) {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tc.status, tc.body)
			}
		})
	}
}

func TestFindBinary(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "pebble")
	if err := os.WriteFile(notExec, []byte("#!/bin/false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PEBBLE_BIN", notExec)
	_, err := FindBinary()
	if err == nil || !strings.Contains(err.Error(), Install) {
		t.Errorf("FindBinary with a bad PEBBLE_BIN: err = %v, want one naming %q", err, Install)
	}

	t.Setenv("PEBBLE_BIN", "")
	t.Setenv("PATH", dir)
	t.Setenv("GOBIN", "")
	// Whatever GOPATH and /tmp/gobin hold, a found binary must be executable
	// and an error must say how to install.
	p, err := FindBinary()
	switch {
	case err == nil && !isExecutable(p):
		t.Errorf("FindBinary = %q, not executable", p)
	case err != nil && !strings.Contains(err.Error(), Install):
		t.Errorf("FindBinary error %q does not say how to install", err)
	}
}

// TestStopRestart: a stopped Pebble's front answers 502; restarted, the
// same directory URL answers again, with new roots.
func TestStopRestart(t *testing.T) {
	ca := Start(t, Options{})
	client := ca.HTTPClient()
	status := func() int {
		resp, err := client.Get(ca.DirectoryURL)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	before := ca.Roots(t).Subjects() //nolint:staticcheck // only compared
	ca.Stop()
	if got := status(); got != http.StatusBadGateway {
		t.Fatalf("stopped: directory answered %d, want 502", got)
	}
	ca.Stop() // twice: nothing
	ca.Restart(t)
	if got := status(); got != http.StatusOK {
		t.Fatalf("restarted: directory answered %d, want 200", got)
	}
	if after := ca.Roots(t).Subjects(); len(after) != len(before) || string(after[0]) == string(before[0]) { //nolint:staticcheck // only compared
		t.Errorf("restarted: roots %q, before %q; want a new root", after, before)
	}
}
