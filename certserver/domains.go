package certserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"slices"
	"strings"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/hostname"
	"github.com/valyala/fasthttp"
)

// Scheduler is what the admin API asks of the renewer. renewer.Renewer
// implements it. Both methods must return at once and be safe for
// concurrent use.
type Scheduler interface {
	// Wake makes the scheduler read the due index now, after names were
	// added or made due.
	Wake()
	// Prioritize puts name ahead of the due index, to be worked on as soon
	// as a worker is free even if its certificate is not due. It returns
	// false when the name could not be queued; it keeps its place in the
	// index then.
	Prioritize(name string) bool
}

// sourceAPI is the Source of names added through the admin API.
const sourceAPI = "api"

// addChunk is how many names POST /v1/domains hands the store at once.
const addChunk = 10000

// maxNameEcho is how much of an invalid name an answer repeats, in bytes.
const maxNameEcho = 256

// addDomains answers POST /v1/domains: it parses the names of the body (a
// JSON array, a JSON object with "names" and "profile", or text with one
// name per line), refuses the invalid ones with their position, and brings
// the others under management in batches: state pending, due now, source
// "api". Names already managed are counted and left alone, except removed
// ones, which are managed again. Nothing is written when the body is
// malformed.
func (a *AdminAPI) addDomains(ctx context.Context, rc *fasthttp.RequestCtx, _ params) error {
	start := time.Now()
	l, err := parseNames(rc)
	if err != nil {
		return err
	}
	if l.entries == 0 {
		return errorf(fasthttp.StatusBadRequest, "no names: send a JSON array of names, {\"names\": [...]}, or one name per line")
	}
	now := a.cfg.Now()
	resp := api.AddDomainsResponse{Invalid: l.invalid, InvalidCount: l.invalidCount}
	if resp.Invalid == nil {
		resp.Invalid = []api.InvalidName{}
	}
	recs := make([]store.Domain, 0, min(addChunk, len(l.names)))
	ptrs := make([]*store.Domain, 0, cap(recs))
	for i := 0; i < len(l.names); i += addChunk {
		chunk := l.names[i:min(i+addChunk, len(l.names))]
		recs, ptrs = recs[:0], ptrs[:0]
		for _, n := range chunk {
			recs = append(recs, store.Domain{Name: n, State: store.StatePending, Profile: l.profile, Source: sourceAPI,
				NextAttempt: now, AddedAt: now, UpdatedAt: now, ExtraNames: l.extra, Challenge: l.challenge})
		}
		for j := range recs {
			ptrs = append(ptrs, &recs[j])
		}
		added, existing, err := a.store.AddDomains(ctx, ptrs)
		resp.Added += added
		resp.Existing += existing
		if err == nil && existing > 0 {
			var revived, updated int
			revived, updated, err = a.reviveRemoved(ctx, chunk, l, now)
			resp.Added += revived
			resp.Existing -= revived
			resp.Updated += updated
		}
		if err != nil {
			a.log.Error("adding domains stopped", "added", resp.Added, "existing", resp.Existing, "names", len(l.names), "error", err)
			if i > 0 {
				return fmt.Errorf("add domains: the first %d names are managed (%d added, %d already were); "+
					"the rest were not added; sending the same request again is safe: %w", i, resp.Added, resp.Existing, err)
			}
			return fmt.Errorf("add domains: %w", err)
		}
	}
	if resp.Added > 0 && a.cfg.Scheduler != nil {
		a.cfg.Scheduler.Wake()
	}
	a.log.Info("domains added", "added", resp.Added, "existing", resp.Existing, "updated", resp.Updated, "invalid", resp.InvalidCount,
		"profile", l.profile, "challenge", string(l.challenge), "extra_names", len(l.extra), "format", l.format, "took", time.Since(start).Round(time.Millisecond))
	writeJSON(rc, fasthttp.StatusOK, resp)
	return nil
}

