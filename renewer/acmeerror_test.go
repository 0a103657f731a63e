package renewer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-acme/lego/v4/acme"
)

// The errors below are built the way lego v4.34.0 builds them: problems
// read from an HTTP answer carry the request's method and URL (sender.go
// checkError); problems read from a challenge or an order object carry
// neither and come wrapped ("invalid authorization: %w", per-domain
// joins).

func answerProblem(typ, detail string, status int) *acme.ProblemDetails {
	return &acme.ProblemDetails{Type: problemNS + typ, Detail: detail, HTTPStatus: status,
		Method: "POST", URL: "https://ca.example.test/acme/new-order"}
}

func validationProblem(typ, detail string) error {
	p := &acme.ProblemDetails{Type: problemNS + typ, Detail: detail, HTTPStatus: 400}
	return fmt.Errorf("error: one or more domains had a problem:\n%w",
		errors.Join(fmt.Errorf("a.example.test: %w", fmt.Errorf("invalid authorization: %w", p))))
}

func TestClassify(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		desc    string
		err     error
		kind    ErrorKind
		problem string
		detail  string
		wait    time.Duration
	}{
		{desc: "unauthorized validation", err: validationProblem("unauthorized", "The key authorization file from the server did not match"),
			kind: KindPermanent, problem: "unauthorized", detail: "did not match"},
		{desc: "incorrect response", err: validationProblem("incorrectResponse", "wrong content"),
			kind: KindPermanent, problem: "incorrectResponse", detail: "wrong content"},
		{desc: "nxdomain at the CA", err: validationProblem("dns", "DNS problem: NXDOMAIN looking up A for a.example.test"),
			kind: KindPermanent, problem: "dns", detail: "NXDOMAIN looking up A"},
		{desc: "caa forbids", err: validationProblem("caa", "CAA record for example.test prevents issuance"),
			kind: KindPermanent, problem: "caa", detail: "prevents issuance"},
		{desc: "validation could not connect", err: validationProblem("connection", "Fetching http://a.example.test/: Timeout during connect"),
			kind: KindPermanent, problem: "connection", detail: "Timeout during connect"},
		{desc: "tls problem in validation", err: validationProblem("tls", "remote error"),
			kind: KindPermanent, problem: "tls", detail: "remote error"},
		{desc: "unknown type in validation", err: validationProblem("somethingNew", "new failure"),
			kind: KindPermanent, problem: "somethingNew", detail: "new failure"},
		{desc: "rejected identifier", err: answerProblem("rejectedIdentifier", "forbidden by policy", 400),
			kind: KindPermanent, problem: "rejectedIdentifier", detail: "forbidden by policy"},
		{desc: "malformed", err: answerProblem("malformed", "bad identifier", 400),
			kind: KindPermanent, problem: "malformed", detail: "bad identifier"},
		{desc: "terms not agreed", err: answerProblem("userActionRequired", "agree to the new terms", 403),
			kind: KindPermanent, problem: "userActionRequired", detail: "agree to the new terms"},
		{desc: "server internal", err: answerProblem("serverInternal", "oops", 500),
			kind: KindTransient, problem: "serverInternal", detail: "oops"},
		{desc: "bad nonce left over", err: &acme.NonceError{ProblemDetails: answerProblem("badNonce", "stale nonce", 400)},
			kind: KindTransient, problem: "badNonce", detail: "stale nonce"},
		{desc: "connection problem in an answer", err: answerProblem("connection", "upstream", 400),
			kind: KindTransient, problem: "connection", detail: "upstream"},
		{desc: "unknown type in a 5xx answer", err: answerProblem("somethingNew", "overloaded", 503),
			kind: KindTransient, problem: "somethingNew", detail: "overloaded"},
		{desc: "unknown type in a 4xx answer", err: answerProblem("somethingNew", "no", 403),
			kind: KindPermanent, problem: "somethingNew", detail: "no"},
		{desc: "rate limited, seconds",
			err:  &acme.RateLimitedError{ProblemDetails: answerProblem("rateLimited", "too many new orders", 429), RetryAfter: "3600"},
			kind: KindRateLimited, problem: "rateLimited", detail: "too many new orders", wait: time.Hour},
		{desc: "rate limited, http date",
			err:  &acme.RateLimitedError{ProblemDetails: answerProblem("rateLimited", "slow down", 429), RetryAfter: now.Add(90 * time.Minute).Format(time.RFC1123)},
			kind: KindRateLimited, problem: "rateLimited", detail: "slow down", wait: 90 * time.Minute},
		{desc: "rate limited, no retry-after",
			err:  &acme.RateLimitedError{ProblemDetails: answerProblem("rateLimited", "slow down", 429)},
			kind: KindRateLimited, problem: "rateLimited", detail: "slow down", wait: defaultRateLimitWait},
		{desc: "rate limited, wrapped by lego",
			err:  fmt.Errorf("a.example.test: %w", &acme.RateLimitedError{ProblemDetails: answerProblem("rateLimited", "slow down", 429), RetryAfter: "60"}),
			kind: KindRateLimited, problem: "rateLimited", detail: "slow down", wait: time.Minute},
		{desc: "compound with a permanent subproblem",
			err: &acme.ProblemDetails{Type: problemNS + "compound", Detail: "several problems", HTTPStatus: 400, Method: "POST", URL: "u",
				SubProblems: []acme.SubProblem{
					{Type: problemNS + "serverInternal", Detail: "hiccup", Identifier: acme.Identifier{Value: "a.example.test"}},
					{Type: problemNS + "caa", Detail: "CAA forbids", Identifier: acme.Identifier{Value: "b.example.test"}},
				}},
			kind: KindPermanent, problem: "compound", detail: "several problems; a.example.test: serverInternal: hiccup; b.example.test: caa: CAA forbids"},
		{desc: "compound with a rate limit",
			err: &acme.ProblemDetails{Type: problemNS + "compound", HTTPStatus: 400, Method: "POST", URL: "u",
				SubProblems: []acme.SubProblem{{Type: problemNS + "rateLimited", Detail: "later"}}},
			kind: KindRateLimited, problem: "compound", detail: "compound; rateLimited: later"},
		{desc: "network error", err: fmt.Errorf("get directory: %w", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}),
			kind: KindTransient, detail: "connection refused"},
		{desc: "timeout", err: fmt.Errorf("order given up: %w", context.DeadlineExceeded),
			kind: KindTransient, detail: "deadline exceeded"},
		{desc: "5xx page that is not a problem", err: errors.New("502 ::POST :: https://ca/new-order :: invalid character '<' :: <html>"),
			kind: KindTransient, detail: "502"},
		{desc: "multi-line lego text folded", err: errors.New("error: one or more domains had a problem:\n[a.example.test] acme: error presenting token: store down\n"),
			kind: KindTransient, detail: "had a problem: [a.example.test] acme: error presenting token: store down"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			e := classify("a.example.test", tc.err, now)
			if e.Kind != tc.kind {
				t.Errorf("kind %s, want %s", e.Kind, tc.kind)
			}
			if got := shortProblem(e.Problem); got != tc.problem {
				t.Errorf("problem %q, want %q", got, tc.problem)
			}
			if !strings.Contains(e.Detail, tc.detail) || strings.Contains(e.Detail, "\n") {
				t.Errorf("detail %q, want one line containing %q", e.Detail, tc.detail)
			}
			if e.RetryAfter() != tc.wait {
				t.Errorf("RetryAfter %s, want %s", e.RetryAfter(), tc.wait)
			}
			if e.Permanent() != (tc.kind == KindPermanent) {
				t.Errorf("Permanent() = %v for kind %s", e.Permanent(), e.Kind)
			}
			if !errors.Is(e, tc.err) {
				t.Error("the ACMEError does not wrap the original error")
			}
			if msg := e.Error(); !strings.HasPrefix(msg, "obtain a.example.test: ") || !strings.Contains(msg, e.Detail) {
				t.Errorf("message %q, want the name and the detail", msg)
			}
		})
	}
}

