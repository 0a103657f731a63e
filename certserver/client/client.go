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
	"strconv"
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

// CloseIdleConnections closes the connections the client keeps open
// between requests, including one dialed for a request that went out on
// another: a server shutting down would otherwise wait for it.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

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

// ImportCertificates uploads up to api.MaxImportBatch certificates in one
// request, POST /v1/certificates/batch, and returns what became of each,
// in order: the certificates it reports imported are committed. A refused
// certificate is a result with Result api.ResultRefused, not an error; an
// error means the batch as a whole was not answered (an *api.Error when
// the server refused it) and it may or may not have been committed.
func (c *Client) ImportCertificates(ctx context.Context, reqs []api.ImportRequest) (*api.ImportBatchResponse, error) {
	size := 0
	for i := range reqs {
		size += len(reqs[i].ChainPEM) + len(reqs[i].KeyPEM) + len(reqs[i].Origin) + 128
	}
	body := make([]byte, 0, size+size/32)
	for i := range reqs {
		var err error
		if body, err = appendImportLine(body, &reqs[i]); err != nil {
			return nil, fmt.Errorf("encode certificate %d: %w", i+1, err)
		}
	}
	status, answer, err := c.send(ctx, http.MethodPost, "/v1/certificates/batch", "application/x-ndjson", body)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, apiError(status, answer)
	}
	var resp api.ImportBatchResponse
	if err := json.Unmarshal(answer, &resp); err != nil {
		return nil, fmt.Errorf("POST /v1/certificates/batch: decode the answer: %w", err)
	}
	if len(resp.Results) != len(reqs) {
		return nil, fmt.Errorf("POST /v1/certificates/batch: %d results for %d certificates", len(resp.Results), len(reqs))
	}
	return &resp, nil
}