// reviveRemoved manages again the names of chunk whose records say they
// were removed, with l's profile, challenge and extra names, due at now,
// and gives the others l's challenge and extra names when l sets them
// and they differ. It returns how many it revived and how many it
// updated. It reads every record of chunk (in one step where the store
// can: store.GetDomains) but writes only those: a write waits for the
// disk, and a bulk add of names that are all managed already must not
// write each of them.
func (a *AdminAPI) reviveRemoved(ctx context.Context, chunk []string, l *nameList, now time.Time) (revived, updated int, err error) {
	profile := l.profile
	records, err := store.GetDomains(ctx, a.store, chunk)
	if err != nil {
		return 0, 0, err
	}
	n := 0
	for _, d := range records {
		if d.State != store.StateRemoved {
			if l.changes(d) {
				err := a.store.UpdateDomain(ctx, d.Name, func(d *store.Domain) error {
					if !l.changes(d) {
						return errNotRemoved // changed meanwhile: nothing to do
					}
					l.apply(d, now)
					return nil
				})
				switch {
				case err == nil:
					updated++
					a.log.Info("domain updated", "name", d.Name, "challenge", string(l.challenge), "extra_names", strings.Join(l.extra, ","))
				case !errors.Is(err, errNotRemoved):
					return n, updated, err
				}
			}
			continue
		}
		name := d.Name
		err = a.store.UpdateDomain(ctx, name, func(d *store.Domain) error {
			if d.State != store.StateRemoved {
				return errNotRemoved
			}
			d.State, d.Profile, d.Source = store.StatePending, profile, sourceAPI
			d.NextAttempt, d.UpdatedAt, d.ManagedWith = now, now, ""
			d.Challenge, d.ExtraNames = l.challenge, l.extra

			d.Failures, d.LastError, d.FailingSince = 0, "", time.Time{}
			return nil
		})
		switch {
		case err == nil:
			n++
		case errors.Is(err, errNotRemoved):
		default:
			return n, updated, err
		}
	}
	return n, updated, nil
}

// changes reports whether l sets a challenge or extra names that d, a
// managed name's record, does not have. A name managed with another takes
// no extra names (store.Domain.ManagedWith).
func (l *nameList) changes(d *store.Domain) bool {
	return l.challenge != "" && d.Challenge != l.challenge ||
		len(l.extra) > 0 && d.ManagedWith == "" && !sameNames(d.ExtraNames, l.extra)
}

// apply gives d, a managed name's record, l's challenge and extra names,
// and makes it due now when its set of names changed, so that a
// certificate for the new set is ordered.
func (l *nameList) apply(d *store.Domain, now time.Time) {
	if l.challenge != "" {
		d.Challenge = l.challenge
	}
	if len(l.extra) > 0 && d.ManagedWith == "" && !sameNames(d.ExtraNames, l.extra) {
		d.ExtraNames = l.extra
		d.NextAttempt = now
	}
	d.UpdatedAt = now
}

// sameNames reports whether a and b, lists of extra names (each without
// repeats), hold the same names in any order: a certificate's names are
// a set, so the same names given in another order change nothing.
func sameNames(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, n := range a {
		if !slices.Contains(b, n) {
			return false
		}
	}
	return true
}

// leaveSet finishes the removal of d; running it again changes nothing
// more. A name that was managed with
// another (with, its ManagedWith before the removal) leaves that name's
// ExtraNames: its next order no longer asks for it (the certificate
// serves it until then). A name carrying ExtraNames takes the records
// managed with it along: they are removed too, since nothing would renew
// their certificate. Adding one of those names again manages it on its
// own.
func (a *AdminAPI) leaveSet(ctx context.Context, d *store.Domain, with string) error {
	now := a.cfg.Now()
	if with != "" {
		err := a.store.UpdateDomain(ctx, with, func(p *store.Domain) error {
			p.ExtraNames = slices.DeleteFunc(p.ExtraNames, func(n string) bool { return n == d.Name })
			p.UpdatedAt = now
			return nil
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("remove %s from the names of %s: %w", d.Name, with, err)
		}
	}
	for _, n := range d.ExtraNames {
		err := a.store.UpdateDomain(ctx, n, func(x *store.Domain) error {
			if x.ManagedWith != d.Name {
				return errNotRemoved // managed on its own: not part of the removal
			}
			x.State, x.NextAttempt, x.UpdatedAt, x.ManagedWith = store.StateRemoved, time.Time{}, now, ""
			return nil
		})
		if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, errNotRemoved) {
			return fmt.Errorf("remove %s with %s: %w", n, d.Name, err)
		}
	}
	return nil
}

