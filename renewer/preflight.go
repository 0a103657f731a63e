package renewer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/certserver/certserver/store"
	"github.com/miekg/dns"
)

// The steps of a pre-flight check, as PreflightError.Step names them.
const (
	// StepResolve: the name must resolve to an address.
	StepResolve = "resolve"
	// StepTargets: the name must point at the configured targets.
	StepTargets = "targets"
	// StepCAA: the name's CAA records must allow the CA (RFC 8659).
	StepCAA = "caa"
	// StepCNAME: for DNS-01 through certserver's own zone, the name's
	// _acme-challenge record must be a CNAME into the zone
	// (renewer/dnszone.CheckCNAME).
	StepCNAME = "cname"
)

// PreflightError is a pre-flight check that refused a name: ordering it now
// would fail validation and only spend the CA's failed-validation limit. It
// implements Permanent() bool, which the Renewer reads.
type PreflightError struct {
	// Name is the name checked.
	Name string
	// Step is the check that refused it: StepResolve, StepTargets,
	// StepCAA or StepCNAME.
	Step string
	// Kind is KindPermanent when DNS must change before the name can be
	// ordered (NXDOMAIN, points elsewhere, CAA forbids the CA), and
	// KindTransient when DNS could not be read (SERVFAIL, timeout) and a
	// later check may pass.
	Kind ErrorKind
	// Reason says why, in words for an operator: "CAA at example.com
	// allows only sectigo.com, not letsencrypt.org".
	Reason string
	// Err is the DNS error behind a transient refusal, nil otherwise.
	Err error
}

// Error reads "pre-flight NAME: REASON".
func (e *PreflightError) Error() string { return "pre-flight " + e.Name + ": " + e.Reason }

func (e *PreflightError) Unwrap() error { return e.Err }

// Permanent reports whether the refusal stands until DNS changes.
func (e *PreflightError) Permanent() bool { return e.Kind == KindPermanent }

// nameFault reports whether the refusal holds for every CA: the name does
// not resolve, does not point here, or its DNS cannot be read. A CAA
// record read without error refuses only the CA it was checked for.
func (e *PreflightError) nameFault() bool { return e.Step != StepCAA || e.Err != nil }

// PreflightConfig configures a Preflight. Zero fields take the defaults
// stated.
type PreflightConfig struct {
	// Targets are the IP addresses and host names a name must point at, as
	// in PolicyConfig.Targets: the name passes when one of its A/AAAA
	// addresses is listed, or one of the CNAME targets on its way. Empty:
	// not checked.
	Targets []string
	// AllAddresses makes the targets check stricter: unless the CNAME
	// chain passes through a listed host, every address of the name must be
	// listed. The CA may validate HTTP-01 against any of them (Let's
	// Encrypt tries IPv6 first), so an AAAA record left pointing at an old
	// host fails validation even when the A record points here. Default
	// false.
	AllAddresses bool
	// Method is the ACME validation method Check assumes (CheckFor takes
	// the order's), which a CAA
	// validationmethods parameter must list (RFC 8657 section 4). Default
	// "http-01".
	Method string
}

// Preflight checks, before an order is sent, that the CA will be able to
// validate a name: that it resolves, that it points at the configured
// targets, and that its CAA records allow the CA (RFC 8659). It asks DNS
// directly through a Resolver, as the CA does. It is safe for concurrent
// use.
type Preflight struct {
	cfg      PreflightConfig
	resolver *Resolver
	targets  Targets
}

// NewPreflight validates cfg and returns its Preflight, asking DNS through
// r.
func NewPreflight(cfg PreflightConfig, r *Resolver) (*Preflight, error) {
	if r == nil {
		return nil, errors.New("new pre-flight: nil resolver")
	}
	if cfg.Method == "" {
		cfg.Method = "http-01"
	}
	targets, err := ParseTargets(cfg.Targets)
	if err != nil {
		return nil, fmt.Errorf("pre-flight targets: %w", err)
	}
	return &Preflight{cfg: cfg, resolver: r, targets: targets}, nil
}

