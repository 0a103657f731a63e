package pebbletest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Order is one newOrder request (RFC 8555 section 7.4) seen by the front.
type Order struct {
	// Names are the values of the order's identifiers.
	Names []string
	// Profile is the profile the order asked for ("" for none).
	Profile string
	// Replaces is the ARI CertID of the certificate the order replaces
	// (RFC 9773 section 5), "" for none.
	Replaces string
	// Status is the HTTP status of the answer (201 when Pebble created the
	// order), 0 while it is under way.
	Status int
	// Received is when the request reached the front.
	Received time.Time
	// URL is the order's URL path at Pebble (its Location), "" unless
	// Pebble created it.
	URL string
	// Last is when the front last passed on an answer to a request about
	// the order (the order itself, its finalize URL, its authorizations
	// and their challenges): the end of the client's work on it so far.
	// An order that a client abandoned (killed mid-order) keeps the time
	// of its last request.
	Last time.Time
	// Result is the order's status once Pebble answered it "valid" or
	// "invalid", "" while neither has been seen.
	Result string
}

// Fault is an answer the front gives instead of passing a request on.
type Fault struct {
	// Status is the HTTP status. Default 503.
	Status int
	// Type is an ACME problem type ("urn:ietf:params:acme:error:
	// rateLimited"); "" answers Detail as text/plain, like a load balancer
	// in front of a CA that is down.
	Type string
	// Detail is the problem's detail, or the text/plain body.
	Detail string
	// RetryAfter is the Retry-After header, "" for none.
	RetryAfter string
}

// front is a reverse proxy in front of Pebble's ACME API. Pebble builds
// every URL it hands out from the request's Host, which the front keeps, so
// clients that start at the front's directory stay on the front.
type front struct {
	url          string
	newOrderPath string
	resources    map[string]string // URL path -> directory resource name
	proxy        *httputil.ReverseProxy

	mu       sync.Mutex
	seen     []Order
	faults   []Fault
	requests map[string]int       // directory resource name -> POSTs received
	byPath   map[string]orderPart // URL path of an order's resource -> the order
}

// orderPart is one resource of an order that the front follows: the
// order itself and its finalize URL (which answer the order's status), or
// one of its authorizations or challenges.
type orderPart struct {
	order   int  // index in front.seen
	isOrder bool // an answer is the order object
}

// orderIndexKey carries the index of a newOrder request in front.seen to
// the proxy's ModifyResponse.
type orderIndexKey struct{}