// errNotRemoved and errRemoved stop an update of a domain record whose
// state changed since the caller looked.
var (
	errNotRemoved = errors.New("not removed")
	errRemoved    = errors.New("removed")
)

// nameList is the parsed body of POST /v1/domains.
type nameList struct {
	format       string   // "json" or "text", for the log
	names        []string // the valid names, normalized, in order
	profile      string
	extra        []string            // the extra names of the one name, normalized
	challenge    store.ChallengeType // "" for the configured default
	entries      int                 // names given, valid or not
	invalid      []api.InvalidName
	invalidCount int
}

// add checks one name given at line (1-based).
func (l *nameList) add(line int, raw string) {
	l.entries++
	n, err := hostname.NormalizePattern(raw)
	if err == nil {
		// Added names are ordered: they are held to what a CA takes.
		err = hostname.CheckOrderable(n)
	}
	if err == nil {
		l.names = append(l.names, n)
		return
	}
	l.invalidCount++
	if len(l.invalid) >= api.MaxInvalidListed {
		return
	}
	reason := err.Error()
	var he *hostname.Error
	if errors.As(err, &he) {
		reason = he.Rule
	}
	if len(raw) > maxNameEcho {
		raw = raw[:maxNameEcho] + "…"
	}
	l.invalid = append(l.invalid, api.InvalidName{Line: line, Name: raw, Error: reason})
}

// parseNames reads the names of a POST /v1/domains body. A text/plain body,
// or one of another or no type that does not start with "[" or "{", is
// text; anything else is JSON. Its errors are *api.Error values.
func parseNames(rc *fasthttp.RequestCtx) (*nameList, error) {
	body := bytes.TrimPrefix(rc.PostBody(), []byte("\ufeff"))
	l := &nameList{}
	mt := ""
	if ct := string(rc.Request.Header.ContentType()); ct != "" {
		t, _, err := mime.ParseMediaType(ct)
		if err != nil {
			return nil, errorf(fasthttp.StatusUnsupportedMediaType, "content type %q: %v", ct, err)
		}
		mt = t
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	switch {
	case len(trimmed) == 0:
		return l, nil
	case mt == "text/plain":
	case mt == "application/json", trimmed[0] == '[', trimmed[0] == '{':
		l.format = "json"
		return l, parseNameJSON(body, l)
	}
	l.format = "text"
	parseNameLines(body, l)
	return l, nil
}

// parseNameLines reads one name per line (api.NameInLine). Lines are
// counted from 1, blank and comment lines too.
func parseNameLines(body []byte, l *nameList) {
	for line := 1; len(body) > 0; line++ {
		ln, rest, _ := bytes.Cut(body, []byte{'\n'})
		body = rest
		if name := api.NameInLine(ln); len(name) > 0 {
			l.add(line, string(name))
		}
	}
}

// parseNameJSON reads a JSON array of names or an object {"names": [...],
// "profile": "..."}, one token at a time.
func parseNameJSON(body []byte, l *nameList) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return jsonError(err)
	}
	switch tok {
	case json.Delim('['):
		if err := readNameArray(dec, l); err != nil {
			return err
		}
	case json.Delim('{'):
		if err := readNameObject(dec, l); err != nil {
			return err
		}
	default:
		return errorf(fasthttp.StatusBadRequest, "invalid JSON: expected an array of names or an object with \"names\", got %v", tok)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errorf(fasthttp.StatusBadRequest, "invalid JSON: unexpected data after the names")
	}
	return nil
}