// Check runs the pre-flight checks for name, a normalized host name, and
// returns nil when the CA should be able to validate it, else a
// *PreflightError that says why not.
//
// caIdentities are the issuer domain names by which the CA's CAA records
// are written ("letsencrypt.org"); empty skips the CAA check. accountURI is
// the URL of the ACME account the order will use, matched against CAA
// accounturi parameters (RFC 8657 section 3); "" when it is not known yet.
//
// A wildcard name ("*.example.com") is only checked for CAA: there is no
// address to look up.
func (p *Preflight) Check(ctx context.Context, name string, caIdentities []string, accountURI string) error {
	return p.CheckFor(ctx, name, store.ChallengeType(p.cfg.Method), caIdentities, accountURI)
}

// CheckFor is Check for an order that proves control with challenge ch
// (http-01 when ""): a CAA validationmethods parameter must list ch, and
// for dns-01 the name's address is not checked, since the CA validates a
// TXT record and the name need not point here yet.
func (p *Preflight) CheckFor(ctx context.Context, name string, ch store.ChallengeType, caIdentities []string, accountURI string) error {
	if ch == "" {
		ch = store.ChallengeHTTP01
	}
	name = canonical(name)
	wildcard := strings.HasPrefix(name, "*.")
	if !wildcard && ch != store.ChallengeDNS01 {
		if err := p.checkAddress(ctx, name); err != nil {
			return err
		}
	}
	if len(caIdentities) == 0 {
		return nil
	}
	return p.checkCAA(ctx, name, string(ch), caIdentities, accountURI)
}

// checkAddress looks name up and checks it points at the targets. An
// answer the on-demand check read moments ago through the same Resolver
// is used instead of asking again (Resolver.lookupOnce).
func (p *Preflight) checkAddress(ctx context.Context, name string) error {
	ans, err := p.resolver.lookupOnce(ctx, name)
	switch {
	case errors.Is(err, ErrNoSuchName):
		return &PreflightError{Name: name, Step: StepResolve, Kind: KindPermanent,
			Reason: "name does not resolve: DNS says it does not exist (NXDOMAIN), or it is a CNAME to a name that does not"}
	case err != nil:
		return &PreflightError{Name: name, Step: StepResolve, Kind: KindTransient, Err: err,
			Reason: fmt.Sprintf("cannot look the name up (%v); will try again", err)}
	case len(ans.Addrs) == 0:
		return &PreflightError{Name: name, Step: StepResolve, Kind: KindPermanent,
			Reason: "name has no A or AAAA records" + viaCNAMEs(ans.CNAMEs) + ": the CA has nowhere to connect"}
	}
	if p.targets.Empty() || p.targets.pointsAt(ans, p.cfg.AllAddresses) {
		return nil
	}
	_, ours, stray := p.targets.match(ans)
	if len(ours) > 0 {
		return &PreflightError{Name: name, Step: StepTargets, Kind: KindPermanent,
			Reason: fmt.Sprintf("name points at %s here but also at %s%s, which is not a configured target; the CA may validate against any of them",
				strings.Join(ours, ", "), strings.Join(stray, ", "), viaCNAMEs(ans.CNAMEs))}
	}
	return &PreflightError{Name: name, Step: StepTargets, Kind: KindPermanent,
		Reason: fmt.Sprintf("name points at %s%s, not at the configured targets (%s)",
			strings.Join(stray, ", "), viaCNAMEs(ans.CNAMEs), strings.Join(p.targets.list(), ", "))}
}

func viaCNAMEs(cnames []string) string {
	if len(cnames) == 0 {
		return ""
	}
	return " (via CNAME " + strings.Join(cnames, ", ") + ")"
}

