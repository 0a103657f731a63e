package certserver

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/sealed"
	"github.com/valyala/fasthttp"
)

// maxOrigin is the longest origin an import may carry, in bytes.
const maxOrigin = 4096

// ImportReason returns the api.Reason… phrase for an error from
// store.ParseCertificate: api.ReasonExpired, api.ReasonKeyMismatch,
// api.ReasonNotCertificate, api.ReasonBadKey, api.ReasonNoNames, or
// api.ReasonInvalid for anything else.
func ImportReason(err error) string {
	switch {
	case errors.Is(err, store.ErrExpired):
		return api.ReasonExpired
	case errors.Is(err, store.ErrKeyMismatch):
		return api.ReasonKeyMismatch
	case errors.Is(err, store.ErrNotCertificate):
		return api.ReasonNotCertificate
	case errors.Is(err, store.ErrBadKey):
		return api.ReasonBadKey
	case errors.Is(err, store.ErrNoNames):
		return api.ReasonNoNames
	}
	return api.ReasonInvalid
}

// importCertificate answers POST /v1/certificates: it parses the uploaded
// chain and key and stores them, unless the same certificate is stored
// already (200 "unchanged") or a certificate with the same ID that expires
// later is (409 "skipped"). A new record answers 201, a replaced one 200.
func (a *AdminAPI) importCertificate(ctx context.Context, rc *fasthttp.RequestCtx, _ params) error {
	var req api.ImportRequest
	if err := decodeJSON(rc, &req); err != nil {
		return err
	}
	c, err := parseImport(inputOf(&req), a.cfg.Now())
	if err != nil {
		return err
	}

	a.importMu.Lock()
	defer a.importMu.Unlock()
	old, err := a.storedCertificate(ctx, c.ID)
	if err != nil {
		return err
	}
	d := decideImport(c, old)
	switch {
	case d.resp.Result == api.ResultSkipped:
		a.log.Info("certificate import skipped", "id", c.ID, "serial", c.Serial, "not_after", c.NotAfter,
			"stored_serial", old.Serial, "stored_not_after", old.NotAfter, "reason", d.resp.Reason)
	case d.write:
		if _, err := a.writeImports(ctx, []*store.Certificate{c}); err != nil {
			return err
		}
		a.log.Info("certificate imported", "id", c.ID, "names", len(c.Names), "serial", c.Serial,
			"not_after", c.NotAfter, "source", c.Source, "origin", c.Origin, "replaced_serial", d.resp.ReplacedSerial)
	}
	writeJSON(rc, d.status, d.resp)
	return nil
}

// importInput is one uploaded certificate as the server reads it: an
// api.ImportRequest whose chain and key are bytes, as store.ParseCertificate
// takes them, so that a batch line's PEM is copied once, when its JSON
// escapes are decoded, and not again into a string and out of it.
type importInput struct {
	chain, key     []byte
	source, origin string
}

// inputOf returns the importInput of req.
func inputOf(req *api.ImportRequest) *importInput {
	return &importInput{chain: []byte(req.ChainPEM), key: []byte(req.KeyPEM), source: req.Source, origin: req.Origin}
}

// parseImport checks one uploaded certificate and returns the record to
// store for it, stamped with now. A certificate that cannot be imported is
// an *api.Error: 400 for a malformed request, 422 with the reason for a
// chain or key that is unusable. It does not keep in's bytes.
func parseImport(in *importInput, now time.Time) (*store.Certificate, error) {
	switch {
	case len(in.chain) == 0:
		return nil, errorf(fasthttp.StatusBadRequest, "chain_pem is required")
	case len(in.key) == 0:
		return nil, errorf(fasthttp.StatusBadRequest, "key_pem is required")
	case in.source == "":
		in.source = api.SourceImport
	case in.source != api.SourceImport && in.source != api.SourceCertbot:
		return nil, errorf(fasthttp.StatusBadRequest, "source %q is not one of %q, %q", in.source, api.SourceImport, api.SourceCertbot)
	}
	if len(in.origin) > maxOrigin || !utf8.ValidString(in.origin) {
		return nil, errorf(fasthttp.StatusBadRequest, "origin must be valid UTF-8 of at most %d bytes", maxOrigin)
	}

	c, err := store.ParseCertificate(in.chain, in.key, now)
	if err != nil {
		return nil, &api.Error{Status: fasthttp.StatusUnprocessableEntity, Message: err.Error(), Reason: ImportReason(err)}
	}
	c.Source, c.Origin, c.StoredAt = store.Source(in.source), in.origin, now
	return c, nil
}

// importDecision is what becomes of one certificate to import.
type importDecision struct {
	// write says c is to be stored.
	write bool
	// status and resp are the answer of POST /v1/certificates.
	status int
	resp   api.ImportResponse
}

// decideImport decides what becomes of c, given old, the certificate
// stored under c.ID (nil when there is none): the same certificate is
// left "unchanged", one that expires later is kept ("skipped"); else c is
// written, as a new record (201) or replacing old (200).
func decideImport(c, old *store.Certificate) importDecision {
	d := importDecision{status: fasthttp.StatusCreated, resp: api.ImportResponse{ID: c.ID, Names: c.Names, Serial: c.Serial, NotAfter: c.NotAfter}}
	switch {
	case old == nil:
	case old.Serial == c.Serial && old.Issuer == c.Issuer:
		d.status, d.resp.Result = fasthttp.StatusOK, api.ResultUnchanged
		return d
	case old.NotAfter.After(c.NotAfter):
		d.status, d.resp.Result, d.resp.Reason, d.resp.StoredNotAfter = fasthttp.StatusConflict, api.ResultSkipped, api.ReasonNewerStored, old.NotAfter
		return d
	default:
		d.status, d.resp.ReplacedSerial = fasthttp.StatusOK, old.Serial
	}
	d.write, d.resp.Result = true, api.ResultImported
	return d
}

// storedCertificate returns the certificate stored under id, nil when
// there is none, or when its private key cannot be decrypted: an import is
// how an operator replaces such a record.
func (a *AdminAPI) storedCertificate(ctx context.Context, id string) (*store.Certificate, error) {
	old, err := a.store.GetCertificate(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case errors.Is(err, sealed.ErrOpen):
		a.log.Warn("the stored certificate's key cannot be decrypted: the import replaces it", "id", id, "error", err)
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("get certificate %s: %w", id, err)
	}
	return old, nil
}

// writeImports stores the certificates an import decided to write, in
// order, in one atomic write of the store, or in as few as fit when they
// are too many for one. It returns how many of cs, from the first, are
// committed: all of them without an error, and with one those written
// before the failing write. The caller holds importMu.
func (a *AdminAPI) writeImports(ctx context.Context, cs []*store.Certificate) (int, error) {
	err := a.store.PutCertificates(ctx, cs)
	switch {
	case err == nil:
		return len(cs), nil
	case errors.Is(err, store.ErrBatchTooLarge) && len(cs) > 1:
		half := len(cs) / 2
		if n, err := a.writeImports(ctx, cs[:half]); err != nil {
			return n, err
		}
		n, err := a.writeImports(ctx, cs[half:])
		return half + n, err
	case errors.Is(err, store.ErrInvalid):
		return 0, &api.Error{Status: fasthttp.StatusUnprocessableEntity, Message: err.Error(), Reason: api.ReasonInvalid}
	}
	return 0, fmt.Errorf("import: %w", err)
}
