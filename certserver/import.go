package certserver

import (
	"context"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
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
	switch {
	case req.ChainPEM == "":
		return errorf(fasthttp.StatusBadRequest, "chain_pem is required")
	case req.KeyPEM == "":
		return errorf(fasthttp.StatusBadRequest, "key_pem is required")
	case req.Source == "":
		req.Source = api.SourceImport
	case req.Source != api.SourceImport && req.Source != api.SourceCertbot:
		return errorf(fasthttp.StatusBadRequest, "source %q is not one of %q, %q", req.Source, api.SourceImport, api.SourceCertbot)
	}
	if len(req.Origin) > maxOrigin || !utf8.ValidString(req.Origin) {
		return errorf(fasthttp.StatusBadRequest, "origin must be valid UTF-8 of at most %d bytes", maxOrigin)
	}

	now := a.cfg.Now()
	c, err := store.ParseCertificate([]byte(req.ChainPEM), []byte(req.KeyPEM), now)
	if err != nil {
		return &api.Error{Status: fasthttp.StatusUnprocessableEntity, Message: err.Error(), Reason: ImportReason(err)}
	}
	c.Source, c.Origin, c.StoredAt = store.Source(req.Source), req.Origin, now
	resp := api.ImportResponse{ID: c.ID, Names: c.Names, Serial: c.Serial, NotAfter: c.NotAfter}

	a.importMu.Lock()
	defer a.importMu.Unlock()
	old, err := a.store.GetCertificate(ctx, c.ID)
	status := fasthttp.StatusCreated
	switch {
	case errors.Is(err, store.ErrNotFound):
	case err != nil:
		return fmt.Errorf("get certificate %s: %w", c.ID, err)
	case old.Serial == c.Serial && old.Issuer == c.Issuer:
		resp.Result = api.ResultUnchanged
		writeJSON(rc, fasthttp.StatusOK, resp)
		return nil
	case old.NotAfter.After(c.NotAfter):
		resp.Result, resp.Reason, resp.StoredNotAfter = api.ResultSkipped, api.ReasonNewerStored, old.NotAfter
		a.log.Info("certificate import skipped", "id", c.ID, "serial", c.Serial, "not_after", c.NotAfter,
			"stored_serial", old.Serial, "stored_not_after", old.NotAfter, "reason", resp.Reason)
		writeJSON(rc, fasthttp.StatusConflict, resp)
		return nil
	default:
		status, resp.ReplacedSerial = fasthttp.StatusOK, old.Serial
	}
	if err := a.store.PutCertificate(ctx, c); err != nil {
		if errors.Is(err, store.ErrInvalid) {
			return &api.Error{Status: fasthttp.StatusUnprocessableEntity, Message: err.Error(), Reason: api.ReasonInvalid}
		}
		return fmt.Errorf("put certificate %s: %w", c.ID, err)
	}
	a.log.Info("certificate imported", "id", c.ID, "names", len(c.Names), "serial", c.Serial,
		"not_after", c.NotAfter, "source", c.Source, "origin", c.Origin, "replaced_serial", resp.ReplacedSerial)
	resp.Result = api.ResultImported
	writeJSON(rc, status, resp)
	return nil
}