// AddDomains brings names under management with POST /v1/domains (the
// object form of the body). Invalid names do not fail the call: they come
// back in the response with their 1-based position in req.Names.
func (c *Client) AddDomains(ctx context.Context, req *api.AddDomainsRequest) (*api.AddDomainsResponse, error) {
	var resp api.AddDomainsResponse
	if err := c.call(ctx, http.MethodPost, "/v1/domains", req, http.StatusOK, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Domain returns what the server knows about one managed name, with GET
// /v1/domains/{name}; a name that is not managed is an *api.Error with
// Status 404.
func (c *Client) Domain(ctx context.Context, name string) (*api.Domain, error) {
	var resp api.Domain
	if err := c.call(ctx, http.MethodGet, "/v1/domains/"+url.PathEscape(name), nil, http.StatusOK, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// ListOptions selects the names Domains lists. The zero value lists the
// first api.DefaultListLimit names.
type ListOptions struct {
	// After is the cursor: the list starts after this name ("" at the
	// beginning). Pass the Next of the previous page.
	After string
	// Limit is the most names listed, 1 to api.MaxListLimit; 0 means the
	// server's default.
	Limit int
	// States keeps the names in any of these states ("pending", "valid",
	// "failing", …).
	States []string
	// Expiring keeps the names whose certificate expires within this
	// window ("7d", "72h"); names without a certificate are left out.
	Expiring string
	// Failing keeps the names in a run of failures ("true") or not
	// ("false"); "" keeps both.
	Failing string
	// Query keeps the names that contain this substring.
	Query string
}

// Domains lists managed names with GET /v1/domains. A filtered page may
// hold fewer names than Limit, even none, and still have a Next: follow it
// until it is "".
func (c *Client) Domains(ctx context.Context, opts ListOptions) (*api.DomainList, error) {
	q := url.Values{}
	if opts.After != "" {
		q.Set("after", opts.After)
	}
	if opts.Limit != 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if len(opts.States) > 0 {
		q.Set("state", strings.Join(opts.States, ","))
	}
	if opts.Expiring != "" {
		q.Set("expiring", opts.Expiring)
	}
	if opts.Failing != "" {
		q.Set("failing", opts.Failing)
	}
	if opts.Query != "" {
		q.Set("q", opts.Query)
	}
	path := "/v1/domains"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var resp api.DomainList
	if err := c.call(ctx, http.MethodGet, path, nil, http.StatusOK, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// RenewDomain asks for a managed name to be renewed now, with POST
// /v1/domains/{name}/renew.
func (c *Client) RenewDomain(ctx context.Context, name string) (*api.RenewResponse, error) {
	var resp api.RenewResponse
	if err := c.call(ctx, http.MethodPost, "/v1/domains/"+url.PathEscape(name)+"/renew", nil, http.StatusAccepted, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// RemoveDomain stops managing a name, with DELETE /v1/domains/{name}, and
// returns its record as it is now. Its certificate stays served, unless
// revokeReason (an RFC 5280 reason name or code, see
// api.RevocationReason) is set: then it is first revoked at the CA, and
// the answer's Revoked says so. A failed revocation removes nothing.
func (c *Client) RemoveDomain(ctx context.Context, name, revokeReason string) (*api.Domain, error) {
	path := "/v1/domains/" + url.PathEscape(name)
	if revokeReason != "" {
		path += "?" + url.Values{"revoke": {revokeReason}}.Encode()
	}
	var resp api.Domain
	if err := c.call(ctx, http.MethodDelete, path, nil, http.StatusOK, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// RevokeDomain revokes the certificate that serves a managed name at the
// CA, with POST /v1/domains/{name}/revoke, and has a new one ordered.
// reason is an RFC 5280 reason name ("keyCompromise") or code. A refusal
// of the CA is an *api.Error with Status 422, a rate limit 429 with
// RetryAfter.
func (c *Client) RevokeDomain(ctx context.Context, name, reason string) (*api.Revocation, error) {
	var resp api.Revocation
	if err := c.call(ctx, http.MethodPost, "/v1/domains/"+url.PathEscape(name)+"/revoke", &api.RevokeRequest{Reason: reason}, http.StatusOK, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Queue returns what the renewer has to do, with GET /v1/queue.
func (c *Client) Queue(ctx context.Context) (*api.Queue, error) {
	var resp api.Queue
	if err := c.call(ctx, http.MethodGet, "/v1/queue", nil, http.StatusOK, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// call sends one request and decodes an answer of status want into out;
// any other answer is an *api.Error.
func (c *Client) call(ctx context.Context, method, path string, in any, want int, out any) error {
	status, body, err := c.do(ctx, method, path, in)
	if err != nil {
		return err
	}
	if status != want {
		return apiError(status, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s %s: decode the answer: %w", method, path, err)
	}
	return nil
}

// do sends one request with an optional JSON body and returns the answer's
// status and body.
func (c *Client) do(ctx context.Context, method, path string, in any) (int, []byte, error) {
	if in == nil {
		return c.send(ctx, method, path, "", nil)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return 0, nil, fmt.Errorf("encode request: %w", err)
	}
	return c.send(ctx, method, path, "application/json", b)
}

// send sends one request with a body of contentType (none when
// contentType is "") and returns the answer's status and body.
func (c *Client) send(ctx context.Context, method, path, contentType string, in []byte) (int, []byte, error) {
	var body io.Reader
	if contentType != "" {
		body = bytes.NewReader(in)
	}
	u := c.base.String() + path
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
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

// RotateKeys re-encrypts one batch of stored private keys under the
// current key-encryption key, with POST /v1/keys/rotate: the records
// after cursor ("" for the beginning), up to limit (0 for the server's
// default). Call it again with the answer's Next until Done.
func (c *Client) RotateKeys(ctx context.Context, cursor string, limit int) (*api.KeyRotation, error) {
	var resp api.KeyRotation
	if err := c.call(ctx, http.MethodPost, "/v1/keys/rotate", &api.RotateKeysRequest{Cursor: cursor, Limit: limit}, http.StatusOK, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Fleet returns the host's place in its fleet, with GET /v1/fleet. A host
// that runs no fleet answers 404: (nil, nil).
func (c *Client) Fleet(ctx context.Context) (*api.Fleet, error) {
	var resp api.Fleet
	err := c.call(ctx, http.MethodGet, "/v1/fleet", nil, http.StatusOK, &resp)
	var ae *api.Error
	if errors.As(err, &ae) && ae.Status == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &resp, nil
}
