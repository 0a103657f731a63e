// Package api holds the JSON documents of the certserver admin API, shared
// by the server (package certserver) and its clients (package
// certserver/client), and the few rules of their input that both apply
// (input.go).
//
// Every error answer of the admin API is an Error document:
//
//	{"error": "certificate expired on 2024-01-02T00:00:00Z", "reason": "expired"}
package api

import (
	"net/http"
	"strconv"
	"time"
)

// Error is the body of every 4xx and 5xx answer of the admin API. It
// implements error, so a client can return it as is.
type Error struct {
	// Status is the HTTP status code the error came with. It is not part of
	// the JSON document.
	Status int `json:"-"`
	// Message says what is wrong with the request, naming the bad input.
	Message string `json:"error"`
	// Reason is a short, stable phrase a program or an operator can branch
	// on ("expired", "key does not match", …); empty when Message says it
	// all.
	Reason string `json:"reason,omitempty"`
	// RetryAfter is how many seconds to wait before trying again, also
	// sent as the Retry-After header; 0 when it does not apply.
	RetryAfter int `json:"retry_after,omitempty"`
}

// Error returns the message, prefixed with the HTTP status when it is set.
func (e *Error) Error() string {
	if e.Status == 0 {
		return e.Message
	}
	return strconv.Itoa(e.Status) + " " + http.StatusText(e.Status) + ": " + e.Message
}

// Reasons given in Error.Reason and ImportResponse.Reason when a certificate
// is not imported.
const (
	ReasonExpired        = "expired"
	ReasonKeyMismatch    = "key does not match"
	ReasonNotCertificate = "not a certificate"
	ReasonBadKey         = "bad key"
	ReasonNoNames        = "no valid host name"
	ReasonInvalid        = "invalid certificate"
	ReasonNewerStored    = "a newer certificate is stored"
)

// ReasonDatabaseUnavailable is the Error.Reason of a 503 answered while a
// fleet's shared database (PostgreSQL) cannot be reached: the request
// was not carried out (the message says when a write cut off in its commit
// may have been made, or how much of a large bulk add was), and it can be
// sent again once the database is back.
const ReasonDatabaseUnavailable = "database unavailable"

// Results of an import, in ImportResponse.Result.
const (
	// ResultImported: the certificate was stored (new, or replacing an
	// older certificate with the same ID).
	ResultImported = "imported"
	// ResultUnchanged: the same certificate (same serial) was already
	// stored; nothing was written.
	ResultUnchanged = "unchanged"
	// ResultSkipped: a certificate with the same ID that expires later is
	// stored; nothing was written.
	ResultSkipped = "skipped"
)

// ResultRefused is the Result of a certificate of a batch import that
// was not imported because it is unusable (Reason says why: expired, key
// does not match, …) or its entry is malformed (Reason empty, Error says
// what is wrong), or, with Status 500, the store failed to write it
// after committing an earlier part of the batch (Error starts with "not
// stored"; sending it again may work). Nothing was written for it.
// POST /v1/certificates
// answers such a certificate with an Error instead.
const ResultRefused = "refused"

// MaxImportBatch is the most certificates one POST
// /v1/certificates/batch takes; more is refused with 413.
const MaxImportBatch = 1000

// Certificate sources accepted by an import.
const (
	SourceImport  = "import"
	SourceCertbot = "certbot"
)

// ImportRequest is the body of POST /v1/certificates.
type ImportRequest struct {
	// ChainPEM is the leaf certificate followed by its intermediates.
	ChainPEM string `json:"chain_pem"`
	// KeyPEM is the leaf's private key.
	KeyPEM string `json:"key_pem"`
	// Source is SourceImport (the default when empty) or SourceCertbot.
	Source string `json:"source,omitempty"`
	// Origin says where the certificate came from: a file path or a certbot
	// lineage directory. Optional, at most 4096 bytes.
	Origin string `json:"origin,omitempty"`
}

