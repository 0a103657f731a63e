package certserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/hostname"
	"github.com/valyala/fasthttp"
)

// Revoker revokes certificates at the CA that issued them.
// renewer.ACMEIssuer implements it. Revoke must be safe for concurrent use
// and return when ctx is done.
type Revoker interface {
	// Revoke asks the CA to revoke cert with reason, a code of RFC 5280
	// section 5.3.1 (0 to 10 except 7), as RFC 8555 section 7.6 does. A
	// certificate the CA reports revoked already is not an error. An error
	// that implements Permanent() bool returning true means the CA refused
	// the request; one that implements RetryAfter() time.Duration with a
	// positive value means the CA asked to wait; any other error may pass
	// when tried again.
	Revoke(ctx context.Context, cert *store.Certificate, reason int) error
}

// ParseRevocationReason reads an RFC 5280 reason: its name, in any case
// ("keyCompromise", "KEYCOMPROMISE"), or its code in digits. Its error is
// an *api.Error, 400, naming the accepted values. The CLI checks its
// --reason and --revoke flags with it.
func ParseRevocationReason(s string) (int, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.Atoi(s); err == nil {
		if api.RevocationReason(n) != "" {
			return n, nil
		}
	} else {
		for code := range 11 {
			if name := api.RevocationReason(code); name != "" && strings.EqualFold(name, s) {
				return code, nil
			}
		}
	}
	return 0, errorf(fasthttp.StatusBadRequest, "unknown revocation reason %q: want one of %s, or its code (0 to 10 except 7)", s, reasonList())
}

// reasonList names the reasons for an error message.
func reasonList() string {
	var names []string
	for code := range 11 {
		if n := api.RevocationReason(code); n != "" {
			names = append(names, n)
		}
	}
	return strings.Join(names, ", ")
}

// revokeBody is the body of POST /v1/domains/{name}/revoke as the server
// reads it: the reason may be a string or a number.
type revokeBody struct {
	Reason json.RawMessage `json:"reason"`
}

// revokeDomain answers POST /v1/domains/{name}/revoke: the certificate
// that serves the name is revoked at the CA, and the name (with the other
// managed names of that certificate) is made due now for a new one.
func (a *AdminAPI) revokeDomain(ctx context.Context, rc *fasthttp.RequestCtx, p params) error {
	name, err := domainName(p)
	if err != nil {
		return err
	}
	var body revokeBody
	if err := decodeJSON(rc, &body); err != nil {
		return err
	}
	raw := bytes.TrimSpace(body.Reason)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return errorf(fasthttp.StatusBadRequest, "field \"reason\" is required: one of %s", reasonList())
	}
	var reasonText string
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &reasonText); err != nil {
			return jsonError(err)
		}
	} else {
		reasonText = string(raw)
	}
	reason, err := ParseRevocationReason(reasonText)
	if err != nil {
		return err
	}
	d, err := a.managedDomain(ctx, name, false)
	if err != nil {
		return err
	}
	rev, err := a.revoke(ctx, d, reason, "")
	if err != nil {
		return err
	}
	writeJSON(rc, fasthttp.StatusOK, rev)
	return nil
}

// revoke revokes the certificate that serves d at the CA, makes it due
// for renewal now (renewNow) and the managed names it serves due now, and
// puts them ahead of the renewer's queue. The name skip is left alone (it
// is being removed). Its errors are *api.Error values for the operator.
func (a *AdminAPI) revoke(ctx context.Context, d *store.Domain, reason int, skip string) (*api.Revocation, error) {
	if a.cfg.Revoker == nil {
		return nil, errorf(fasthttp.StatusServiceUnavailable, "revocation is off: it needs issuance (acme.directory) to reach the CA")
	}
	c, err := a.servingCertificate(ctx, d)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, errorf(fasthttp.StatusConflict, "no certificate serves %s: nothing to revoke", d.Name)
	}
	log := a.log.With("name", d.Name, "certificate", c.ID, "serial", c.Serial, "reason", reason)
	if err := a.cfg.Revoker.Revoke(ctx, c, reason); err != nil {
		log.Warn("revocation failed", "error", err)
		return nil, revokeFailed(ctx, c, err)
	}
	rev := &api.Revocation{
		Name: d.Name, CertificateID: c.ID, Serial: c.Serial, Names: c.Names,
		Reason: api.RevocationReason(reason), ReasonCode: reason, Reordered: []string{},
	}
	// The revocation is done: the bookkeeping gets time of its own, even
	// when the CA took most of the request's.
	ctx = context.WithoutCancel(ctx)
	ctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	defer cancel()
	now := a.cfg.Now()
	var ks *api.KeyShared
	if reason == keyCompromise {
		// Out of the key pool before any name is due: none is ordered on it.
		if ks, err = a.removePoolKey(ctx, c); err != nil {
			return nil, fmt.Errorf("revoked %s serial %s for keyCompromise, then: %w", c.ID, c.Serial, err)
		}
	}
	reordered, err := a.reorder(ctx, c, d.Name, skip, now)
	if err != nil {
		return nil, fmt.Errorf("revoked %s serial %s, then: %w", c.ID, c.Serial, err)
	}
	rev.Reordered = append(rev.Reordered, reordered...)
	if reason == keyCompromise {
		// Its own bound: a pool's key may be on tens of thousands of
		// certificates, each rewritten.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), retireKeyTimeout)
		ks, err = a.retireKey(rctx, c, ks, skip, now)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("revoked %s serial %s for keyCompromise, then: %w", c.ID, c.Serial, err)
		}
		rev.KeyShared = ks
	}
	if len(rev.Reordered) > 0 && a.cfg.Scheduler != nil {
		rev.Queued = true
		for _, n := range rev.Reordered {
			rev.Queued = a.cfg.Scheduler.Prioritize(n) && rev.Queued
		}
	}
	rev.Message = revocationMessage(rev, a.cfg.Scheduler != nil)
	log.Info("certificate revoked", "reordered", len(rev.Reordered), "queued", rev.Queued)
	return rev, nil
}