// startFront starts the front on a free loopback port, serving HTTPS with
// the listener certificate, and stops it in t.Cleanup.
func startFront(t testing.TB, pebbleURL string, ca *listenerCerts, logPath string, issued *issuance, hideRenewalInfo bool) (*front, error) {
	target, err := url.Parse(pebbleURL)
	if err != nil {
		return nil, err
	}
	resources, err := directoryPaths(newClient(ca.pool, requestTimeout), pebbleURL+"/dir")
	if err != nil {
		return nil, err
	}
	var newOrder string
	for path, name := range resources {
		if name == "newOrder" {
			newOrder = path
		}
	}
	if newOrder == "" {
		return nil, fmt.Errorf("directory %s/dir has no newOrder", pebbleURL)
	}
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = logFile.Close() })
	f := &front{newOrderPath: newOrder, resources: resources, requests: map[string]int{}, byPath: map[string]orderPart{}}
	f.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: 16,
		},
		ErrorLog: log.New(logFile, "pebbletest front: ", log.LstdFlags),
	}
	f.proxy.ModifyResponse = func(resp *http.Response) error {
		if req := resp.Request; req.Method == http.MethodPost && resp.StatusCode == http.StatusOK &&
			strings.HasPrefix(req.URL.Path, finalizePathPrefix) {
			// Pebble's deadlock on an order polled while it is
			// issued (issued.go).
			issued.wait(strings.TrimPrefix(req.URL.Path, finalizePathPrefix))
		}
		if hideRenewalInfo {
			if err := dropRenewalInfo(resp); err != nil {
				return err
			}
		}
		return f.follow(resp)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{
		Handler:           f,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{ca.tlsCert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          f.proxy.ErrorLog,
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	f.url = "https://" + ln.Addr().String()
	return f, nil
}

// dropRenewalInfo takes the renewalInfo resource out of the directory
// (RFC 9773 section 3), so that the CA looks like one without ARI.
func dropRenewalInfo(resp *http.Response) error {
	if resp.Request.URL.Path != "/dir" || resp.StatusCode != http.StatusOK {
		return nil
	}
	defer resp.Body.Close()
	var dir map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
		return fmt.Errorf("read directory: %w", err)
	}
	delete(dir, "renewalInfo")
	body, err := json.Marshal(dir)
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// directoryPaths reads a directory (RFC 8555 section 7.1.1) and maps the
// URL path of each resource to its name ("/order-plz" -> "newOrder").
func directoryPaths(c *http.Client, dirURL string) (map[string]string, error) {
	resp, err := c.Get(dirURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var dir map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
		return nil, fmt.Errorf("read directory %s: %w", dirURL, err)
	}
	paths := make(map[string]string)
	for name, v := range dir {
		s, ok := v.(string)
		if !ok {
			continue // meta
		}
		u, err := url.Parse(s)
		if err != nil || u.Path == "" {
			return nil, fmt.Errorf("directory %s: bad %s %q", dirURL, name, s)
		}
		paths[u.Path] = name
	}
	return paths, nil
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if name, ok := f.resources[r.URL.Path]; ok && r.Method == http.MethodPost {
		f.mu.Lock()
		f.requests[name]++
		f.mu.Unlock()
	}
	if r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, challengePathPrefix) {
		f.proxy.ServeHTTP(&retryAfterSetter{ResponseWriter: w}, r)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != f.newOrderPath {
		f.proxy.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))

	o := parseNewOrder(body)
	o.Received = time.Now()
	o.Last = o.Received
	f.mu.Lock()
	i := len(f.seen)
	f.seen = append(f.seen, o)
	var fault *Fault
	if len(f.faults) > 0 {
		fault = &f.faults[0]
		f.faults = f.faults[1:]
	}
	f.mu.Unlock()

	var status int
	if fault != nil {
		status = fault.write(w)
	} else {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		f.proxy.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), orderIndexKey{}, i)))
		status = rec.status
	}
	f.mu.Lock()
	f.seen[i].Status = status
	f.mu.Unlock()
}

// follow records, from Pebble's answer, what the front learns of an
// order: a new order's URL, authorizations and finalize URL; an
// authorization's challenges; the order's status; and the time of every
// answer about it (Order.Last).
func (f *front) follow(resp *http.Response) error {
	req := resp.Request
	if req.Method != http.MethodPost {
		return nil
	}
	i, isNew := req.Context().Value(orderIndexKey{}).(int)
	f.mu.Lock()
	part, known := f.byPath[req.URL.Path]
	f.mu.Unlock()
	if !isNew && !known {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var obj struct {
		Status         string   `json:"status"`
		Authorizations []string `json:"authorizations"`
		Finalize       string   `json:"finalize"`
		Challenges     []struct {
			URL string `json:"url"`
		} `json:"challenges"`
	}
	_ = json.Unmarshal(body, &obj) // an error document has none of these
	now := time.Now()

	f.mu.Lock()
	defer f.mu.Unlock()
	if isNew {
		if resp.StatusCode != http.StatusCreated {
			return nil
		}
		part = orderPart{order: i, isOrder: true}
		if loc := urlPath(resp.Header.Get("Location")); loc != "" {
			f.seen[i].URL = loc
			f.byPath[loc] = part
		}
		if p := urlPath(obj.Finalize); p != "" {
			f.byPath[p] = part
		}
		for _, a := range obj.Authorizations {
			if p := urlPath(a); p != "" {
				f.byPath[p] = orderPart{order: i}
			}
		}
	}
	for _, c := range obj.Challenges {
		if p := urlPath(c.URL); p != "" {
			f.byPath[p] = orderPart{order: part.order}
		}
	}
	o := &f.seen[part.order]
	o.Last = now
	if part.isOrder && (obj.Status == "valid" || obj.Status == "invalid") {
		o.Result = obj.Status
	}
	return nil
}

// urlPath returns the path of an absolute URL, "" when it has none.
func urlPath(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	return u.Path
}

func (f *front) orders() []Order {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Order, len(f.seen))
	for i, o := range f.seen {
		o.Names = append([]string(nil), o.Names...)
		out[i] = o
	}
	return out
}

