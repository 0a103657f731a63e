// Package api holds the JSON documents of the certserver admin API, shared
// by the server (package certserver) and its clients (package
// certserver/client). It has no behaviour of its own.
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