// checkCAA finds the Relevant RRset of name (RFC 8659 section 3) and checks
// it allows one of caIdentities.
//
// The search starts at name, or for a wildcard "*.example.com" at
// example.com, and climbs one label at a time up to the top-level domain,
// stopping at the first node whose CAA RRset is not empty. A query follows
// CNAMEs as any query does, so a name that is an alias gets the CAA records
// of its target; the climb goes on from the name's own parent, not the
// target's (RFC 8659 section 3 dropped RFC 6844's climb from the target). A
// node that does not exist (NXDOMAIN) has no records and the climb goes
// on. Any other failure (SERVFAIL, REFUSED, timeout) refuses the name for
// now: the CA does not issue when it cannot read CAA.
func (p *Preflight) checkCAA(ctx context.Context, name, method string, caIdentities []string, accountURI string) error {
	wildcard := strings.HasPrefix(name, "*.")
	node := strings.TrimPrefix(name, "*.")
	for {
		msg, err := p.resolver.Query(ctx, node, dns.TypeCAA)
		switch {
		case errors.Is(err, ErrNoSuchName):
		case err != nil:
			return &PreflightError{Name: name, Step: StepCAA, Kind: KindTransient, Err: err,
				Reason: fmt.Sprintf("cannot read CAA at %s (%v), and the CA does not issue while CAA cannot be read; will try again", node, err)}
		default:
			var set []*dns.CAA
			var via []string
			for _, rr := range msg.Answer {
				switch rec := rr.(type) {
				case *dns.CAA:
					set = append(set, rec)
				case *dns.CNAME:
					via = append(via, canonical(rec.Target))
				}
			}
			if len(set) > 0 {
				where := node + viaCNAMEs(via)
				return p.evaluateCAA(name, where, method, wildcard, set, caIdentities, accountURI)
			}
		}
		i := strings.IndexByte(node, '.')
		if i < 0 {
			return nil
		}
		node = node[i+1:]
	}
}

// caaKnownTags are the property tags whose meaning is understood: the ones
// RFC 8659 section 4 defines. Let's Encrypt understands these three and no
// other, so a critical issuemail or contactemail also stops it.
var caaKnownTags = map[string]bool{"issue": true, "issuewild": true, "iodef": true}