func (f *front) requestCount(resource string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[resource]
}

func (f *front) addFaults(n int, fault Fault) {
	if fault.Status == 0 {
		fault.Status = http.StatusServiceUnavailable
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.faults = append(f.faults, fault)
	}
}

// write sends the fault and returns its status.
func (fault *Fault) write(w http.ResponseWriter) int {
	if fault.RetryAfter != "" {
		w.Header().Set("Retry-After", fault.RetryAfter)
	}
	if fault.Type == "" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(fault.Status)
		_, _ = io.WriteString(w, fault.Detail)
		return fault.Status
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(fault.Status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type":   fault.Type,
		"detail": fault.Detail,
		"status": fault.Status,
	})
	return fault.Status
}

// parseNewOrder reads the identifiers, profile and replaces fields of a
// newOrder request: a JWS in flattened JSON serialization (RFC 8555
// section 6.2) whose payload is the order. The signature is not checked
// (Pebble does that). What cannot be read is left empty.
func parseNewOrder(body []byte) Order {
	var jws struct {
		Payload string `json:"payload"`
	}
	var o Order
	if json.Unmarshal(body, &jws) != nil {
		return o
	}
	payload, err := base64.RawURLEncoding.DecodeString(jws.Payload)
	if err != nil {
		return o
	}
	var req struct {
		Identifiers []struct {
			Value string `json:"value"`
		} `json:"identifiers"`
		Profile  string `json:"profile"`
		Replaces string `json:"replaces"`
	}
	if json.Unmarshal(payload, &req) != nil {
		return o
	}
	for _, id := range req.Identifiers {
		o.Names = append(o.Names, id.Value)
	}
	o.Profile, o.Replaces = req.Profile, req.Replaces
	return o
}

// challengePathPrefix starts the URLs of Pebble's challenge objects
// (wfe.challengePath in Pebble v2.10.1; challenges are not in the
// directory).
const challengePathPrefix = "/chalZ/"

// finalizePathPrefix is the path of Pebble's finalize URLs, before the
// order's ID.
const finalizePathPrefix = "/finalize-order/"

// retryAfterSetter adds "Retry-After: 1" to an answer that has none.
//
// Pebble sends Retry-After on authorizations being validated but not on
// the answer to the POST that starts a validation, and lego then waits 5
// seconds (backed off from there) before it looks at the authorization
// again, although Pebble without sleeps has decided within milliseconds.
// With the header lego looks again after about a second. (Boulder does not
// send it either; against a real CA the 5 seconds are harmless.)
type retryAfterSetter struct {
	http.ResponseWriter
}

func (r *retryAfterSetter) WriteHeader(code int) {
	if code >= http.StatusOK && r.Header().Get("Retry-After") == "" {
		r.Header().Set("Retry-After", "1")
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *retryAfterSetter) Write(p []byte) (int, error) {
	if r.Header().Get("Retry-After") == "" {
		r.WriteHeader(http.StatusOK)
	}
	return r.ResponseWriter.Write(p)
}

func (r *retryAfterSetter) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// statusRecorder remembers the status a handler writes.
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wroteHeader && code >= http.StatusOK {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
