// Package store keeps everything certserver knows: certificates with their
// private keys, the names under management with their renewal state, ACME
// accounts and pending HTTP-01 challenge tokens.
//
// Store is the contract. Badger (badger.go) is the implementation every
// sidecar uses for its local copy; a shared engine for fleets (PostgreSQL)
// is meant to be a second implementation of the same interface.
//
// Every name handed to a Store must already be normalized with
// hostname.Normalize or hostname.NormalizePattern: the store compares names
// byte for byte and does not normalize again.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrNotFound is returned (possibly wrapped) when a record does not exist.
// Callers test for it with errors.Is.
var ErrNotFound = errors.New("not found")

// ErrBatchTooLarge is wrapped by the error of PutCertificates when the
// batch does not fit in one atomic write. Nothing is written.
var ErrBatchTooLarge = errors.New("batch too large for one write")

// ErrInvalid is wrapped by errors about a record that cannot be stored
// because a field is missing or malformed. Nothing is written when it is
// returned.
var ErrInvalid = errors.New("invalid record")

// Store is the persistent state of one certserver.
//
// Implementations are safe for concurrent use by many goroutines. Every
// method that takes a context stops waiting when it is done, returning an
// error that wraps the context's, and a write called with a context that
// is done writes nothing. Writes are atomic: a record and its indexes
// change together or not at all, and a write that returned nil survives a
// crash of the process. "The current time" is the store's clock (an
// option of each implementation, so that tests can set it). A limit below
// 1 returns nothing. The package storetest checks every rule stated here;
// every implementation runs it.
type Store interface {
	// PutCertificate stores c under c.ID, replacing any record with that ID,
	// and points every name in c.Names at it. Names that the replaced record
	// held and c does not are unlinked. When another record already serves
	// one of c.Names, the name is re-pointed at c (the newest write wins).
	// When the record serving a name goes away (deleted, or replaced by
	// one without the name), the name falls back to the other record that
	// lists it with the latest StoredAt among those whose NotAfter has
	// not passed, else it is unlinked. c.ID, c.Names, c.ChainPEM and
	// c.KeyPEM must be set, and every name normalized (ErrInvalid). A zero
	// StoredAt is stored as the current time; c itself is not changed.
	PutCertificate(ctx context.Context, c *Certificate) error

	// PutCertificates stores every certificate of cs as PutCertificate
	// does, in order (a later one with the ID of an earlier one replaces
	// it), in one atomic write: all of them survive a crash or none does.
	// Each must be valid as PutCertificate requires (ErrInvalid, naming
	// its position as "#N", counting from 1; nothing is written). A batch too large for one atomic
	// write returns ErrBatchTooLarge and writes nothing: write it in
	// smaller parts. No certificates is no write.
	PutCertificates(ctx context.Context, cs []*Certificate) error

	// GetCertificate returns the record stored under id, or ErrNotFound.
	GetCertificate(ctx context.Context, id string) (*Certificate, error)

	// LookupCertificate returns the certificate that serves name, a
	// normalized host name (never a wildcard pattern): the record linked to
	// name itself, else the one linked to the wildcard one label up
	// ("a.example.com" -> "*.example.com"; never deeper, never "*.com"), else
	// ErrNotFound. This is the certificate endpoint's path and must be fast.
	LookupCertificate(ctx context.Context, name string) (*Certificate, error)

	// DeleteCertificate removes the record stored under id and unlinks the
	// names that pointed at it (each falls back as PutCertificate says).
	// Deleting a missing record returns ErrNotFound.
	DeleteCertificate(ctx context.Context, id string) error

	// ListCertificates returns up to limit records in ID order, starting
	// after the ID after ("" starts at the beginning).
	ListCertificates(ctx context.Context, after string, limit int) ([]*Certificate, error)

	// PutDomain creates or replaces the management record of d.Name and moves
	// its entry in the due index to d.NextAttempt (a zero NextAttempt takes
	// it out of the index). d.Name must be normalized and d's other names
	// as Domain says (ErrInvalid). A zero AddedAt keeps the replaced
	// record's, and a zero AddedAt of a new record and a zero UpdatedAt
	// are stored as the current time; d itself is not changed.
	PutDomain(ctx context.Context, d *Domain) error

	// UpdateDomain changes the record of name in one transaction: it reads
	// the record, calls fn with a copy and writes what fn leaves, moving the
	// due entry as PutDomain does. No other write to the record comes
	// between the read and the write, so concurrent writers (the renewer
	// finishing an order, an operator removing the name) never lose each
	// other's changes. fn must not change the name, and must leave a
	// record PutDomain would take (ErrInvalid, nothing written); fn
	// returning an error writes nothing and UpdateDomain returns that
	// error. An UpdatedAt that fn leaves zero or unchanged is stored as the
	// current time. fn may be called more than once and must not keep
	// state across calls. A missing record returns ErrNotFound without
	// calling fn.
	UpdateDomain(ctx context.Context, name string, fn func(*Domain) error) error

	// AddDomains creates a record for every domain in ds whose name is not
	// yet managed, in large batched transactions, and leaves existing ones
	// untouched. It returns how many were added and how many existed; a
	// name given twice is added the first time and counts as existing the
	// second. Every domain must be valid as PutDomain requires: one that
	// is not returns ErrInvalid before anything is written. Zero AddedAt
	// and UpdatedAt are stored as the current time.
	AddDomains(ctx context.Context, ds []*Domain) (added, existing int, err error)

	// GetDomain returns the management record of name, or ErrNotFound.
	GetDomain(ctx context.Context, name string) (*Domain, error)

	// DeleteDomain removes the management record of name and its due entry.
	// It does not touch certificates. A missing record returns ErrNotFound.
	DeleteDomain(ctx context.Context, name string) error

	// ListDomains returns up to limit domain records in name order, starting
	// after the name after ("" starts at the beginning).
	ListDomains(ctx context.Context, after string, limit int) ([]*Domain, error)

	// Due returns up to limit entries of the due index whose time is at or
	// before `before`, earliest first (ties in name order). Its cost grows
	// with the entries returned, not with the size of the store.
	Due(ctx context.Context, before time.Time, limit int) ([]DueEntry, error)

	// PutAccount creates or replaces the ACME account stored under a.ID,
	// which must be set (ErrInvalid).
	PutAccount(ctx context.Context, a *Account) error

	// GetAccount returns the account stored under id, or ErrNotFound.
	GetAccount(ctx context.Context, id string) (*Account, error)

	// PutChallenge stores the key authorization of an HTTP-01 token
	// (RFC 8555 section 8.3) until expires: from then on it reads as
	// missing. A token put again is replaced. token and keyAuth must be
	// non-empty (ErrInvalid).
	PutChallenge(ctx context.Context, token, keyAuth string, expires time.Time) error

	// GetChallenge returns the key authorization of token, or ErrNotFound.
	GetChallenge(ctx context.Context, token string) (string, error)

	// DeleteChallenge removes token. Removing a missing token is not an error.
	DeleteChallenge(ctx context.Context, token string) error

	// PutRateBuckets saves rate-limit buckets of scope (one ACME account)
	// so that a restart keeps what was spent. Each is kept until its Full
	// time, after which it reads as missing (a full bucket is the same as
	// none); a bucket whose Full time has passed is removed. scope and
	// each Limit must be non-empty, and they and the Keys free of NUL
	// bytes (ErrInvalid).
	PutRateBuckets(ctx context.Context, scope string, bs []RateBucket) error

	// RateBuckets returns the saved buckets of scope that are not full
	// yet, in the order of their Limit, then Key. A scope PutRateBuckets
	// refuses is refused here too (ErrInvalid).
	RateBuckets(ctx context.Context, scope string) ([]RateBucket, error)

	// Close flushes and releases the store. No method may be called after it.
	Close() error
}