// ImportResponse is the body of a successful (200, 201) or skipped (409)
// answer to POST /v1/certificates.
type ImportResponse struct {
	// Result is ResultImported, ResultUnchanged or ResultSkipped.
	Result string `json:"result"`
	// Reason says why a certificate was skipped.
	Reason string `json:"reason,omitempty"`
	// ID is the certificate's record ID, its primary name.
	ID string `json:"id"`
	// Names are the names the certificate serves.
	Names []string `json:"names"`
	// Serial is the uploaded leaf's serial number in lowercase hex.
	Serial string `json:"serial"`
	// NotAfter is when the uploaded certificate expires.
	NotAfter time.Time `json:"not_after"`
	// StoredNotAfter is when the certificate that was kept expires, set when
	// Result is ResultSkipped.
	StoredNotAfter time.Time `json:"stored_not_after,omitzero"`
	// ReplacedSerial is the serial of the certificate an import replaced.
	ReplacedSerial string `json:"replaced_serial,omitempty"`
}

// ImportBatchResponse is the answer (200) of POST /v1/certificates/batch,
// whose body is a stream of ImportRequest objects, one per line (NDJSON),
// at most MaxImportBatch of them. Results holds one entry per object, in
// the order sent. Every certificate the answer reports as imported was
// committed before the answer was sent, in one atomic commit with the
// others of the batch. A batch too large for one commit of the store, far
// more than the certserver CLI sends, is split in as few as fit, in
// order; when one of them fails after an earlier one was committed, the
// answer is still 200: the certificates committed report as imported,
// the others as ResultRefused with Status 500 (or 422) and an Error
// starting "not stored", and sending the batch again stores them. A batch
// left unanswered (a crash, a timeout) may have been committed or not,
// each certificate whole or not at all; sending it again is harmless.
type ImportBatchResponse struct {
	Results []ImportResult `json:"results"`
}

// ImportResult is what became of one certificate of a batch import.
type ImportResult struct {
	// Status is what POST /v1/certificates would have answered for this
	// certificate alone: 201 imported as a new record, 200 imported
	// replacing one (ReplacedSerial) or unchanged, 409 skipped, 400 or
	// 422 refused (Result is ResultRefused).
	Status int `json:"status"`
	ImportResponse
	// Error says why a certificate was refused, naming the bad input.
	Error string `json:"error,omitempty"`
}

// AddDomainsRequest is the object form of the body of POST /v1/domains.
// The body may also be a JSON array of names, or text with one name per
// line (blank lines and "#" comments ignored).
type AddDomainsRequest struct {
	// Names are the host names to manage, each with a certificate of its
	// own. A wildcard ("*.shop.example") is proved with dns-01.
	Names []string `json:"names"`
	// Profile is the ACME profile to request for them ("" for the
	// configured default).
	Profile string `json:"profile,omitempty"`
	// ExtraNames makes the one name of Names and these one certificate:
	// that name is managed, and every order asks for it followed by
	// these ("*.shop.example" with "shop.example"). Only with exactly
	// one name in Names. A name already managed takes them as its extra
	// names.
	ExtraNames []string `json:"extra_names,omitempty"`
	// Challenge is the challenge the names' orders prove control with:
	// "http-01", "dns-01", "tls-alpn-01" or "auto" ("" for the configured
	// default, acme.challenge). A name already managed takes it too.
	Challenge string `json:"challenge,omitempty"`
}

// MaxInvalidListed is how many invalid names an AddDomainsResponse lists
// at most; InvalidCount counts them all.
const MaxInvalidListed = 10000

// InvalidName is a name POST /v1/domains refused.
type InvalidName struct {
	// Line is the 1-based position of the name in the array, or its line
	// in a text body.
	Line int `json:"line"`
	// Name is the name as given (cut at 256 bytes).
	Name string `json:"name"`
	// Error says what is wrong with it.
	Error string `json:"error"`
}

