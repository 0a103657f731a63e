package renewer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/hostname"
)

// PolicyConfig says which names a handshake may bring under management
// (on-demand issuance). A name must pass every check that is configured; with
// none configured, on-demand issuance is off and every name is refused.
type PolicyConfig struct {
	// Allow lists the names on-demand issuance may serve. "shop.example.com"
	// matches that name only; "*.example.com" matches every name below
	// example.com at any depth, but not example.com itself. Empty: no
	// allow-list check.
	Allow []string
	// Targets are the IP addresses and host names that a name's A/AAAA
	// records or CNAME chain must point at, so that a name is ordered only
	// when the CA's validation would reach this host: the name passes when
	// any address or CNAME target is listed. Empty: no DNS check.
	Targets []string
	// AskURL, when set, is asked with GET AskURL?domain=NAME; a 200 answer
	// allows the name and anything else refuses it.
	AskURL string
	// AskTimeout bounds one ask request. Default 2 seconds.
	AskTimeout time.Duration
	// AllowTTL is how long an allowing decision is remembered. Default 10
	// minutes.
	AllowTTL time.Duration
	// DenyTTL is how long a refusing decision is remembered. Default 1 minute.
	DenyTTL time.Duration
	// MaxCached bounds the decisions remembered. Default 100,000.
	MaxCached int
	// Now returns the current time. Default time.Now.
	Now func() time.Time

	// Shared, set on a fleet host, is the fleet's store of verdicts: a
	// name is checked once for the whole fleet (see Check). Default nil:
	// this host checks every name itself (a single host).
	Shared store.Verdicts
	// Host is this host's name in the fleet, recorded with the checks it
	// claims. Required with Shared.
	Host string
	// SharedWait is how long a check waits for the verdict of another
	// host that is checking the name at the same moment; past it the
	// request is left undecided (the next handshake asks again). Default
	// AskTimeout plus 2 seconds.
	SharedWait time.Duration
}

// Decision is the outcome of a policy check.
type Decision struct {
	Allow  bool
	Reason string // why the name was refused or left undecided, or "" when allowed
	// Undecided says the name was neither allowed nor refused: the
	// fleet's verdicts could not be read (Err says why), or another host
	// is still checking the name. Nothing is remembered; the next request
	// asks again.
	Undecided bool
	// Err is the shared store's failure that left the name undecided.
	Err error
	// Transient says a refusal is this host's failure to check the name
	// (DNS unanswered or failing, the ask URL unreachable or answering a
	// server error), not a definite answer: a fleet shares it for
	// transientTTL at most (see decideShared).
	Transient bool
}

// Policy decides whether a name without a certificate may be issued one on
// demand. Decisions are cached. It is safe for concurrent use.
type Policy struct {
	cfg      PolicyConfig
	exact    map[string]bool
	suffixes []string // ".example.com" for "*.example.com"
	targets  Targets
	resolver *Resolver
	client   *http.Client
	log      *slog.Logger

	// claimMargin is claimMargin but in tests (see claimTTL).
	claimMargin time.Duration

	group singleflight.Group
	mu    sync.Mutex
	cache map[string]cachedDecision
}

type cachedDecision struct {
	Decision
	until time.Time
}