// evaluateCAA decides whether the Relevant RRset set, found at where,
// allows one of caIdentities to issue for name (RFC 8659 section 4).
//
//   - A property with an unknown tag and the critical flag forbids issuance
//     (section 4.1). The critical flag is bit 128; like Let's Encrypt, bit 1
//     is taken as critical too, since many zones set it by mistake.
//     Unknown tags without it are ignored.
//   - For a wildcard name the issuewild properties decide when there is at
//     least one, the issue properties otherwise; for any other name only
//     the issue properties (section 4.3).
//   - With none of them, CAA does not restrict issuance.
//   - Otherwise a property allows the CA when its issuer domain name
//     matches one of caIdentities, ignoring case and a final dot, and its
//     parameters allow us: accounturi, if present, must equal accountURI
//     (RFC 8657 section 3), and validationmethods, if present, must list
//     the order's challenge (RFC 8657 section 4); other parameters are
//     ignored. An empty issuer domain name (issue ";") allows no CA, and a
//     value that does not parse allows none either (section 4.2).
func (p *Preflight) evaluateCAA(name, where, method string, wildcard bool, set []*dns.CAA, caIdentities []string, accountURI string) error {
	refuse := func(kind ErrorKind, reason string) error {
		return &PreflightError{Name: name, Step: StepCAA, Kind: kind, Reason: reason}
	}
	var issue, issuewild []*dns.CAA
	var critical []string
	for _, rr := range set {
		tag := strings.ToLower(rr.Tag)
		switch {
		case tag == "issue":
			issue = append(issue, rr)
		case tag == "issuewild":
			issuewild = append(issuewild, rr)
		case !caaKnownTags[tag] && rr.Flag&(128|1) != 0:
			critical = append(critical, rr.Tag)
		}
	}
	if len(critical) > 0 {
		return refuse(KindPermanent, fmt.Sprintf("CAA at %s has the critical property %s, which CAs do not understand, so none will issue",
			where, strings.Join(critical, ", ")))
	}
	props, label := issue, "CAA"
	if wildcard && len(issuewild) > 0 {
		props, label = issuewild, "CAA issuewild"
	}
	if len(props) == 0 {
		return nil
	}
	ours := strings.Join(caIdentities, " or ")
	var others, why []string
	unknownAccount := false
	for _, rr := range props {
		issuer, params, err := parseCAAValue(rr.Value)
		if err != nil {
			why = append(why, fmt.Sprintf("has the %s value %q, which does not parse (%v) and so allows no CA", strings.ToLower(rr.Tag), rr.Value, err))
			continue
		}
		if issuer == "" {
			continue
		}
		if !slices.ContainsFunc(caIdentities, func(id string) bool { return sameIssuer(id, issuer) }) {
			if !slices.Contains(others, issuer) {
				others = append(others, issuer)
			}
			continue
		}
		if uri, ok := params["accounturi"]; ok && uri != accountURI {
			if accountURI == "" {
				unknownAccount = true
				why = append(why, fmt.Sprintf("allows %s only for account %s, and this account's URL is not known yet", issuer, uri))
			} else {
				why = append(why, fmt.Sprintf("allows %s only for account %s, not this one (%s)", issuer, uri, accountURI))
			}
			continue
		}
		if methods, ok := params["validationmethods"]; ok && !slices.Contains(strings.Split(methods, ","), method) {
			why = append(why, fmt.Sprintf("allows %s only with validation methods %s, not %s", issuer, methods, method))
			continue
		}
		return nil
	}
	if len(why) > 0 {
		kind := KindPermanent
		if unknownAccount {
			kind = KindTransient // knowing the account may be all it takes
		}
		return refuse(kind, fmt.Sprintf("%s at %s %s", label, where, strings.Join(why, "; ")))
	}
	if len(others) == 0 {
		return refuse(KindPermanent, fmt.Sprintf("%s at %s forbids issuance by any CA (%s \";\")", label, where, strings.ToLower(props[0].Tag)))
	}
	return refuse(KindPermanent, fmt.Sprintf("%s at %s allows only %s, not %s", label, where, strings.Join(others, ", "), ours))
}

// sameIssuer compares issuer domain names, ignoring case and a final dot.
func sameIssuer(a, b string) bool {
	return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
}

// parseCAAValue splits the value of an issue or issuewild property into the
// issuer domain name ("" when the value names none) and its parameters
// (RFC 8659 section 4.2):
//
//	issue-value = *WSP [issuer-domain-name *WSP]
//	              [";" *WSP [parameters *WSP]]
//	parameters  = (parameter *WSP ";" *WSP parameters) / parameter
//	parameter   = tag *WSP "=" *WSP value
//
// A parameter without "=" or with an empty tag is an error: the property
// then allows no CA.
func parseCAAValue(v string) (issuer string, params map[string]string, err error) {
	parts := strings.Split(v, ";")
	issuer = strings.Trim(parts[0], " \t")
	if strings.ContainsAny(issuer, " \t") {
		return "", nil, fmt.Errorf("issuer %q holds white space", issuer)
	}
	params = map[string]string{}
	for i, part := range parts[1:] {
		part = strings.Trim(part, " \t")
		if part == "" && i == len(parts)-2 {
			break // "ca.example;" and "ca.example; a=b;" end with an empty part
		}
		tag, value, ok := strings.Cut(part, "=")
		tag = strings.Trim(tag, " \t")
		if !ok || tag == "" {
			return "", nil, fmt.Errorf("parameter %q is not tag=value", part)
		}
		params[tag] = strings.Trim(value, " \t")
	}
	return issuer, params, nil
}