// AddDomainsResponse is the body of a 200 answer to POST /v1/domains.
type AddDomainsResponse struct {
	// Added counts the names that came under management, including removed
	// names that were managed again.
	Added int `json:"added"`
	// Existing counts the names that were managed already (and names given
	// twice, the second time); they are left as they are, but for the
	// challenge and extra names the request gives (Updated).
	Existing int `json:"existing"`
	// Updated counts the names of Existing whose challenge or extra
	// names the request changed.
	Updated int `json:"updated,omitempty"`
	// Invalid lists the refused names in the order given, the first
	// MaxInvalidListed of them. Never null.
	Invalid []InvalidName `json:"invalid"`
	// InvalidCount counts every refused name.
	InvalidCount int `json:"invalid_count"`
}

// DomainRecord is what certserver knows about a managed name, without its
// certificate. Times that are not set are left out.
type DomainRecord struct {
	// Name is the normalized host name.
	Name string `json:"name"`
	// State is "pending", "issuing", "valid", "renewing", "failing" or
	// "removed".
	State string `json:"state"`
	// Profile is the ACME profile requested ("" for the default).
	Profile string `json:"profile"`
	// Source says how the name came under management: "api", "on-demand", ….
	Source string `json:"source"`
	// NextAttempt is when the renewer next looks at the name.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// Failures counts consecutive failed orders.
	Failures int `json:"failures"`
	// LastError is the last failure in the CA's words.
	LastError string `json:"last_error"`
	// FailingSince is when the current run of failures began.
	FailingSince time.Time `json:"failing_since,omitzero"`
	// AddedAt and UpdatedAt are when the record was created and last
	// written.
	AddedAt   time.Time `json:"added_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// ExtraNames are the other names of the name's one certificate, which
	// every order asks for with Name (a certbot lineage, a wildcard with
	// its apex); left out for a certificate for Name alone.
	ExtraNames []string `json:"extra_names,omitempty"`
	// ManagedWith is the managed name whose certificate serves this name
	// and is renewed for it: this name is one of that name's ExtraNames
	// and is never ordered alone. Left out for a name managed on its own.
	ManagedWith string `json:"managed_with,omitempty"`
	// Challenge is the challenge the name asks for: "http-01", "dns-01",
	// "tls-alpn-01", "auto", or "" for the configured default. The
	// challenge each order used, or could not use, is in its attempt.
	Challenge string `json:"challenge"`
}

// Domain is the body of GET /v1/domains/{name} and of the answer to
// DELETE /v1/domains/{name}.
type Domain struct {
	DomainRecord
	// Certificate is the certificate that serves the name now (its own, or
	// a wildcard's), or nil.
	Certificate *CertificateInfo `json:"certificate"`
	// Revoked is set in the answer to DELETE /v1/domains/{name}?revoke=
	// and says what was revoked.
	Revoked *Revocation `json:"revoked,omitempty"`
	// RecentAttempts are the name's last orders, newest first (at most
	// 10): when each ended, "issued", "failed" or "refused" (by the
	// pre-flight, before the CA was asked), the error and the new serial.
	RecentAttempts []Attempt `json:"recent_attempts"`
	// DNS01CNAME is the record the name's owner creates once so that
	// certserver's own DNS zone ([dns01.zone]) answers the name's DNS-01
	// challenges: "_acme-challenge.NAME. CNAME LABEL.ZONE." (the same for
	// the name and its wildcard). Left out when no zone is configured, and
	// for a name whose orders never go through it: one that asks for
	// http-01 or tls-alpn-01 (itself, or by the default acme.challenge),
	// without a wildcard among its names.
	DNS01CNAME string `json:"dns01_cname,omitempty"`
}

// Attempt is one order for a name and how it ended.
type Attempt struct {
	At      time.Time `json:"at"`
	Outcome string    `json:"outcome"`
	Error   string    `json:"error,omitempty"`
	Serial  string    `json:"serial,omitempty"`
	// Challenge is the challenge the order proved control with, or the
	// one the name could not use when it was refused for it ("dns-01
	// asked for, and it is not available: ..." in Error).
	Challenge string `json:"challenge,omitempty"`
	// TookMS is how long the attempt ran, in milliseconds.
	TookMS int64 `json:"took_ms"`
}

// CertificateInfo describes a stored certificate. It never holds key
// material.
type CertificateInfo struct {
	ID        string    `json:"id"`
	Names     []string  `json:"names"`
	Serial    string    `json:"serial"`
	Issuer    string    `json:"issuer"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// RenewAt is when the certificate is due for renewal; left out when
	// nobody renews it.
	RenewAt time.Time `json:"renew_at,omitzero"`
	KeyType string    `json:"key_type"`
	// Source is store.Source: "acme", "import" or "certbot"; Origin details it.
	Source string `json:"source"`
	Origin string `json:"origin"`
}

