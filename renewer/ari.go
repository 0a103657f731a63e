package renewer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/certserver/certserver/store"
)

// ErrNoRenewalInfo is returned (wrapped) by RenewalInfo when the CA's
// directory offers no renewalInfo resource.
var ErrNoRenewalInfo = errors.New("the CA offers no renewal information")

// RenewalInfo is a CA's advice on when to renew one certificate
// (RFC 9773 section 4.2).
type RenewalInfo struct {
	// Start and End bound the suggested window.
	Start, End time.Time
	// ExplanationURL points at the CA's reasons, "" when it gave none.
	ExplanationURL string
	// RetryAfter is when the CA asks to be asked again, zero when it did
	// not say.
	RetryAfter time.Duration
}

// maxRenewalInfo bounds the renewal information read from a CA.
const maxRenewalInfo = 64 << 10

// RenewalInfo asks the CA when to renew c (RFC 9773 section 4): one GET,
// the directory being read at most once an hour. It returns an error
// wrapping ErrNoRenewalInfo when the CA has no renewalInfo resource, and an
// error when the answer is not a valid window (lego's GetRenewalInfo does
// not check the HTTP status, so the issuer reads the resource itself). It
// is safe for concurrent use.
func (a *ACMEIssuer) RenewalInfo(ctx context.Context, c *store.Certificate) (*RenewalInfo, error) {
	id := replacesID(c)
	if id == "" {
		return nil, errors.New("renewal info: the certificate's leaf does not parse")
	}
	ctx, cancel := context.WithTimeout(ctx, a.reqTimeout)
	defer cancel()
	dir, err := a.directory(ctx)
	if err != nil {
		return nil, fmt.Errorf("renewal info: %w", err)
	}
	if dir.RenewalInfo == "" {
		return nil, fmt.Errorf("renewal info: %w", ErrNoRenewalInfo)
	}
	var body struct {
		SuggestedWindow struct {
			Start time.Time `json:"start"`
			End   time.Time `json:"end"`
		} `json:"suggestedWindow"`
		ExplanationURL string `json:"explanationURL"`
	}
	var header http.Header
	url := strings.TrimRight(dir.RenewalInfo, "/") + "/" + id
	if err := getJSON(ctx, a.httpClient(ctx), url, &body, &header); err != nil {
		return nil, fmt.Errorf("renewal info for %s: %w", c.ID, err)
	}
	w := body.SuggestedWindow
	if w.Start.IsZero() || !w.End.After(w.Start) {
		return nil, fmt.Errorf("renewal info for %s: invalid window %s to %s", c.ID, w.Start, w.End)
	}
	return &RenewalInfo{
		Start:          w.Start,
		End:            w.End,
		ExplanationURL: body.ExplanationURL,
		RetryAfter:     parseRetryAfter(header.Get("Retry-After"), a.cfg.Now()),
	}, nil
}

// renewAt returns a random time in the CA's suggested window for c (RFC
// 9773 section 4.2), or zero when the CA has no renewal information or
// cannot be asked; the caller then schedules by lifetime.
func (a *ACMEIssuer) renewAt(ctx context.Context, c *store.Certificate) time.Time {
	if a.cfg.DisableARI {
		return time.Time{}
	}
	info, err := a.RenewalInfo(ctx, c)
	if err != nil {
		if !errors.Is(err, ErrNoRenewalInfo) {
			a.log.Debug("no renewal window from the CA", "name", c.ID, "error", err)
		}
		return time.Time{}
	}
	start, end := capWindow(info.Start, info.End, c.NotBefore, c.NotAfter)
	rnd := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	return WindowTime(start, end, a.cfg.Now(), rnd)
}

// capWindow moves the end of a suggested window (and its start, if need be)
// back so that at least a sixth of the certificate's lifetime is left after
// it. A CA may suggest a window that ends at expiry (Pebble does for short
// certificates); renewing at its last moment would leave no time to retry a
// failure. RFC 9773 section 4.2 lets a client renew before the window; for
// a 90-day certificate the cap is day 75, well after Let's Encrypt's
// windows, so it only ever binds odd windows.
func capWindow(start, end, notBefore, notAfter time.Time) (time.Time, time.Time) {
	latest := notAfter.Add(-notAfter.Sub(notBefore) / 6)
	if end.After(latest) {
		end = latest
	}
	if start.After(end) {
		start = end
	}
	return start, end
}

// getJSON GETs url with client and decodes a 200 answer into v; header, if
// not nil, receives the answer's header.
func getJSON(ctx context.Context, client *http.Client, url string, v any, header *http.Header) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxRenewalInfo))
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if header != nil {
		*header = resp.Header
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxRenewalInfo)).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	return nil
}
