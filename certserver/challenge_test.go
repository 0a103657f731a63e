package certserver

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestChallengeEndpoint(t *testing.T) {
	st := newTestStore(t)
	const token = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
	const keyAuth = token + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
	ctx := context.Background()
	if err := st.PutChallenge(ctx, token, keyAuth, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := st.PutChallenge(ctx, "expiredTokenexpiredToken", "expiredTokenexpiredToken.x", time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	c, err := NewChallengeEndpoint(ChallengeConfig{Listen: "127.0.0.1:0"}, st, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(ctx); err != nil {
		t.Fatal(err)
	}
	serving(t, c.Serve)
	addr := c.Addrs()[0].String()

	tests := []struct {
		desc   string
		method string
		path   string
		status int
		body   string // exact body, when set
		want   string // in the body
	}{
		{desc: "known token", method: "GET", path: ChallengePathPrefix + token, status: 200, body: keyAuth},
		{desc: "HEAD of a known token", method: "HEAD", path: ChallengePathPrefix + token, status: 200, body: ""},
		{desc: "unknown token", method: "GET", path: ChallengePathPrefix + "bm90LWEtdG9rZW4tYXQtYWxs", status: 404, want: "no such challenge"},
		{desc: "expired token", method: "GET", path: ChallengePathPrefix + "expiredTokenexpiredToken", status: 404},
		{desc: "token of one character", method: "GET", path: ChallengePathPrefix + "a", status: 404},
		{desc: "dot in token", method: "GET", path: ChallengePathPrefix + token + ".x", status: 400, want: "base64url"},
		{desc: "padding in token", method: "GET", path: ChallengePathPrefix + "abcd==", status: 400},
		{desc: "percent-encoded space", method: "GET", path: ChallengePathPrefix + "abc%20def", status: 400},
		{desc: "token too long", method: "GET", path: ChallengePathPrefix + strings.Repeat("a", 257), status: 400},
		{desc: "token of the longest length", method: "GET", path: ChallengePathPrefix + strings.Repeat("a", 256), status: 404},
		{desc: "POST", method: "POST", path: ChallengePathPrefix + token, status: 405},
		{desc: "DELETE of a bad token is still 405", method: "DELETE", path: ChallengePathPrefix + "a.b", status: 405},
		{desc: "no token", method: "GET", path: ChallengePathPrefix, status: 404},
		{desc: "well-known without the challenge", method: "GET", path: "/.well-known/acme-challeng/" + token, status: 404},
		{desc: "sub path", method: "GET", path: ChallengePathPrefix + token + "/x", status: 404},
		{desc: "dot segment", method: "GET", path: ChallengePathPrefix + "x/../" + token, status: 400, want: `path segment ".." is a dot segment`},
		{desc: "encoded dot segment", method: "GET", path: ChallengePathPrefix + "x%2f%2e%2e%2f" + token, status: 400, want: `path segment "x%2f%2e%2e%2f` + token + `"`},
		{desc: "certificate path", method: "GET", path: "/v1/certs/example.com", status: 404},
		{desc: "root", method: "GET", path: "/", status: 404},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			resp, body := rawRequest(t, addr, tc.method, tc.path)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %q", resp.StatusCode, tc.status, body)
			}
			if tc.status == 200 {
				if ct := resp.Header.Get("Content-Type"); ct != "text/plain" {
					t.Errorf("Content-Type %q, want text/plain", ct)
				}
				if body != tc.body {
					t.Errorf("body %q, want %q", body, tc.body)
				}
			}
			if tc.status == 405 && resp.Header.Get("Allow") != "GET, HEAD" {
				t.Errorf("Allow %q", resp.Header.Get("Allow"))
			}
			if !strings.Contains(body, tc.want) {
				t.Errorf("body %q does not contain %q", body, tc.want)
			}
			if resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", resp.Header.Get("Cache-Control"))
			}
		})
	}
}

func TestChallengeEndpointStoreFailure(t *testing.T) {
	st := failingStore{Store: newTestStore(t), err: errors.New("disk on fire")}
	c, err := NewChallengeEndpoint(ChallengeConfig{Listen: "127.0.0.1:0"}, st, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(context.Background()); err != nil {
		t.Fatal(err)
	}
	serving(t, c.Serve)
	resp, body := rawRequest(t, c.Addrs()[0].String(), "GET", ChallengePathPrefix+"LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0")
	if resp.StatusCode != 500 || strings.Contains(body, "fire") {
		t.Fatalf("status %d body %q, want a 500 that reveals nothing", resp.StatusCode, body)
	}
}

func TestChallengeConfig(t *testing.T) {
	st := newTestStore(t)
	tests := []struct {
		desc string
		cfg  ChallengeConfig
		want string // in the error; "" for none
	}{
		{desc: "default address", cfg: ChallengeConfig{}},
		{desc: "every interface", cfg: ChallengeConfig{Listen: "0.0.0.0:9402"}, want: "allow_non_loopback"},
		{desc: "bare port", cfg: ChallengeConfig{Listen: ":9402"}, want: "every interface"},
		{desc: "public address allowed", cfg: ChallengeConfig{Listen: "192.0.2.1:9402", AllowNonLoopback: true}},
		{desc: "no port", cfg: ChallengeConfig{Listen: "127.0.0.1"}, want: "missing port"},
		{desc: "negative timeout", cfg: ChallengeConfig{LookupTimeout: -time.Second}, want: "LookupTimeout"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			c, err := NewChallengeEndpoint(tc.cfg, st, testLogger(t))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.cfg.Listen == "" {
					t.Error("no listen address after defaults")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, err := NewChallengeEndpoint(ChallengeConfig{}, nil, testLogger(t)); err == nil {
		t.Error("nil store accepted")
	}
	if _, err := NewChallengeEndpoint(ChallengeConfig{}, st, nil); err == nil {
		t.Error("nil logger accepted")
	}
}
