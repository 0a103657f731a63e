package renewer

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/certserver/certserver/store"
)

// Revocation reason codes of RFC 5280 section 5.3.1, as RFC 8555 section
// 7.6 sends them. Code 7 is not used.
const (
	ReasonUnspecified          = 0
	ReasonKeyCompromise        = 1
	ReasonCACompromise         = 2
	ReasonAffiliationChanged   = 3
	ReasonSuperseded           = 4
	ReasonCessationOfOperation = 5
	ReasonCertificateHold      = 6
	ReasonRemoveFromCRL        = 8
	ReasonPrivilegeWithdrawn   = 9
	ReasonAACompromise         = 10
)

// validReason reports whether code is a reason code of RFC 5280 section
// 5.3.1.
func validReason(code int) bool {
	return code >= ReasonUnspecified && code <= ReasonAACompromise && code != 7
}

// RevokeError is a failed revocation, classified like a failed order: its
// embedded *ACMEError says whether trying again can help (Permanent,
// RetryAfter) and holds the CA's words.
type RevokeError struct {
	// Serial is the serial number of the certificate, lowercase hex.
	Serial string
	*ACMEError
}

// Error reads "revoke NAME serial SERIAL: DETAIL", with the problem type's
// short name when the CA sent a problem document.
func (e *RevokeError) Error() string {
	if e.Problem != "" {
		return fmt.Sprintf("revoke %s serial %s: acme %s: %s", e.Name, e.Serial, shortProblem(e.Problem), e.Detail)
	}
	return fmt.Sprintf("revoke %s serial %s: %s", e.Name, e.Serial, e.Detail)
}

func (e *RevokeError) Unwrap() error { return e.ACMEError }

// Revoke asks the CA to revoke cert with a reason code of RFC 5280 section
// 5.3.1 (RFC 8555 section 7.6), signing the request with the issuer's
// account: the CA accepts it for certificates that account ordered (or
// whose names it holds authorizations for). A certificate the CA already
// reports revoked is not an error (alreadyRevoked); the reason it was
// first revoked with stays.
//
// Every failure is a *RevokeError, classified as Obtain's errors are: an
// unknown reason code or a chain without a certificate is permanent and
// reaches no CA. The request ends when ctx does or after the configured
// Timeout, whichever is first; lego ignores contexts, so it runs in a
// goroutine that may finish a little after Revoke returned. It is safe for
// concurrent use.
func (a *ACMEIssuer) Revoke(ctx context.Context, cert *store.Certificate, reason int) error {
	if cert == nil {
		return errors.New("revoke: nil certificate")
	}
	fail := func(kind ErrorKind, err error) error {
		return &RevokeError{Serial: cert.Serial, ACMEError: (&ACMEError{Name: cert.ID, Kind: kind, Detail: err.Error(), Err: err}).judge()}
	}
	if !validReason(reason) {
		return fail(KindPermanent, fmt.Errorf("reason code %d is not one of RFC 5280 (0 to 10, except 7)", reason))
	}
	if block, _ := pem.Decode(cert.ChainPEM); block == nil || block.Type != "CERTIFICATE" {
		return fail(KindPermanent, errors.New("the stored chain does not start with a PEM certificate"))
	}
	classified := func(err error) error {
		return &RevokeError{Serial: cert.Serial, ACMEError: classify(cert.ID, err, a.cfg.Now())}
	}
	if err := context.Cause(ctx); err != nil {
		return classified(fmt.Errorf("revocation not started: %w", err))
	}
	ctx, cancel := context.WithTimeout(ctx, a.cfg.Timeout)
	defer cancel()

	acct, err := a.account(ctx)
	if err != nil {
		return classified(err)
	}
	err = a.revoke(ctx, acct, cert, reason)
	if isProblem(err, "accountDoesNotExist") {
		if acct, err = a.reregister(ctx, acct); err == nil {
			err = a.revoke(ctx, acct, cert, reason)
		}
	}
	if isProblem(err, "alreadyRevoked") {
		a.log.Info("certificate was revoked already", "name", cert.ID, "serial", cert.Serial)
		return nil
	}
	if err != nil {
		return classified(err)
	}
	a.log.Info("certificate revoked", "name", cert.ID, "serial", cert.Serial, "reason", reason)
	return nil
}

// revoke sends one revocation request with acct.
func (a *ACMEIssuer) revoke(ctx context.Context, acct *account, cert *store.Certificate, reason int) error {
	code := uint(reason)
	_, err := bounded(ctx, func() (struct{}, error) {
		client, err := a.newLegoClient(ctx, acct)
		if err != nil {
			return struct{}{}, err
		}
		return struct{}{}, client.Certificate.RevokeWithReason(cert.ChainPEM, &code)
	}, func(_ struct{}, err error) {
		if err == nil {
			a.log.Warn("certificate revoked after the request was given up", "name", cert.ID, "serial", cert.Serial, "reason", reason)
		}
	})
	return err
}