// readNameObject reads the members of {"names": [...], "profile": "..."}
// after its opening brace, and the closing brace.
func readNameObject(dec *json.Decoder, l *nameList) error {
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return jsonError(err)
		}
		key, _ := tok.(string)
		if seen[key] {
			return errorf(fasthttp.StatusBadRequest, "invalid JSON: field %q given twice", key)
		}
		seen[key] = true
		switch key {
		case "names":
			tok, err := dec.Token()
			if err != nil {
				return jsonError(err)
			}
			if tok != json.Delim('[') {
				return errorf(fasthttp.StatusBadRequest, "invalid JSON: field \"names\" must be an array of strings")
			}
			if err := readNameArray(dec, l); err != nil {
				return err
			}
		case "profile":
			if err := dec.Decode(&l.profile); err != nil {
				var typ *json.UnmarshalTypeError
				if errors.As(err, &typ) {
					return errorf(fasthttp.StatusBadRequest, "invalid JSON: field \"profile\" must be a string, got %s", typ.Value)
				}
				return jsonError(err)
			}
			if err := api.CheckProfile(l.profile); err != nil {
				return errorf(fasthttp.StatusBadRequest, "%v", err)
			}
		case "challenge":
			var c string
			if err := dec.Decode(&c); err != nil {
				return errorf(fasthttp.StatusBadRequest, "invalid JSON: field \"challenge\" must be a string")
			}
			ch, err := store.ParseChallenge(c)
			if err != nil {
				return errorf(fasthttp.StatusBadRequest, "%v", err)
			}
			l.challenge = ch
		case "extra_names":
			var extra []string
			if err := dec.Decode(&extra); err != nil {
				return errorf(fasthttp.StatusBadRequest, "invalid JSON: field \"extra_names\" must be an array of strings")
			}
			for _, raw := range extra {
				n, err := hostname.NormalizePattern(raw)
				if err == nil {
					err = hostname.CheckOrderable(n)
				}
				if err != nil {
					return errorf(fasthttp.StatusBadRequest, "extra_names: %v", err)
				}
				if slices.Contains(l.extra, n) {
					return errorf(fasthttp.StatusBadRequest, "extra_names: %s is given twice", n)
				}
				l.extra = append(l.extra, n)
			}
		default:
			return errorf(fasthttp.StatusBadRequest, "unknown field %q (fields: \"names\", \"profile\", \"challenge\", \"extra_names\")", key)
		}
	}
	if _, err := dec.Token(); err != nil {
		return jsonError(err)
	}
	if !seen["names"] {
		return errorf(fasthttp.StatusBadRequest, "field \"names\" is required")
	}
	if len(l.extra) > 0 {
		// One certificate for one name and its extra names: the name must
		// be valid, and none of the extra names may be it.
		if l.entries == 1 && len(l.invalid) == 1 {
			return errorf(fasthttp.StatusBadRequest, "invalid name %q: %s", l.invalid[0].Name, l.invalid[0].Error)
		}
		if l.entries != 1 || len(l.names) != 1 {
			return errorf(fasthttp.StatusBadRequest, "extra_names go with exactly one valid name in \"names\" (the certificate's managed name); got %d names, %d valid", l.entries, len(l.names))
		}
		if slices.Contains(l.extra, l.names[0]) {
			return errorf(fasthttp.StatusBadRequest, "extra_names: %s is the managed name itself", l.names[0])
		}
	}
	return nil
}

// readNameArray reads the strings of an array after its opening bracket,
// and the closing bracket.
func readNameArray(dec *json.Decoder, l *nameList) error {
	for i := 1; dec.More(); i++ {
		tok, err := dec.Token()
		if err != nil {
			return jsonError(err)
		}
		s, ok := tok.(string)
		if !ok {
			return errorf(fasthttp.StatusBadRequest, "invalid JSON: name %d is not a string", i)
		}
		l.add(i, s)
	}
	if _, err := dec.Token(); err != nil {
		return jsonError(err)
	}
	return nil
}

// domainName normalizes the {name} of a route, answering 400 for a name
// that is not one.
func domainName(p params) (string, error) {
	n, err := hostname.NormalizePattern(p["name"])
	if err != nil {
		return "", errorf(fasthttp.StatusBadRequest, "%v", err)
	}
	return n, nil
}