// Certificate is one certificate chain with its private key and what is
// known about it. The PEM fields hold secrets: never log a Certificate whole.
type Certificate struct {
	// ID is the record's key: the first name of the certificate (its
	// primary name, a normalized host name or wildcard pattern).
	ID string `json:"id"`
	// Names are the normalized names the certificate serves, from its SANs
	// (or its CN when it has no DNS SANs), ID first.
	Names []string `json:"names"`
	// ChainPEM is the leaf followed by its intermediates, PEM encoded.
	ChainPEM []byte `json:"chain_pem"`
	// KeyPEM is the leaf's private key, PEM encoded.
	KeyPEM []byte `json:"key_pem"`
	// NotBefore and NotAfter are the leaf's validity period.
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	// Issuer is the leaf issuer's distinguished name.
	Issuer string `json:"issuer"`
	// Serial is the leaf's serial number in lowercase hex.
	Serial string `json:"serial"`
	// KeyType describes the key (KeyECDSAP256, KeyRSA2048, …).
	KeyType KeyType `json:"key_type"`
	// Source says where the certificate came from: SourceImport,
	// SourceCertbot or SourceACME.
	Source Source `json:"source"`
	// Origin details Source: a file path, a certbot lineage directory, or an
	// ACME directory URL.
	Origin string `json:"origin,omitempty"`
	// RenewAt is when the certificate should be replaced; zero when nobody
	// renews it (an imported certificate whose names are not managed).
	RenewAt time.Time `json:"renew_at,omitzero"`
	// StoredAt is when the record was written.
	StoredAt time.Time `json:"stored_at"`

	// parsed is what ParseCertificate decoded of the ChainPEM and KeyPEM
	// it returned, for the record's encoding (encodeCertificate), which
	// uses it only while they are the same slices holding the same bytes;
	// nil in a value built any other way (a copy of the value carries it
	// along). Nothing else refers to it: it lives as long as the value,
	// and holds no secret that KeyPEM does not.
	parsed *parsedChain
}

