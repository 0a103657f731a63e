// Package client is the Go client of the certserver admin API, used by the
// certserver CLI. It speaks the documents of package api.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/certserver/certserver/certserver/api"
)

// ErrUnreachable is wrapped by errors for requests that got no HTTP answer
// at all: nothing listens at the address, the connection broke, or it timed
// out.
var ErrUnreachable = errors.New("admin API unreachable")

// maxAnswer is the largest answer body read, in bytes.
const maxAnswer = 16 << 20

// Client calls one admin API. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
}

// New returns a client of the admin API at baseURL ("http://127.0.0.1:9400";
// a bare "host:port" means http) that authenticates with token. hc is the
// HTTP client to use; nil means one with a 60 second timeout per request.
func New(baseURL, token string, hc *http.Client) (*Client, error) {
	if !strings.Contains(baseURL, "://") {
		baseURL = "http://" + baseURL
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("admin URL %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("admin URL %q: scheme must be http or https", baseURL)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("admin URL %q: no host", baseURL)
	}
	if token == "" {
		return nil, errors.New("no admin token")
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if hc == nil {
		hc = &http.Client{Timeout: 60 * time.Second}
	}
	return &Client{base: u, token: token, http: hc}, nil
}

// URL returns the base URL the client calls.
func (c *Client) URL() string { return c.base.String() }

// Health calls GET /healthz and returns nil when the server and its store
// answer.
func (c *Client) Health(ctx context.Context) error {
	status, body, err := c.do(ctx, http.MethodGet, "/healthz", nil)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return &api.Error{Status: status, Message: strings.TrimSpace(string(body))}
	}
	return nil
}

// ImportCertificate uploads a certificate with POST /v1/certificates. A
// certificate that was imported, was already stored, or was skipped because
// a newer one is stored comes back as an *api.ImportResponse with the
// matching Result; a refused upload (invalid chain or key, bad request) is
// an *api.Error with the server's reason.
func (c *Client) ImportCertificate(ctx context.Context, req *api.ImportRequest) (*api.ImportResponse, error) {
	status, body, err := c.do(ctx, http.MethodPost, "/v1/certificates", req)
	if err != nil {
		return nil, err
	}
	switch status {
	case http.StatusOK, http.StatusCreated, http.StatusConflict:
		var resp api.ImportResponse
		if err := json.Unmarshal(body, &resp); err == nil && resp.Result != "" {
			return &resp, nil
		}
	}
	return nil, apiError(status, body)
}

// do sends one request with an optional JSON body and returns the answer's
// status and body.
func (c *Client) do(ctx context.Context, method, path string, in any) (int, []byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	u := c.base.String() + path
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil, fmt.Errorf("%s %s: %w", method, u, ctx.Err())
		}
		return 0, nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, c.base, unwrapURLError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, nil, fmt.Errorf("%w at %s: reading the answer: %w", ErrUnreachable, c.base, err)
	}
	return resp.StatusCode, b, nil
}

// unwrapURLError drops the *url.Error wrapper, whose message repeats the
// method and URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// apiError turns an error answer into an *api.Error, keeping the server's
// message when the body is an api.Error document.
func apiError(status int, body []byte) *api.Error {
	var e api.Error
	if err := json.Unmarshal(body, &e); err == nil && e.Message != "" {
		e.Status = status
		return &e
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &api.Error{Status: status, Message: msg}
}