// managedDomain returns the record of a managed name, answering 404 for a
// name that is not managed (or was removed, unless removedOK).
func (a *AdminAPI) managedDomain(ctx context.Context, name string, removedOK bool) (*store.Domain, error) {
	d, err := a.store.GetDomain(ctx, name)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, errorf(fasthttp.StatusNotFound, "%s is not managed: add it with POST /v1/domains", name)
	case err != nil:
		return nil, fmt.Errorf("get domain %s: %w", name, err)
	case d.State == store.StateRemoved && !removedOK:
		return nil, errorf(fasthttp.StatusNotFound, "%s was removed: add it again with POST /v1/domains", name)
	}
	return d, nil
}

// changeDomain applies change to the record of a managed name in one store
// transaction, so that it cannot undo what the renewer writes meanwhile,
// and returns the record as written. It answers 404 as managedDomain does.
func (a *AdminAPI) changeDomain(ctx context.Context, name string, removedOK bool, change func(*store.Domain)) (*store.Domain, error) {
	var out store.Domain
	err := a.store.UpdateDomain(ctx, name, func(d *store.Domain) error {
		if d.State == store.StateRemoved && !removedOK {
			return errRemoved
		}
		change(d)
		out = *d
		return nil
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, errorf(fasthttp.StatusNotFound, "%s is not managed: add it with POST /v1/domains", name)
	case errors.Is(err, errRemoved):
		return nil, errorf(fasthttp.StatusNotFound, "%s was removed: add it again with POST /v1/domains", name)
	case err != nil:
		return nil, err
	}
	return &out, nil
}

// showDomain answers GET /v1/domains/{name}.
func (a *AdminAPI) showDomain(ctx context.Context, rc *fasthttp.RequestCtx, p params) error {
	name, err := domainName(p)
	if err != nil {
		return err
	}
	d, err := a.managedDomain(ctx, name, true)
	if err != nil {
		return err
	}
	doc, err := a.domainDoc(ctx, d)
	if err != nil {
		return err
	}
	writeJSON(rc, fasthttp.StatusOK, doc)
	return nil
}

// domainDoc describes d with the certificate that serves it.
func (a *AdminAPI) domainDoc(ctx context.Context, d *store.Domain) (*api.Domain, error) {
	doc := &api.Domain{DomainRecord: domainRecord(d), RecentAttempts: []api.Attempt{}}
	if a.cfg.DNS01Record != nil {
		doc.DNS01CNAME = a.cfg.DNS01Record(d)
	}
	for _, at := range d.Attempts {
		doc.RecentAttempts = append(doc.RecentAttempts, api.Attempt{
			At: at.At, Outcome: string(at.Outcome), Error: at.Error, Serial: at.Serial, TookMS: at.Took.Milliseconds(),
			Challenge: string(at.Challenge),
		})
	}
	c, err := a.servingCertificate(ctx, d)
	if err != nil {
		return nil, err
	}
	if c != nil {
		doc.Certificate = &api.CertificateInfo{
			ID: c.ID, Names: c.Names, Serial: c.Serial, Issuer: c.Issuer,
			NotBefore: c.NotBefore, NotAfter: c.NotAfter, RenewAt: c.RenewAt,
			KeyType: string(c.KeyType), Source: string(c.Source), Origin: c.Origin,
		}
	}
	return doc, nil
}

// servingCertificate returns the certificate nginx gets for d's name: its
// own or the wildcard's one label up; for a wildcard record, the one it
// was issued. nil when there is none.
func (a *AdminAPI) servingCertificate(ctx context.Context, d *store.Domain) (*store.Certificate, error) {
	var c *store.Certificate
	var err error
	switch {
	case !hostname.IsWildcard(d.Name):
		c, err = a.store.LookupCertificate(ctx, d.Name)
	case d.CertID != "":
		c, err = a.store.GetCertificate(ctx, d.CertID)
	default:
		return nil, nil
	}
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("certificate of %s: %w", d.Name, err)
	}
	return c, nil
}