// Source is where a certificate came from.
type Source string

// The sources of a certificate.
const (
	SourceACME    Source = "acme"    // ordered by the renewer; Origin is the CA's directory URL
	SourceImport  Source = "import"  // imported from files; Origin is their path
	SourceCertbot Source = "certbot" // imported from a certbot lineage; Origin is its directory
)

// KeyType names the type and size of a certificate's key. ParseCertificate
// names any key it accepts: the constants below, "rsaN" for an RSA key of
// another size N, "ecdsa" for another curve.
type KeyType string

// The key types with a name of their own.
const (
	KeyECDSAP256 KeyType = "ecdsa-p256"
	KeyECDSAP384 KeyType = "ecdsa-p384"
	KeyECDSAP521 KeyType = "ecdsa-p521"
	KeyRSA2048   KeyType = "rsa2048"
	KeyRSA4096   KeyType = "rsa4096"
	KeyEd25519   KeyType = "ed25519"
	KeyUnknown   KeyType = "unknown"
)

// RateBucket is one saved bucket of a CA account's rate limits (see
// renewer/ratelimit.Limiter).
type RateBucket struct {
	// Limit names the limit ("new_orders_per_account", …).
	Limit string `json:"limit"`
	// Key names the bucket within the limit: a registered domain, an
	// exact set of names, a name; "" for an account-wide bucket.
	Key string `json:"key,omitempty"`
	// Full is when the bucket is full again.
	Full time.Time `json:"full"`
}

// State is where a managed name stands in its life cycle.
type State string

// The states of a managed name.
const (
	StatePending  State = "pending"  // added, no certificate yet, waiting for its first order
	StateIssuing  State = "issuing"  // first order under way
	StateValid    State = "valid"    // holds a certificate, next renewal scheduled
	StateRenewing State = "renewing" // renewal order under way
	StateFailing  State = "failing"  // last attempt failed; retried at NextAttempt
	StateRemoved  State = "removed"  // no longer managed; kept for the record
	StateGivenUp  State = "given_up" // failed for too long; parked until an operator acts
)

// States lists every State, in life-cycle order.
var States = []State{StatePending, StateIssuing, StateValid, StateRenewing, StateFailing, StateGivenUp, StateRemoved}