// DomainSummary is one entry of GET /v1/domains.
type DomainSummary struct {
	DomainRecord
	// Certificate summarizes the certificate that serves the name now, or
	// is nil.
	Certificate *CertificateSummary `json:"certificate"`
}

// CertificateSummary is the short form of CertificateInfo in listings.
type CertificateSummary struct {
	ID       string    `json:"id"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
	RenewAt  time.Time `json:"renew_at,omitzero"`
}

// DomainList is the body of GET /v1/domains.
type DomainList struct {
	// Domains are in name order. Never null.
	Domains []DomainSummary `json:"domains"`
	// Next is the after= value of the next page, "" on the last one. A
	// filtered page may hold fewer than limit names, even none, and still
	// have a Next: its scan stopped after ListDomainsScan records.
	Next string `json:"next"`
	// Scanned counts the records read for this page.
	Scanned int `json:"scanned"`
}

// Limits of GET /v1/domains?limit=N.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// RenewResponse is the body of the 202 answer to POST
// /v1/domains/{name}/renew.
type RenewResponse struct {
	Name string `json:"name"`
	// Queued is true when the renewer took the name ahead of its queue;
	// false when issuance is off or its queue was full, in which case the
	// name is only due now.
	Queued bool `json:"queued"`
}

// ListDomainsScan is how many records one page of GET /v1/domains reads at
// most when it is filtered; DomainList.Scanned says how many it read.
const ListDomainsScan = 100000

// Revocation reason codes of RFC 5280 section 5.3.1, for RevokeRequest.
// Code 7 is not used.
const (
	ReasonCodeUnspecified          = 0
	ReasonCodeKeyCompromise        = 1
	ReasonCodeCACompromise         = 2
	ReasonCodeAffiliationChanged   = 3
	ReasonCodeSuperseded           = 4
	ReasonCodeCessationOfOperation = 5
	ReasonCodeCertificateHold      = 6
	ReasonCodeRemoveFromCRL        = 8
	ReasonCodePrivilegeWithdrawn   = 9
	ReasonCodeAACompromise         = 10
)

// RevocationReason returns the RFC 5280 name of a reason code
// ("keyCompromise"), or "" for a code that is not one.
func RevocationReason(code int) string {
	switch code {
	case ReasonCodeUnspecified:
		return "unspecified"
	case ReasonCodeKeyCompromise:
		return "keyCompromise"
	case ReasonCodeCACompromise:
		return "cACompromise"
	case ReasonCodeAffiliationChanged:
		return "affiliationChanged"
	case ReasonCodeSuperseded:
		return "superseded"
	case ReasonCodeCessationOfOperation:
		return "cessationOfOperation"
	case ReasonCodeCertificateHold:
		return "certificateHold"
	case ReasonCodeRemoveFromCRL:
		return "removeFromCRL"
	case ReasonCodePrivilegeWithdrawn:
		return "privilegeWithdrawn"
	case ReasonCodeAACompromise:
		return "aACompromise"
	}
	return ""
}

// RevokeRequest is the body of POST /v1/domains/{name}/revoke.
type RevokeRequest struct {
	// Reason is an RFC 5280 reason name ("keyCompromise", "superseded",
	// …; see RevocationReason), or its code as a string of digits. The
	// server also takes the code as a JSON number.
	Reason string `json:"reason"`
}

// Revocation is the body of the 200 answer to POST
// /v1/domains/{name}/revoke, and part of the answer to DELETE
// /v1/domains/{name}?revoke=REASON.
type Revocation struct {
	// Name is the managed name the request was for.
	Name string `json:"name"`
	// CertificateID and Serial identify the revoked certificate.
	CertificateID string `json:"certificate_id"`
	Serial        string `json:"serial"`
	// Names are all the names the revoked certificate served.
	Names []string `json:"names"`
	// Reason and ReasonCode are the RFC 5280 reason sent to the CA.
	Reason     string `json:"reason"`
	ReasonCode int    `json:"reason_code"`
	// Reordered lists the managed names the revoked certificate serves,
	// now due for a new one (Name among them, unless it is being
	// removed). The revoked certificate is due for renewal now too, and
	// is served until a new one is stored.
	Reordered []string `json:"reordered"`
	// Queued is true when the renewer took the reordered names ahead of
	// its queue; false when issuance is off or its queue was full (they
	// are due now all the same).
	Queued bool `json:"queued"`
	// KeyShared is what became of the certificate's private key beyond
	// it, for a revocation for keyCompromise; nil for other reasons.
	KeyShared *KeyShared `json:"key_shared,omitempty"`
	// Message says the above in a sentence.
	Message string `json:"message"`
}

// KeyShared is what a revocation for keyCompromise did about the other
// certificates on the same private key: with [keys] reuse = "pool" many
// certificates share one.
type KeyShared struct {
	// KeyID identifies the key: the SHA-256 of its public key, hex.
	KeyID string `json:"key_id"`
	// PoolSlots is how many slots of the key pool held the key; they are
	// emptied before any name is made due, so no new order takes it, and
	// an order that took it before finds it gone when its certificate
	// comes and discards that certificate (the name is ordered again).
	// Not covered: a certificate that passed that check just before the
	// removal and is stored after the search for the certificates on the
	// key (Certificates) passed its ID keeps the key until its next
	// renewal; the key is remembered nowhere once removed.
	PoolSlots int `json:"pool_slots"`
	// Certificates is how many other certificates use the key. Each is
	// due for renewal now (onto a new key), and served until it is
	// replaced; none of them is revoked.
	Certificates int `json:"certificates"`
	// Reordered is how many managed names those certificates serve, now
	// due for a new certificate. They follow the due index (the
	// renewer's pace and rate limits), not ahead of the queue.
	Reordered int `json:"reordered"`
}

// Count is a number that counting may have cut short.
type Count struct {
	N int `json:"n"`
	// AtLeast is true when counting stopped early: the true number is N
	// or more.
	AtLeast bool `json:"at_least,omitempty"`
}

// MaxDueCount caps the counts of due names in Queue.
const MaxDueCount = 1000000

// Queue is the body of GET /v1/queue: what the renewer has to do.
type Queue struct {
	// Now is the server's time the counts are relative to.
	Now time.Time `json:"now"`
	// DueNow, DueWithinHour and DueWithinDay count the names whose next
	// attempt is at or before now, now+1h and now+24h (each count
	// includes the ones before it), from the due index; AtLeast when
	// more than MaxDueCount are due.
	DueNow        Count `json:"due_now"`
	DueWithinHour Count `json:"due_within_hour"`
	DueWithinDay  Count `json:"due_within_day"`
	// Issuance is false when the server runs no renewer: names wait.
	Issuance bool `json:"issuance"`
	// InFlight is how many orders the renewer's workers have under way.
	InFlight int `json:"in_flight"`
	// Throughput is how many names the renewer finished per second over
	// the last 15 minutes, whatever the outcome.
	Throughput float64 `json:"throughput_per_second"`
	// BacklogDoneAt is when the names due now will have been worked on at
	// Throughput; left out when nothing is due or Throughput is 0.
	BacklogDoneAt time.Time `json:"backlog_done_at,omitzero"`
	// States counts managed names by state ("pending", "valid", …; every
	// state is present). It comes from a scan of the domain records that
	// is bounded in time and reused for a few seconds, or in a store of
	// 50,000 names or more from the last metrics inventory while it is
	// fresh: StatesComplete says whether the scan read every record,
	// StatesScanned how many it read and StatesAt when it ran.
	States         map[string]int `json:"states"`
	StatesScanned  int            `json:"states_scanned"`
	StatesComplete bool           `json:"states_complete"`
	StatesAt       time.Time      `json:"states_at"`
	// Failing counts names in a run of failed attempts (failures > 0,
	// not removed), Pending names waiting for their first certificate;
	// from the same scan, AtLeast when it was cut short.
	Failing Count `json:"failing"`
	Pending Count `json:"pending"`
	// Plan says when the pending names will have been ordered at the CAs'
	// new-order rate limits (the enrollment planner); left out when the
	// server runs no renewer.
	Plan *Plan `json:"plan,omitempty"`
	// CAs are the CAs the renewer orders from, in the configured order,
	// with their counters and rate limits; left out when the server runs
	// no renewer.
	CAs []CAStatus `json:"cas,omitempty"`
}

// CAStatus is one CA as the renewer sees it: what it sent there since it
// started, whether the CA is resting after failures, and its account's
// rate-limit buckets.
type CAStatus struct {
	Name      string `json:"name"`
	Directory string `json:"directory,omitempty"`
	// OffersARI says renewal information is polled and ARI renewals are
	// exempt from the limits.
	OffersARI bool `json:"offers_ari"`
	// Orders reached the CA; Issued, Failed and RateLimited split them.
	Orders      int64 `json:"orders"`
	Issued      int64 `json:"issued"`
	Failed      int64 `json:"failed"`
	RateLimited int64 `json:"rate_limited"`
	// Deferred counts orders the account's limits held back before they
	// were sent; Refused those the pre-flight check refused for this CA.
	Deferred int64 `json:"deferred"`
	Refused  int64 `json:"refused"`
	// ARIPolls counts renewal information requests, ARIPollErrors the
	// failed ones, WindowsMoved the polls that moved a renewal.
	ARIPolls      int64 `json:"ari_polls"`
	ARIPollErrors int64 `json:"ari_poll_errors"`
	WindowsMoved  int64 `json:"windows_moved"`
	// FailureStreak is how many orders in a row failed for reasons of the
	// CA's own; RestingUntil, when set, is until when the other CAs go
	// first.
	FailureStreak int       `json:"failure_streak"`
	RestingUntil  time.Time `json:"resting_until,omitzero"`
	// Limits are the account's rate limits; empty when it has none.
	Limits []LimitStatus `json:"limits,omitempty"`
	// FleetLimits says Limits are the fleet's budget: on a fleet host
	// the account's buckets are kept in the fleet's database and every
	// host spends them, so they count the whole fleet's orders.
	// LimitsUnavailable says they could not be read from the database
	// just now (Limits is then empty).
	FleetLimits       bool `json:"fleet_limits,omitempty"`
	LimitsUnavailable bool `json:"limits_unavailable,omitempty"`
}

// LimitStatus is one rate limit of a CA account across its buckets.
type LimitStatus struct {
	// Limit names it: "new_orders_per_account",
	// "certificates_per_registered_domain", "certificates_per_exact_set",
	// "authorization_failures_per_identifier",
	// "consecutive_authorization_failures_per_identifier",
	// "new_order_requests".
	Limit string `json:"limit"`
	// Scope is what one bucket counts: "account", "registered domain",
	// "exact set" or "name".
	Scope string `json:"scope"`
	// Burst per PerSeconds is the limit; Burst is -1 when unlimited.
	Burst      int     `json:"burst"`
	PerSeconds float64 `json:"per_seconds"`
	// Tracked is how many buckets are below full, Blocked how many hold
	// less than one token (orders that need them wait).
	Tracked int `json:"tracked"`
	Blocked int `json:"blocked"`
	// Buckets is the account-wide bucket, or the blocked buckets that
	// free up soonest (at most 100).
	Buckets []Bucket `json:"buckets,omitempty"`
}

// Bucket is one rate-limit bucket.
type Bucket struct {
	// Key is the registered domain, exact set or name; "" for the
	// account-wide bucket.
	Key string `json:"key,omitempty"`
	// Tokens is how many orders it allows now (fractions are a token on
	// its way).
	Tokens float64 `json:"tokens"`
	// Available is when it next holds a whole token, Full when it is full
	// again.
	Available time.Time `json:"available"`
	Full      time.Time `json:"full"`
}

// Plan is how long the names waiting for their first certificate take to
// order at the current new-order limits of the CAs' accounts: 500,000 new
// names at Let's Encrypt's 300 per 3 hours take about 208 days, which is
// the time to ask the CA for a rate limit override.
type Plan struct {
	// Pending is how many names the plan is for.
	Pending int `json:"pending"`
	// Limited is false when a CA has no new-order limit: then only the
	// workers bound the pace, and DoneAt is now.
	Limited bool `json:"limited"`
	// DoneInSeconds is how long until the last pending name can be
	// ordered; DoneAt is when.
	DoneInSeconds float64   `json:"done_in_seconds"`
	DoneAt        time.Time `json:"done_at"`
	// OrdersPerSecond is how many new orders a second the CAs' limits
	// allow together once their bursts are spent.
	OrdersPerSecond float64 `json:"orders_per_second"`
	// CAs are the CAs' parts, in the configured order.
	CAs []PlanCA `json:"cas"`
}

// PlanCA is one CA's part of a Plan.
type PlanCA struct {
	Name string `json:"name"`
	// Room is how many new orders its account can send now; -1 without a
	// limit.
	Room float64 `json:"room"`
	// OrdersPerSecond is its limit's refill rate (0 without a limit).
	OrdersPerSecond float64 `json:"orders_per_second"`
	// Fleet says Room and OrdersPerSecond are the fleet's budget, which
	// every host of the fleet spends, not this host's share.
	Fleet bool `json:"fleet,omitempty"`
	// Orders is how many of the pending names it takes in the plan.
	Orders int `json:"orders"`
}

// Fleet is the body of GET /v1/fleet: a fleet host's state ([fleet]),
// and the hosts of its fleet. A host without [fleet] answers 404.
type Fleet struct {
	FleetStatus
	// Hosts lists every host that ever reported to the shared database,
	// in name order; left out, with HostsError saying why, when the
	// database could not be asked.
	Hosts      []FleetHost `json:"hosts,omitempty"`
	HostsError string      `json:"hosts_error,omitempty"`
	// LatestVersion is the database's newest version when Hosts was read:
	// each host's LagVersions is counted from it.
	LatestVersion uint64 `json:"latest_version,omitempty"`
}

// FleetStatus is this host's place in its fleet, as its follower sees it.
type FleetStatus struct {
	// Host is this host's name in the fleet ([fleet] host_name).
	Host string `json:"host"`
	// Renews says whether this host's renewer orders certificates.
	Renews bool `json:"renews"`
	// Ready is true once the local copy has caught up with the database
	// since the start (or, the database being down at start, holds a copy
	// from before): the certificate endpoint serves from it.
	Ready bool `json:"ready"`
	// Database is the state of the shared database.
	Database FleetDatabase `json:"database"`
	// Replica is how far the local copy is behind the database.
	Replica FleetReplica `json:"replica"`
	// InFlight is how many orders this host's renewer has under way now.
	InFlight int `json:"in_flight"`
	// LeasesHeld is how many names this host holds a lease on (the work
	// it has claimed), as last read from the database (every 10 s).
	LeasesHeld int `json:"leases_held"`
	// LeasesError is why the last count of the leases failed ("" when it
	// did not): LeasesHeld is then the last count that succeeded, stale.
	LeasesError string `json:"leases_error,omitempty"`
}

// FleetDatabase says whether the fleet's database answers.
type FleetDatabase struct {
	// Up is false while the database cannot be reached: handshakes go on
	// from the local copy, admin writes answer 503 and no certificate is
	// ordered.
	Up bool `json:"up"`
	// Since is when the database went down (Up false), or came back or
	// was first reached (Up true).
	Since time.Time `json:"since,omitzero"`
	// Error is the last failure while down. It names the database's host
	// and the cause, never the password.
	Error string `json:"error,omitempty"`
}

// FleetReplica is the lag of a host's local copy.
type FleetReplica struct {
	// Applied is the version of the last change the local copy applied;
	// Latest the newest version the host knows the database has.
	Applied uint64 `json:"applied"`
	Latest  uint64 `json:"latest"`
	// LagVersions is Latest - Applied; LagSeconds how long the oldest
	// change not yet applied has been waiting (0 when none is).
	LagVersions uint64  `json:"lag_versions"`
	LagSeconds  float64 `json:"lag_seconds"`
	// SyncError is why the copy cannot follow while the database answers
	// ("" when it can): the local copy cannot be written, or the database
	// no longer holds changes the copy lacks (a host away for longer than
	// the database keeps removals: rebuild its copy, see the README).
	SyncError string `json:"sync_error,omitempty"`
}

// FleetHost is one host of a fleet as the shared database knows it.
type FleetHost struct {
	Name string `json:"name"`
	// Applied is the last version the host's copy applied when it last
	// reported; LagVersions is the database's latest version minus it.
	Applied     uint64 `json:"applied"`
	LagVersions uint64 `json:"lag_versions"`
	// LagSeconds is how long the oldest change the host's copy lacked
	// had waited when it last reported (0 when in step).
	LagSeconds float64 `json:"lag_seconds"`
	// SeenAt is when the host last reported (every 10 s while it runs);
	// Gone says it has not for FleetHostGoneAfter or more: stopped, cut
	// off from the database, or removed from the fleet.
	SeenAt time.Time `json:"seen_at"`
	Gone   bool      `json:"gone"`
	// Renews says whether the host's renewer orders certificates.
	Renews bool `json:"renews"`
	// LeasesHeld is how many names the host holds an unexpired lease on;
	// InFlight how many orders its renewer had under way when it last
	// reported.
	LeasesHeld int `json:"leases_held"`
	InFlight   int `json:"in_flight"`
}

// FleetHostGoneAfter is how long a host may go without reporting before
// GET /v1/fleet calls it gone: six of its reports every 10 s.
const FleetHostGoneAfter = time.Minute

// RotateKeysRequest is the body of POST /v1/keys/rotate: one batch of the
// re-encryption of stored private keys under the current key-encryption
// key.
type RotateKeysRequest struct {
	// Cursor is the Next of the previous answer; "" starts at the
	// beginning.
	Cursor string `json:"cursor,omitempty"`
	// Limit is how many records the batch reads: 1 to MaxRotateBatch,
	// default DefaultRotateBatch.
	Limit int `json:"limit,omitempty"`
}

// Limits of RotateKeysRequest.Limit.
const (
	DefaultRotateBatch = 500
	MaxRotateBatch     = 5000
)

// KeyRotation is the answer to POST /v1/keys/rotate.
type KeyRotation struct {
	// KeyID is the current key-encryption key's ID.
	KeyID string `json:"key_id"`
	// Kind is the kind of the records the batch read: "certificate",
	// "account" or "pool" (a key of the key pool).
	Kind string `json:"kind"`
	// Total is how many records hold a private key (certificates, ACME
	// accounts and the key pool's keys), counted for a request without a
	// cursor; 0 otherwise.
	Total int `json:"total,omitempty"`
	// Scanned is how many records the batch read, Resealed how many of
	// them it encrypted under the current key (the others already were,
	// or are in Failed).
	Scanned  int `json:"scanned"`
	Resealed int `json:"resealed"`
	// Failed are the records whose private key could not be decrypted:
	// left as they are.
	Failed []KeyFailure `json:"failed,omitempty"`
	// Next is the cursor of the next batch; "" when Done.
	Next string `json:"next,omitempty"`
	// Done says every record has been read.
	Done bool `json:"done"`
}

// KeyFailure is a record whose private key could not be decrypted.
type KeyFailure struct {
	// Kind is "certificate", "account" or "pool" (ID is then the pool
	// key's ID).
	Kind string `json:"kind"`
	ID   string `json:"id"`
	// Error says why, naming the key ID.
	Error string `json:"error"`
}