// domainRecord converts a store record to its API form.
func domainRecord(d *store.Domain) api.DomainRecord {
	return api.DomainRecord{
		Name: d.Name, State: string(d.State), Profile: d.Profile, Source: d.Source,
		NextAttempt: d.NextAttempt, Failures: d.Failures, LastError: d.LastError,
		FailingSince: d.FailingSince, AddedAt: d.AddedAt, UpdatedAt: d.UpdatedAt,
		ExtraNames: d.ExtraNames, ManagedWith: d.ManagedWith, Challenge: string(d.Challenge),
	}
}

// renewDomain answers POST /v1/domains/{name}/renew: the name becomes due
// now and is handed to the Scheduler ahead of the due index. A name
// managed with another (store.Domain.ManagedWith) renews that name, whose
// certificate serves both; the answer names it.
func (a *AdminAPI) renewDomain(ctx context.Context, rc *fasthttp.RequestCtx, p params) error {
	name, err := domainName(p)
	if err != nil {
		return err
	}
	d, err := a.managedDomain(ctx, name, false)
	if err != nil {
		return err
	}
	if d.ManagedWith != "" {
		name = d.ManagedWith
	}
	now := a.cfg.Now()
	d, err = a.changeDomain(ctx, name, false, func(d *store.Domain) {
		d.NextAttempt, d.UpdatedAt = now, now
	})
	if err != nil {
		return err
	}
	queued := false
	if a.cfg.Scheduler != nil {
		queued = a.cfg.Scheduler.Prioritize(name)
	}
	a.log.Info("renewal requested", "name", name, "state", string(d.State), "queued", queued)
	writeJSON(rc, fasthttp.StatusAccepted, api.RenewResponse{Name: name, Queued: queued})
	return nil
}

// removeDomain answers DELETE /v1/domains/{name}[?revoke=REASON]: the
// record is marked removed and leaves the due index. The certificate stays
// stored and served until it is deleted separately; with revoke= it is
// first revoked at the CA (see revoke), and nothing is removed when that
// fails. Removing a removed name changes nothing.
func (a *AdminAPI) removeDomain(ctx context.Context, rc *fasthttp.RequestCtx, p params) error {
	name, err := domainName(p)
	if err != nil {
		return err
	}
	reason, revoke := 0, false
	var bad error
	rc.QueryArgs().VisitAll(func(k, v []byte) {
		switch {
		case bad != nil:
		case string(k) != "revoke":
			bad = errorf(fasthttp.StatusBadRequest, "unknown query parameter %q (parameters: revoke)", k)
		case revoke:
			bad = errorf(fasthttp.StatusBadRequest, "query parameter \"revoke\" given twice")
		default:
			revoke = true
			reason, bad = ParseRevocationReason(string(v))
		}
	})
	if bad != nil {
		return bad
	}
	var rev *api.Revocation
	if revoke {
		d, err := a.managedDomain(ctx, name, true)
		if err != nil {
			return err
		}
		if rev, err = a.revoke(ctx, d, reason, name); err != nil {
			return err
		}
	}
	removed := false
	var with string
	d, err := a.changeDomain(ctx, name, true, func(d *store.Domain) {
		removed, with = false, d.ManagedWith
		if d.State != store.StateRemoved {
			d.State, d.NextAttempt, d.UpdatedAt, d.ManagedWith = store.StateRemoved, time.Time{}, a.cfg.Now(), ""
			removed = true
		}
	})
	if err != nil {
		return err
	}
	// The removal is finished on every DELETE, not only the one that marked
	// the record: when leaveSet failed after the mark, a retried DELETE
	// still takes the names managed with it along. leaveSet is idempotent.
	if err := a.leaveSet(ctx, d, with); err != nil {
		return err
	}
	if removed {
		a.log.Info("domain removed", "name", name, "revoked", revoke, "left_set_of", with, "extra_names", len(d.ExtraNames))
	}
	doc, err := a.domainDoc(ctx, d)
	if err != nil {
		return err
	}
	doc.Revoked = rev
	writeJSON(rc, fasthttp.StatusOK, doc)
	return nil
}