// Domain is the management record of one name: what certserver is doing
// about its certificate.
type Domain struct {
	// Name is the normalized host name or wildcard pattern; the record's key.
	Name string `json:"name"`
	// State is the current life-cycle state.
	State State `json:"state"`
	// Profile is the ACME profile to request; "" means the configured default.
	Profile string `json:"profile,omitempty"`
	// CertID is the ID of the certificate that serves the name, if any.
	CertID string `json:"cert_id,omitempty"`
	// NextAttempt is when the renewer next looks at the name; it is the
	// name's position in the due index. Zero means never.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// Failures counts consecutive failed attempts; a success resets it.
	Failures int `json:"failures,omitempty"`
	// LastError is the last failure in the CA's own words ("" after success).
	LastError string `json:"last_error,omitempty"`
	// FailingSince is when the current run of failures began.
	FailingSince time.Time `json:"failing_since,omitzero"`
	// Source says how the name came under management: "cli", "api",
	// "on-demand", "import".
	Source string `json:"source,omitempty"`
	// AddedAt and UpdatedAt are when the record was created and last written.
	AddedAt   time.Time `json:"added_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Attempts are the most recent orders for the name and how they ended,
	// newest first; AddAttempt keeps at most RecentAttempts of them.
	Attempts []Attempt `json:"attempts,omitempty"`
	// ExtraNames are the other names of the name's certificate: one
	// certificate serves Name and every one of them, and each order asks
	// for Name followed by ExtraNames, in that order, so that a renewal
	// asks for the same exact set as the certificate it replaces (a
	// lineage imported from certbot, a wildcard with its apex). Each is
	// normalized, differs from Name and appears once (ErrInvalid). An
	// extra name is served through the certificate's own links
	// (PutCertificate links every name of Certificate.Names); it is not
	// a managed name of its own. A record of an extra name, if there is
	// one, says ManagedWith: a name added alone that a managed name
	// carries gets a record of its own, which the renewer marks
	// ManagedWith at its first look, without an order. The store keeps
	// these fields as given and checks only what is stated here; the
	// renewer sets ExtraNames when a name first takes a certificate that
	// carries several names, and the admin API keeps both sides in step
	// when a name is removed.
	ExtraNames []string `json:"extra_names,omitempty"`
	// ManagedWith is set on the record of a name that is one of another
	// managed name's ExtraNames: that name's certificate serves it, and
	// no order is ever made for it alone (NextAttempt stays zero). It
	// names the primary record, whose ExtraNames hold this name. A record
	// with ManagedWith has no ExtraNames (ErrInvalid). "" for a name that
	// is managed on its own.
	ManagedWith string `json:"managed_with,omitempty"`
	// Challenge is the ACME challenge the name's orders prove control
	// with: one of Challenges, or "" for the configured default
	// (ErrInvalid otherwise). A wildcard in the set is proved with
	// dns-01 whatever this says (RFC 8555 section 7.1.3).
	Challenge ChallengeType `json:"challenge,omitempty"`
}

// ChallengeType names how a name's orders prove control of it (RFC 8555
// section 8): one ACME challenge type, or ChallengeAuto.
type ChallengeType string

// The challenges a name can be set to.
const (
	ChallengeHTTP01    ChallengeType = "http-01"     // a token served on port 80 (RFC 8555 section 8.3)
	ChallengeDNS01     ChallengeType = "dns-01"      // a TXT record at _acme-challenge (RFC 8555 section 8.4)
	ChallengeTLSALPN01 ChallengeType = "tls-alpn-01" // a certificate on port 443 for "acme-tls/1" (RFC 8737)
	// ChallengeAuto picks, at each order, what the name's DNS and the
	// configuration allow (renewer.Challenges.Choose says how).
	ChallengeAuto ChallengeType = "auto"
)

// ChallengeTypes lists every ChallengeType a record may name, in the
// order the documentation gives them.
var ChallengeTypes = []ChallengeType{ChallengeHTTP01, ChallengeDNS01, ChallengeTLSALPN01, ChallengeAuto}

// ParseChallenge returns the ChallengeType s names, "" for "", or an
// error naming s and the accepted values.
func ParseChallenge(s string) (ChallengeType, error) {
	for _, c := range ChallengeTypes {
		if string(c) == s {
			return c, nil
		}
	}
	if s == "" {
		return "", nil
	}
	return "", fmt.Errorf("challenge %q is not one of http-01, dns-01, tls-alpn-01, auto", s)
}

// RecentAttempts is how many attempts a Domain record keeps.
const RecentAttempts = 10

// Attempt is one order for a managed name and how it ended.
type Attempt struct {
	// At is when the attempt ended.
	At time.Time `json:"at"`
	// Outcome is how the attempt ended.
	Outcome Outcome `json:"outcome"`
	// Error is the failure in the CA's (or the pre-flight's) words.
	Error string `json:"error,omitempty"`
	// Serial is the new certificate's serial, for OutcomeIssued.
	Serial string `json:"serial,omitempty"`
	// Took is how long the attempt ran.
	Took time.Duration `json:"took,omitempty"`
	// Challenge is the challenge the order proved control with, or the
	// one the name could not use when the attempt was refused for it; ""
	// when no challenge was chosen (a refusal before that, a record
	// written before challenges were recorded).
	Challenge ChallengeType `json:"challenge,omitempty"`
}

// Outcome is how an Attempt ended.
type Outcome string

// The outcomes of an attempt.
const (
	OutcomeIssued  Outcome = "issued"  // a certificate was issued and stored
	OutcomeFailed  Outcome = "failed"  // the order failed (at the CA, or in its checks)
	OutcomeRefused Outcome = "refused" // the pre-flight stopped it before anything was sent to a CA
)

// AddAttempt puts a at the front of d.Attempts, dropping the oldest beyond
// RecentAttempts.
func (d *Domain) AddAttempt(a Attempt) {
	n := min(len(d.Attempts)+1, RecentAttempts)
	list := make([]Attempt, n)
	list[0] = a
	copy(list[1:], d.Attempts)
	d.Attempts = list
}

// DueEntry is one entry of the due index: a managed name and when it is due.
type DueEntry struct {
	Name string
	At   time.Time
}

// Account is an ACME account (RFC 8555 section 7.1.2) with its key. KeyPEM
// is a secret: never log an Account whole.
type Account struct {
	// ID identifies the account locally: derived from the CA directory URL
	// and the contact e-mail by the renewer.
	ID string `json:"id"`
	// Directory is the CA's ACME directory URL.
	Directory string `json:"directory"`
	// Email is the contact address given at registration ("" for none).
	Email string `json:"email,omitempty"`
	// URL is the account URL the CA returned (the "kid").
	URL string `json:"url"`
	// KeyPEM is the account's private key, PEM encoded.
	KeyPEM []byte `json:"key_pem"`
	// CreatedAt is when the account was registered.
	CreatedAt time.Time `json:"created_at"`
}