// NewPolicy validates cfg and returns its Policy. resolver is required when
// cfg.Targets is set.
func NewPolicy(cfg PolicyConfig, resolver *Resolver, logger *slog.Logger) (*Policy, error) {
	if logger == nil {
		return nil, errors.New("new policy: nil logger")
	}
	if cfg.AskTimeout <= 0 {
		cfg.AskTimeout = 2 * time.Second
	}
	if cfg.AllowTTL <= 0 {
		cfg.AllowTTL = 10 * time.Minute
	}
	if cfg.DenyTTL <= 0 {
		cfg.DenyTTL = time.Minute
	}
	if cfg.MaxCached <= 0 {
		cfg.MaxCached = 100_000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SharedWait <= 0 {
		cfg.SharedWait = cfg.AskTimeout + 2*time.Second
	}
	if cfg.Shared != nil && cfg.Host == "" {
		return nil, errors.New("new policy: shared verdicts without the host's name")
	}
	p := &Policy{
		cfg:      cfg,
		exact:    map[string]bool{},
		resolver: resolver,
		client:   &http.Client{Timeout: cfg.AskTimeout},
		log:      logger,
		cache:    map[string]cachedDecision{},

		claimMargin: claimMargin,
	}
	for _, pat := range cfg.Allow {
		n, err := hostname.NormalizePattern(pat)
		if err != nil {
			return nil, fmt.Errorf("on-demand allow list: %w", err)
		}
		if hostname.IsWildcard(n) {
			p.suffixes = append(p.suffixes, n[1:])
		} else {
			p.exact[n] = true
		}
	}
	var err error
	if p.targets, err = ParseTargets(cfg.Targets); err != nil {
		return nil, fmt.Errorf("on-demand targets: %w", err)
	}
	if len(cfg.Targets) > 0 && resolver == nil {
		return nil, errors.New("new policy: targets are set but there is no resolver")
	}
	if cfg.AskURL != "" {
		u, err := url.Parse(cfg.AskURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("on-demand ask URL %q: want an http or https URL", cfg.AskURL)
		}
	}
	return p, nil
}

// Enabled reports whether any check is configured, that is whether on-demand
// issuance is on at all.
func (p *Policy) Enabled() bool {
	return len(p.cfg.Allow) > 0 || len(p.cfg.Targets) > 0 || p.cfg.AskURL != ""
}

// Check decides whether name, a normalized host name, may be issued a
// certificate on demand. Concurrent checks of one name share one evaluation;
// decisions are remembered for AllowTTL or DenyTTL. A check that cannot be
// completed (DNS timeout, ask URL down) refuses the name for DenyTTL.
//
// With Shared (a fleet) a name this host has no decision on is checked
// once for the fleet: the host takes the fleet's verdict when there is
// one; else it claims the check, evaluates the name and records the
// verdict for every host (until AllowTTL or DenyTTL, a Transient refusal
// for 10 seconds at most); when another host
// claimed it first, it waits up to SharedWait for that host's verdict.
// The shared store down, or the wait over, the decision is Undecided.
func (p *Policy) Check(ctx context.Context, name string) Decision {
	if !p.Enabled() {
		return Decision{Reason: "on-demand issuance is not configured"}
	}
	now := p.cfg.Now()
	p.mu.Lock()
	c, ok := p.cache[name]
	p.mu.Unlock()
	if ok && now.Before(c.until) {
		return c.Decision
	}
	v, _, _ := p.group.Do(name, func() (any, error) {
		if p.cfg.Shared != nil {
			return p.checkShared(ctx, name), nil
		}
		d := p.evaluate(ctx, name)
		ttl := p.cfg.DenyTTL
		if d.Allow {
			ttl = p.cfg.AllowTTL
		}
		p.remember(name, cachedDecision{Decision: d, until: p.cfg.Now().Add(ttl)})
		return d, nil
	})
	return v.(Decision)
}

func (p *Policy) remember(name string, c cachedDecision) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.cache) >= p.cfg.MaxCached {
		now := p.cfg.Now()
		for k, v := range p.cache {
			if !now.Before(v.until) {
				delete(p.cache, k)
			}
		}
		// Still full of live decisions: forget an arbitrary tenth.
		for k := range p.cache {
			if len(p.cache) < p.cfg.MaxCached*9/10 {
				break
			}
			delete(p.cache, k)
		}
	}
	p.cache[name] = c
}

func (p *Policy) evaluate(ctx context.Context, name string) Decision {
	if len(p.cfg.Allow) > 0 && !p.listed(name) {
		return Decision{Reason: "not in the on-demand allow list"}
	}
	if len(p.cfg.Targets) > 0 {
		if d := p.pointsAtUs(ctx, name); !d.Allow {
			return d
		}
	}
	if p.cfg.AskURL != "" {
		return p.ask(ctx, name)
	}
	return Decision{Allow: true}
}

func (p *Policy) listed(name string) bool {
	if p.exact[name] {
		return true
	}
	for _, s := range p.suffixes {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

func (p *Policy) pointsAtUs(ctx context.Context, name string) Decision {
	ans, err := p.resolver.Lookup(ctx, name)
	if err != nil {
		// A name that does not exist is a definite answer; a lookup
		// that failed is not.
		return Decision{Reason: "DNS check failed: " + err.Error(), Transient: !errors.Is(err, ErrNoSuchName)}
	}
	if p.targets.pointsAt(ans, false) {
		// The name will be ordered now: its pre-flight, when it asks the
		// same Resolver, reads this answer instead of asking again.
		p.resolver.keep(name, ans)
		return Decision{Allow: true}
	}
	return Decision{Reason: fmt.Sprintf("DNS does not point at the configured targets (addresses %v, CNAMEs %v)", ans.Addrs, ans.CNAMEs)}
}

func (p *Policy) ask(ctx context.Context, name string) Decision {
	u, _ := url.Parse(p.cfg.AskURL) // validated in NewPolicy
	q := u.Query()
	q.Set("domain", name)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Decision{Reason: "ask URL: " + err.Error()}
	}
	resp, err := p.client.Do(req)
	if err != nil {
		p.log.Warn("on-demand ask URL failed", "name", name, "error", err)
		return Decision{Reason: "ask URL failed: " + err.Error(), Transient: true}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return Decision{Reason: fmt.Sprintf("ask URL answered %d", resp.StatusCode), Transient: resp.StatusCode >= 500}
	}
	return Decision{Allow: true}
}