// renewNow makes the stored record of the revoked certificate c due for
// renewal at now, so that the renewer replaces it however it comes to its
// names: ahead of its queue, from the due index, or after a restart (it
// keeps a certificate whose renewal time is ahead, and adopts one that
// serves a name it manages). Nothing is written when the record changed
// since c was read (a new certificate was stored), or when taken says
// that another certificate serves one of c's names meanwhile: writing c
// again would point that name back at it. The renewer then orders new
// certificates only for the names put ahead of its queue.
func (a *AdminAPI) renewNow(ctx context.Context, c *store.Certificate, taken bool, now time.Time) error {
	log := a.log.With("certificate", c.ID, "serial", c.Serial)
	if taken {
		log.Warn("revoked certificate left as stored: another certificate serves some of its names")
		return nil
	}
	// Imports check and write certificates under the same lock.
	a.importMu.Lock()
	defer a.importMu.Unlock()
	cur, err := a.store.GetCertificate(ctx, c.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return err
	case cur.Serial != c.Serial:
		log.Info("revoked certificate already replaced", "stored_serial", cur.Serial)
		return nil
	}
	cur.RenewAt = now
	return a.store.PutCertificate(ctx, cur)
}

// reorder makes the revoked certificate c due for renewal now (renewNow)
// and the managed names it serves (and name, when a wildcard of c serves
// it) due now, and returns those names. skip is left alone (it is being
// removed), and so is a name managed with another (renewed with it).
func (a *AdminAPI) reorder(ctx context.Context, c *store.Certificate, name, skip string, now time.Time) ([]string, error) {
	names := c.Names
	if name != "" && !slices.Contains(names, name) {
		names = append([]string{name}, names...) // served by a wildcard
	}
	// The names the certificate serves now need a new one; a name of the
	// certificate that another one serves meanwhile does not.
	var served []string
	taken := false
	for _, n := range names {
		if hostname.IsWildcard(n) {
			continue // a pattern, not a name anyone asks for
		}
		s, err := a.store.LookupCertificate(ctx, n)
		switch {
		case err == nil && s.ID == c.ID:
			served = append(served, n)
		case err == nil, errors.Is(err, store.ErrNotFound):
			taken = true
		default:
			return nil, err
		}
	}
	if err := a.renewNow(ctx, c, taken, now); err != nil {
		return nil, err
	}
	var reordered []string
	for _, n := range served {
		if n == skip {
			continue
		}
		with := false
		_, err := a.changeDomain(ctx, n, false, func(rec *store.Domain) {
			if with = rec.ManagedWith != ""; !with {
				rec.NextAttempt, rec.UpdatedAt = now, now
			}
		})
		var ae *api.Error
		switch {
		case errors.As(err, &ae):
			continue // not managed, or removed
		case err != nil:
			return nil, err
		case with:
			continue // renewed with the name it is managed with
		}
		reordered = append(reordered, n)
	}
	return reordered, nil
}

// revocationMessage says what a revocation did, in a sentence.
func revocationMessage(rev *api.Revocation, issuance bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "certificate %s serial %s revoked (%s)", rev.CertificateID, rev.Serial, rev.Reason)
	if len(rev.Names) > 1 {
		fmt.Fprintf(&b, "; it served %d names: %s", len(rev.Names), strings.Join(rev.Names, ", "))
	}
	switch {
	case len(rev.Reordered) == 0:
		b.WriteString("; no managed name is due for a new certificate")
	case !issuance:
		fmt.Fprintf(&b, "; %s due now, but issuance is off: nothing orders a new certificate", strings.Join(rev.Reordered, ", "))
	case rev.Queued:
		fmt.Fprintf(&b, "; a new certificate is being ordered for %s", strings.Join(rev.Reordered, ", "))
	default:
		fmt.Fprintf(&b, "; %s due now for a new certificate (the renewer's queue is full: it follows the due index)", strings.Join(rev.Reordered, ", "))
	}
	if len(rev.Reordered) > 0 {
		b.WriteString("; the revoked certificate is served until the new one is stored")
	}
	if ks := rev.KeyShared; ks != nil {
		b.WriteString(keySharedMessage(ks))
	}
	return b.String()
}

// permanentError and retryAfterError are the classifications Revoker
// errors may implement.
type (
	permanentError  interface{ Permanent() bool }
	retryAfterError interface{ RetryAfter() time.Duration }
)

// revokeFailed turns a Revoker error into the answer: 422 when the CA
// refused, 429 with Retry-After when it asked to wait, 504 when it did not
// answer in time, 502 otherwise.
func revokeFailed(ctx context.Context, c *store.Certificate, err error) *api.Error {
	var pe permanentError
	var re retryAfterError
	switch {
	case errors.As(err, &re) && re.RetryAfter() > 0:
		secs := int(re.RetryAfter().Round(time.Second) / time.Second)
		e := errorf(fasthttp.StatusTooManyRequests, "the CA rate-limited the revocation, retry in %ds: %v", secs, err)
		e.RetryAfter = secs
		return e
	case errors.As(err, &pe) && pe.Permanent():
		return errorf(fasthttp.StatusUnprocessableEntity, "the CA refused to revoke: %v", err)
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		return errorf(fasthttp.StatusGatewayTimeout, "the CA did not answer in time; certificate %s serial %s may or may not be revoked: try again (%v)", c.ID, c.Serial, err)
	}
	return errorf(fasthttp.StatusBadGateway, "revocation failed, try again: %v", err)
}
