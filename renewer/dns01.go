package renewer

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/go-acme/lego/v4/challenge"
	"github.com/go-acme/lego/v4/challenge/dns01"
)

// DNS01 is how an ACMEIssuer answers dns-01 challenges (RFC 8555 section
// 8.4): a provider sets the TXT record at _acme-challenge of each name,
// lego waits until DNS serves it, then asks the CA to validate.
type DNS01 struct {
	// Provider returns the provider that sets and removes the TXT
	// records of one order; ctx is the order's context. A lego DNS
	// provider (providers/dns/...) is shared by every order; certserver's
	// own zone gives each order one that writes through the store.
	// Required.
	Provider func(ctx context.Context) challenge.Provider
	// PropagationTimeout bounds the wait for DNS to serve a TXT record
	// once it is set. Default 60 seconds (lego's).
	PropagationTimeout time.Duration
	// PollingInterval is how often DNS is asked meanwhile. Default 2
	// seconds (lego's).
	PollingInterval time.Duration
	// Resolvers are the recursive resolvers ("host:port") lego asks
	// whether a record is served and follows _acme-challenge CNAMEs with.
	// lego keeps one list for the whole process (a global of its
	// dns01 package, read without a lock by every order): NewACMEIssuer
	// sets it, never an order, and the first issuer made with Resolvers
	// sets it for the process; a later issuer with another list is
	// refused. Default nil: those of /etc/resolv.conf.
	Resolvers []string
	// SequenceInterval is, for a provider that sets one record at a time
	// at a name (lego's rfc2136 replaces the TXT RRset on every update,
	// so a wildcard and its apex cannot be present together), the wait
	// between the validation of one name and the next, for caches to
	// forget the previous record. Default: the provider's own (60
	// seconds for rfc2136). Providers that keep every value (certserver's
	// zone) set every record of an order at once and never wait.
	SequenceInterval time.Duration
	// SkipAuthoritative makes lego stop at the recursive resolvers,
	// without asking the zone's authoritative servers (on port 53) too.
	// Default false: both are asked, as lego does.
	SkipAuthoritative bool
}

// legoResolvers guards legoResolversSet, the list of recursive
// resolvers given to lego's process-wide setting (setLegoResolvers); nil
// until one is.
var (
	legoResolvers    sync.Mutex
	legoResolversSet []string
)

// setLegoResolvers sets lego's list of recursive resolvers to d's, when
// d has any. It is called when an issuer is made, before its orders run:
// lego reads the list without a lock during every order, so it is set
// once per process. The same list again is accepted; a different one is
// an error, since orders of an earlier issuer may be reading it.
func (d *DNS01) setLegoResolvers() error {
	if d == nil || len(d.Resolvers) == 0 {
		return nil
	}
	legoResolvers.Lock()
	defer legoResolvers.Unlock()
	if legoResolversSet != nil {
		if !slices.Equal(legoResolversSet, d.Resolvers) {
			return fmt.Errorf("resolvers %q differ from %q, set by an earlier issuer: lego keeps one list per process", d.Resolvers, legoResolversSet)
		}
		return nil
	}
	if err := dns01.AddRecursiveNameservers(d.Resolvers)(nil); err != nil {
		return err
	}
	legoResolversSet = slices.Clone(d.Resolvers)
	return nil
}

// ForgetLegoResolvers lets the next issuer set lego's list of recursive
// resolvers anew (DNS01.Resolvers). It is for tests that make issuers one
// after another in one process, each with its own DNS server: call it
// only once no order of an earlier issuer runs.
func ForgetLegoResolvers() {
	legoResolvers.Lock()
	defer legoResolvers.Unlock()
	legoResolversSet = nil
}

// options returns lego's dns01 options for one order of d.
func (d *DNS01) options() []dns01.ChallengeOption {
	var opts []dns01.ChallengeOption
	if d.SkipAuthoritative {
		opts = append(opts, dns01.DisableAuthoritativeNssPropagationRequirement())
	}
	return opts
}

// provider returns the provider of one order, with d's propagation
// timeout and polling interval, and its sequence interval when the
// provider is sequential.
func (d *DNS01) provider(ctx context.Context) challenge.Provider {
	timeout, interval := d.PropagationTimeout, d.PollingInterval
	if timeout <= 0 {
		timeout = dns01.DefaultPropagationTimeout
	}
	if interval <= 0 {
		interval = dns01.DefaultPollingInterval
	}
	p := d.Provider(ctx)
	tp := timedProvider{Provider: p, timeout: timeout, interval: interval}
	if seq, ok := p.(sequential); ok {
		every := d.SequenceInterval
		if every <= 0 {
			every = seq.Sequential()
		}
		return sequentialProvider{timedProvider: tp, every: every}
	}
	return tp
}

// sequential is implemented by lego providers that set one record at a
// time at a name: lego then validates an order's names one after another,
// waiting Sequential() between them.
type sequential interface{ Sequential() time.Duration }

// timedProvider gives lego the configured propagation timeout and polling
// interval in place of the provider's own.
type timedProvider struct {
	challenge.Provider
	timeout, interval time.Duration
}

var _ challenge.ProviderTimeout = timedProvider{}

func (p timedProvider) Timeout() (timeout, interval time.Duration) { return p.timeout, p.interval }

// sequentialProvider is a timedProvider that keeps its provider
// sequential, with the configured interval.
type sequentialProvider struct {
	timedProvider
	every time.Duration
}

var _ sequential = sequentialProvider{}

func (p sequentialProvider) Sequential() time.Duration { return p.every }