func TestClassifyKeepsACMEError(t *testing.T) {
	orig := &ACMEError{Name: "a.example.test", Kind: KindPermanent, Detail: "wildcard", Err: errors.New("wildcard")}
	if got := classify("a.example.test", fmt.Errorf("wrapped: %w", orig), time.Now()); got != orig {
		t.Errorf("classify re-wrapped an *ACMEError: %+v", got)
	}
}

// The scheduler reads these interfaces (worker.go).
var (
	_ interface{ Permanent() bool }           = (*ACMEError)(nil)
	_ interface{ RetryAfter() time.Duration } = (*ACMEError)(nil)
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		desc string
		in   string
		want time.Duration
	}{
		{desc: "empty", in: "", want: 0},
		{desc: "seconds", in: "120", want: 2 * time.Minute},
		{desc: "zero", in: "0", want: 0},
		{desc: "negative", in: "-5", want: 0},
		{desc: "date", in: "Sun, 01 Mar 2026 12:30:00 GMT", want: 30 * time.Minute},
		{desc: "date in utc", in: "Sun, 01 Mar 2026 12:30:00 UTC", want: 30 * time.Minute},
		{desc: "date in the past", in: "Sun, 01 Mar 2026 11:30:00 GMT", want: 0},
		{desc: "garbage", in: "soon", want: 0},
		{desc: "seconds past a week: capped", in: "9999999999999", want: maxRetryAfter},
		{desc: "date past a week: capped", in: "Sun, 01 Mar 2037 12:30:00 GMT", want: maxRetryAfter},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if got := parseRetryAfter(tc.in, now); got != tc.want {
				t.Errorf("parseRetryAfter(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

// TestClassifyRecordsFault: classify records, once, whose failure an
// order's error is and whether the CA counts it as a failed validation;
// the worker, the gate and the metrics read these fields.
func TestClassifyRecordsFault(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		desc       string
		err        error
		fault      Fault
		validation bool
	}{
		{desc: "dns validation", err: validationProblem("dns", "NXDOMAIN"), fault: FaultName, validation: true},
		{desc: "connection validation", err: validationProblem("connection", "refused"), fault: FaultName, validation: true},
		{desc: "unauthorized validation", err: validationProblem("unauthorized", "404"), fault: FaultName, validation: true},
		{desc: "caa: this CA only", err: validationProblem("caa", "forbidden"), fault: FaultCA, validation: true},
		{desc: "rejected identifier: the CA's policy", err: answerProblem("rejectedIdentifier", "no", 400), fault: FaultCA},
		{desc: "connection answer: transient", err: answerProblem("connection", "reset", 400), fault: FaultCA},
		{desc: "server internal: the CA is down", err: answerProblem("serverInternal", "db", 500), fault: FaultCADown},
		{desc: "network error: the CA is down", err: &net.OpError{Op: "dial", Err: errors.New("refused")}, fault: FaultCADown},
		{desc: "rate limited", err: &acme.RateLimitedError{ProblemDetails: answerProblem("rateLimited", "too many", 429)}, fault: FaultCA},
		{desc: "unknown 4xx", err: answerProblem("madeUp", "?", 400), fault: FaultCA},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			e := classify("a.example.test", tc.err, now)
			if e.Fault != tc.fault || e.ValidationFailed != tc.validation {
				t.Errorf("fault %d, validation failed %v; want %d, %v", e.Fault, e.ValidationFailed, tc.fault, tc.validation)
			}
			if tc.validation {
				e.refusedAsReplacement()
				if e.Fault != FaultCA || e.ValidationFailed {
					t.Errorf("refused as a replacement: fault %d, validation failed %v; want the CA's, no validation", e.Fault, e.ValidationFailed)
				}
			}
		})
	}
}

