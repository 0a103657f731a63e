package renewer

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-acme/lego/v4/acme"

	"github.com/certserver/certserver/renewer/ratelimit"
)

// ErrorKind says what a failed order means for the next attempt.
type ErrorKind int

// The kinds of order failures.
const (
	// KindTransient: the CA could not be reached or failed (network
	// error, timeout, 5xx, serverInternal, badNonce), or something on our
	// side failed (the store). The same order may well succeed after the
	// usual backoff.
	KindTransient ErrorKind = iota
	// KindPermanent: the CA refused the name or its validation failed
	// (rejectedIdentifier, caa, dns, unauthorized, incorrectResponse, a
	// challenge that could not connect, …). Trying again cannot help until
	// something changes outside certserver (DNS, CAA, firewall, the CA's
	// policy), and every failed validation counts against the CA's
	// failed-validation limit.
	KindPermanent
	// KindRateLimited: the CA's rate limit (rateLimited); the error's
	// RetryAfter says when to come back.
	KindRateLimited
)

func (k ErrorKind) String() string {
	switch k {
	case KindTransient:
		return "transient"
	case KindPermanent:
		return "permanent"
	case KindRateLimited:
		return "rate_limited"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// defaultRateLimitWait is the wait assumed when a CA rate-limits without a
// Retry-After header: the Limiter's, which empties the bucket the CA
// named for as long.
const defaultRateLimitWait = ratelimit.DefaultRetryAfter

// ACMEError is a failed order, classified for the scheduler. It implements
// Permanent() bool and RetryAfter() time.Duration, which the Renewer reads.
// Its message carries the CA's own words (the problem document's detail,
// RFC 8555 section 6.7) for Domain.LastError.
type ACMEError struct {
	// Name is the name the order was for.
	Name string
	// Kind decides the retry.
	Kind ErrorKind
	// Problem is the ACME problem type ("urn:ietf:params:acme:error:caa"),
	// "" when the failure was not a problem document from the CA.
	Problem string
	// Detail is the CA's detail of the problem, with its subproblems; else
	// the text of Err.
	Detail string
	// Identifier is the name the CA's problem is about, when it is known:
	// the identifier of a subproblem, else the name lego filed the failed
	// authorization under; "" when neither says.
	Identifier string
	// Wait is how long the CA asked us to wait (Retry-After), for
	// KindRateLimited; zero otherwise.
	Wait time.Duration
	// ReplacesRefused is true when the order named a certificate it
	// replaces (RFC 9773 section 5) and the CA refused the order itself,
	// for a reason other than a rate limit: the certificate was replaced
	// already (alreadyReplaced), another account ordered it
	// (unauthorized), or the CA does not know it. The same order without
	// "replaces" may well be accepted.
	ReplacesRefused bool
	// Fault says whose failure this is: the CA's, the name's, or the CA
	// was down. Recorded by classify (judge) from the problems table.
	Fault Fault
	// ValidationFailed is true when the CA tried to validate the name and
	// failed (a permanent dns, connection, unauthorized, incorrectResponse,
	// tls or caa), which counts against its failed-validation limits.
	ValidationFailed bool
	// Err is the underlying error, from lego or from certserver.
	Err error
}

// Error reads "obtain NAME: DETAIL", with the problem type's short name
// ("acme caa: …") when the CA sent a problem document.
func (e *ACMEError) Error() string {
	if e.Problem != "" {
		return fmt.Sprintf("obtain %s: acme %s: %s", e.Name, shortProblem(e.Problem), e.Detail)
	}
	return fmt.Sprintf("obtain %s: %s", e.Name, e.Detail)
}

func (e *ACMEError) Unwrap() error { return e.Err }

// Permanent reports whether retrying soon cannot fix the failure.
func (e *ACMEError) Permanent() bool { return e.Kind == KindPermanent }

// RetryAfter is how long the CA asked us to wait; zero when it did not.
func (e *ACMEError) RetryAfter() time.Duration { return e.Wait }

// problemNS prefixes every ACME problem type (RFC 8555 section 6.7).
const problemNS = "urn:ietf:params:acme:error:"

func shortProblem(t string) string { return strings.TrimPrefix(t, problemNS) }

// problemType is what one ACME problem type (RFC 8555 section 6.7, RFC 9773,
// draft-ietf-acme-profiles) means for the next attempt: the one table that
// classify, the CA failover, the rate limiter and the metrics read, through
// the fields classify records on the *ACMEError.
type problemType struct {
	// kind is the type's kind when it stands alone. "connection" is
	// permanent only when it reports a failed validation, and "compound"
	// takes the kind of its subproblems: see problemKind.
	kind ErrorKind
	// name: when permanent, the failure is the name's own (its DNS, its
	// challenge answer, its TLS), and another CA would fail the same way.
	name bool
	// validation: when permanent, the CA tried to validate the name and
	// failed, which it counts against its failed-validation limits.
	validation bool
	// down: the CA itself failed and says nothing of the name.
	down bool
}

// problems holds every problem type the renewer knows, by short name. A
// type outside it is KindPermanent for a 4xx answer and for a failed
// validation, KindTransient for a 5xx, and never the name's fault.
// accountDoesNotExist is handled before classification (the account is
// registered again); when it still surfaces it is transient. A compound
// problem that is permanent is the name's: its subproblems are the
// per-name validation failures of the order.
var problems = map[string]problemType{
	"accountDoesNotExist":     {kind: KindTransient},
	"alreadyReplaced":         {kind: KindTransient},
	"badCSR":                  {kind: KindPermanent},
	"badNonce":                {kind: KindTransient},
	"badPublicKey":            {kind: KindPermanent},
	"badRevocationReason":     {kind: KindPermanent},
	"badSignatureAlgorithm":   {kind: KindPermanent},
	"caa":                     {kind: KindPermanent, validation: true},
	"compound":                {kind: KindTransient, name: true},
	"connection":              {kind: KindPermanent, name: true, validation: true},
	"dns":                     {kind: KindPermanent, name: true, validation: true},
	"externalAccountRequired": {kind: KindPermanent},
	"incorrectResponse":       {kind: KindPermanent, name: true, validation: true},
	"invalidContact":          {kind: KindPermanent},
	"invalidProfile":          {kind: KindPermanent},
	"malformed":               {kind: KindPermanent},
	"orderNotReady":           {kind: KindTransient},
	"rateLimited":             {kind: KindRateLimited},
	"rejectedIdentifier":      {kind: KindPermanent},
	"serverInternal":          {kind: KindTransient, down: true},
	"tls":                     {kind: KindPermanent, name: true, validation: true},
	"unauthorized":            {kind: KindPermanent, name: true, validation: true},
	"unsupportedContact":      {kind: KindPermanent},
	"unsupportedIdentifier":   {kind: KindPermanent},
	"userActionRequired":      {kind: KindPermanent},
}

// Fault says whose failure a failed order is, which decides whether the
// next configured CA is tried.
type Fault int

// The faults.
const (
	// FaultCA: the CA's own failure (a transient error, a rate limit, a
	// refusal by its policy such as rejectedIdentifier, a CAA record that
	// forbids this CA, a profile or account problem, a "replaces" it
	// refused). Another CA may well issue.
	FaultCA Fault = iota
	// FaultName: the name itself could not be validated (dns,
	// connection, unauthorized, incorrectResponse, tls, compound), or it
	// was refused for a reason of certserver's own (a wildcard, an empty
	// name). Another CA would fail the same way.
	FaultName
	// FaultCADown: the CA could not be reached or failed (a network error,
	// a timeout, an answer that is not a problem document, serverInternal)
	// and said nothing of the name.
	FaultCADown
)

// judge records on e what its Kind, Problem and ReplacesRefused mean (see
// problems): its Fault and whether its validation failed. classify calls
// it; so does whoever changes those fields afterwards. It returns e.
func (e *ACMEError) judge() *ACMEError {
	row := problems[shortProblem(e.Problem)]
	e.Fault, e.ValidationFailed = FaultCA, false
	switch {
	case e.ReplacesRefused:
	case e.Kind == KindPermanent:
		if e.Problem == "" || row.name {
			e.Fault = FaultName
		}
		e.ValidationFailed = row.validation
	case e.Kind == KindTransient && (e.Problem == "" || row.down):
		e.Fault = FaultCADown
	}
	return e
}

// refusedAsReplacement records that the CA refused the order because it
// named a certificate it replaces (ReplacesRefused).
func (e *ACMEError) refusedAsReplacement() {
	e.ReplacesRefused = true
	e.judge()
}

// problemLabel is e's short problem type for metrics: "none" when the
// CA sent no problem document, "other" for a type outside problems.
func (e *ACMEError) problemLabel() string {
	if e.Problem == "" {
		return "none"
	}
	short := shortProblem(e.Problem)
	if _, ok := problems[short]; !ok {
		return "other"
	}
	return short
}

// classify turns the error of an order for name into an *ACMEError. now is
// the time Retry-After dates are measured from.
//
// The first ACME problem document found in err's tree decides:
// rateLimited is KindRateLimited with its Retry-After (an hour when the CA
// gave none); the types problems holds as KindPermanent are; a problem
// of unknown type is KindPermanent for a 4xx answer and for a failed
// validation, KindTransient for a 5xx. A "connection" problem is permanent
// only when it reports a failed validation (the CA could not reach us);
// lego marks the problems it read from an HTTP answer with the request's
// method and URL, and the ones it read from a challenge or order object
// carry neither. An error without a problem document (network, timeout,
// a 5xx page that is not a problem, the store) is KindTransient.
func classify(name string, err error, now time.Time) *ACMEError {
	var ae *ACMEError
	if errors.As(err, &ae) {
		return ae
	}
	e := &ACMEError{Name: name, Kind: KindTransient, Err: err, Detail: oneLine(err.Error())}
	var rl *acme.RateLimitedError
	if errors.As(err, &rl) {
		e.Kind, e.Problem, e.Detail = KindRateLimited, rl.Type, problemText(rl.ProblemDetails)
		e.Wait = parseRetryAfter(rl.RetryAfter, now)
		if e.Wait <= 0 {
			e.Wait = defaultRateLimitWait
		}
		return e.judge()
	}
	var p *acme.ProblemDetails
	if !errors.As(err, &p) || p == nil {
		return e.judge()
	}
	e.Problem, e.Detail = p.Type, problemText(p)
	e.Identifier = problemIdentifier(err, p)
	e.Kind = problemKind(p)
	if shortProblem(p.Type) == "externalAccountRequired" {
		e.Detail += " (the CA requires external account binding: set eab_kid and eab_hmac_file to the credentials from its dashboard)"
	}
	return e.judge()
}

// problemIdentifier returns the name problem p of err is about: the
// identifier of its first subproblem that has one (RFC 8555 section
// 6.7.1), else the key under which err's tree files p in a map of names
// to errors (lego's resolver reports failed authorizations so, keyed by
// domain) or the name a wrapping "NAME: …" error gives it, else "".
func problemIdentifier(err error, p *acme.ProblemDetails) string {
	for _, sub := range p.SubProblems {
		if sub.Identifier.Value != "" {
			return sub.Identifier.Value
		}
	}
	var walk func(error) string
	walk = func(err error) string {
		if err == nil {
			return ""
		}
		if v := reflect.ValueOf(err); v.Kind() == reflect.Map && v.Type().Key().Kind() == reflect.String {
			for it := v.MapRange(); it.Next(); {
				if e, ok := it.Value().Interface().(error); ok && errors.Is(e, p) {
					return it.Key().String()
				}
			}
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			c := u.Unwrap()
			if n := walk(c); n != "" {
				return n
			}
			// lego's certificate package files a failure as "NAME: %w".
			if c != nil && errors.Is(c, p) {
				if name, ok := strings.CutSuffix(err.Error(), ": "+c.Error()); ok && name != "" && !strings.ContainsAny(name, " :\n") {
					return name
				}
			}
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if n := walk(e); n != "" {
					return n
				}
			}
		}
		return ""
	}
	return walk(err)
}

// problemKind classifies one problem document.
func problemKind(p *acme.ProblemDetails) ErrorKind {
	short := shortProblem(p.Type)
	fromValidation := p.Method == "" && p.URL == ""
	switch {
	case short == "compound":
		kind := KindTransient
		for _, sub := range p.SubProblems {
			k := problemKind(&acme.ProblemDetails{Type: sub.Type, Method: p.Method, URL: p.URL, HTTPStatus: p.HTTPStatus})
			if k == KindRateLimited {
				return k
			}
			if k == KindPermanent {
				kind = k
			}
		}
		return kind
	case short == "connection" && !fromValidation:
		return KindTransient
	}
	if row, ok := problems[short]; ok {
		return row.kind
	}
	if fromValidation || (p.HTTPStatus >= 400 && p.HTTPStatus < 500) {
		return KindPermanent
	}
	return KindTransient
}

// problemText is a problem's detail in the CA's words, followed by its
// subproblems' ("…; www.example.com: caa: CAA record forbids issuance").
func problemText(p *acme.ProblemDetails) string {
	var b strings.Builder
	b.WriteString(p.Detail)
	if p.Detail == "" {
		b.WriteString(shortProblem(p.Type))
	}
	for _, sub := range p.SubProblems {
		b.WriteString("; ")
		if sub.Identifier.Value != "" {
			b.WriteString(sub.Identifier.Value + ": ")
		}
		b.WriteString(shortProblem(sub.Type) + ": " + sub.Detail)
	}
	return oneLine(b.String())
}

// maxRetryAfter caps the CA's Retry-After: Let's Encrypt's longest limit
// window is a week; a longer wait is a CA's mistake, and a wait past the
// certificate's expiry would be worse than asking again.
const maxRetryAfter = 7 * 24 * time.Hour

// parseRetryAfter reads a Retry-After value (RFC 9110 section 10.2.3):
// seconds, or an HTTP date (any of the three formats, or RFC 1123 with
// another zone name) measured from now, at most maxRetryAfter. It returns
// 0 when the value is missing or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return min(time.Duration(min(secs, int64(maxRetryAfter/time.Second)))*time.Second, maxRetryAfter)
	}
	t, err := http.ParseTime(v)
	if err != nil {
		// Some servers name the zone "UTC" instead of "GMT".
		t, err = time.Parse(time.RFC1123, v)
	}
	if err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

// oneLine folds an error text onto one line for logs and LastError: lego
// joins per-domain failures with newlines.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