// resolverFailures is a map of names to errors, as lego's resolver
// reports the authorizations that failed.
type resolverFailures map[string]error

func (e resolverFailures) Error() string { return fmt.Sprint(map[string]error(e)) }
func (e resolverFailures) Unwrap() []error {
	var errs []error
	for _, err := range e {
		errs = append(errs, err)
	}
	return errs
}

// A failed validation is charged to the name the CA's problem is about,
// matched exactly: a detail that names www.example.test is not charged to
// example.test although it contains it; without an identifier of the
// order, the order's Name is charged.
func TestFailedNameIsTheProblemsIdentifier(t *testing.T) {
	o := Order{Name: "www.example.test", ExtraNames: []string{"example.test", "shop.test"}}
	now := time.Now()
	detail := "Fetching http://www.example.test/.well-known/acme-challenge/x: Connection refused"
	for _, tc := range []struct {
		desc string
		err  error
		want string
	}{
		{desc: "lego's resolver map", want: "www.example.test", err: fmt.Errorf("wrapped: %w", resolverFailures{
			"www.example.test": fmt.Errorf("invalid authorization: %w", &acme.ProblemDetails{Type: problemNS + "connection", Detail: detail, HTTPStatus: 400}),
		})},
		{desc: "name: wrapping", want: "www.example.test", err: fmt.Errorf("error: one or more domains had a problem:\n%w",
			errors.Join(fmt.Errorf("www.example.test: %w", fmt.Errorf("invalid authorization: %w",
				&acme.ProblemDetails{Type: problemNS + "connection", Detail: detail, HTTPStatus: 400}))))},
		{desc: "subproblem identifier", want: "shop.test", err: &acme.ProblemDetails{Type: problemNS + "compound", Detail: "www.example.test is fine", HTTPStatus: 400,
			SubProblems: []acme.SubProblem{{Type: problemNS + "caa", Detail: "CAA forbids", Identifier: acme.Identifier{Type: "dns", Value: "shop.test"}}}}},
		{desc: "identifier not in the order", want: "www.example.test", err: resolverFailures{
			"other.test": &acme.ProblemDetails{Type: problemNS + "dns", Detail: "www.example.test", HTTPStatus: 400},
		}},
		{desc: "no identifier", want: "www.example.test", err: &acme.ProblemDetails{Type: problemNS + "dns", Detail: detail, HTTPStatus: 400}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if got := failedName(o, classify(o.Name, tc.err, now)); got != tc.want {
				t.Errorf("failedName = %q, want %q", got, tc.want)
			}
		})
	}
}
