package renewer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ErrNoSuchName is returned (wrapped) when DNS says a name does not exist
// (NXDOMAIN). Callers test for it with errors.Is.
var ErrNoSuchName = errors.New("no such name (NXDOMAIN)")

// maxCNAMEHops bounds how many CNAME records a lookup follows.
const maxCNAMEHops = 8

// Resolver asks DNS servers directly with miekg/dns, so that pre-flight and
// on-demand checks see what the CA's resolvers see, not what a local cache
// or /etc/hosts says. It is safe for concurrent use.
type Resolver struct {
	servers []string
	udp     *dns.Client
	tcp     *dns.Client
	// kept are the answers the on-demand check read, kept for the
	// pre-flight of the orders that follow (answers.go).
	kept keptAnswers
	now  func() time.Time
}

// ednsSize is the UDP payload size the Resolver advertises (EDNS0, RFC
// 6891): the 1,232 bytes of DNS Flag Day 2020, which fit in one packet
// on any path. An answer larger than that comes back truncated and is
// asked again over TCP (RFC 7766), so that a long CAA set or a name with
// many addresses is read whole, never judged from a part.
const ednsSize = 1232

// NewResolver returns a Resolver asking servers ("host:port", tried in
// order) with the given timeout per exchange (0 means 2 seconds): a
// question answered truncated over UDP and asked again over TCP may take
// two per server. With no
// servers it reads the nameservers of /etc/resolv.conf.
func NewResolver(servers []string, timeout time.Duration) (*Resolver, error) {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	if len(servers) == 0 {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("read resolvers: %w", err)
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cc.Port))
		}
		if len(servers) == 0 {
			return nil, errors.New("read resolvers: /etc/resolv.conf names no nameserver")
		}
	}
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return nil, fmt.Errorf("resolver %q: want host:port: %w", s, err)
		}
	}
	return &Resolver{servers: servers, udp: &dns.Client{Timeout: timeout, UDPSize: ednsSize},
		tcp: &dns.Client{Net: "tcp", Timeout: timeout}, now: time.Now}, nil
}

// Answer is where a name points: the addresses its A and AAAA records give
// and the CNAME targets met on the way, lowercase without the trailing dot.
type Answer struct {
	Addrs  []netip.Addr
	CNAMEs []string
}

// Lookup resolves the A and AAAA records of name, following CNAME chains.
// A name that does not exist returns an error wrapping ErrNoSuchName; a name
// that exists without addresses returns an empty Answer and no error.
func (r *Resolver) Lookup(ctx context.Context, name string) (Answer, error) {
	var ans Answer
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
		if err := r.follow(ctx, name, qtype, &ans); err != nil {
			return Answer{}, err
		}
	}
	return ans, nil
}

// follow asks for qtype records of name and of the CNAME targets the
// answers lead to, adding what it finds to ans.
func (r *Resolver) follow(ctx context.Context, name string, qtype uint16, ans *Answer) error {
	for range maxCNAMEHops {
		msg, err := r.Query(ctx, name, qtype)
		if err != nil {
			return err
		}
		next := ""
		found := false
		for _, rr := range msg.Answer {
			switch rec := rr.(type) {
			case *dns.A:
				found = addAddr(ans, rec.A)
			case *dns.AAAA:
				found = addAddr(ans, rec.AAAA)
			case *dns.CNAME:
				target := canonical(rec.Target)
				if !slices.Contains(ans.CNAMEs, target) {
					ans.CNAMEs = append(ans.CNAMEs, target)
				}
				next = target
			}
		}
		if found || next == "" {
			return nil
		}
		name = next
	}
	return fmt.Errorf("lookup %s: more than %d CNAME hops", name, maxCNAMEHops)
}

// Query sends one question to the configured servers in turn until one
// answers, and returns its reply: over UDP with EDNS0, again over TCP when
// the answer was truncated. NXDOMAIN is an error wrapping ErrNoSuchName;
// SERVFAIL, REFUSED and network failures are plain errors (a later
// attempt may succeed), and so is an answer still truncated.
func (r *Resolver) Query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.RecursionDesired = true
	q.SetEdns0(ednsSize, false)
	var lastErr error
	for _, server := range r.servers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		reply, _, err := r.udp.ExchangeContext(ctx, q, server)
		if err == nil && reply.Truncated {
			reply, _, err = r.tcp.ExchangeContext(ctx, q, server)
			if err == nil && reply.Truncated {
				err = errors.New("answer truncated over TCP too")
			}
		}
		if err != nil {
			lastErr = fmt.Errorf("ask %s about %s %s: %w", server, name, dns.TypeToString[qtype], err)
			continue
		}
		switch reply.Rcode {
		case dns.RcodeSuccess:
			return reply, nil
		case dns.RcodeNameError:
			return nil, fmt.Errorf("%s: %w", name, ErrNoSuchName)
		default:
			lastErr = fmt.Errorf("ask %s about %s %s: %s", server, name, dns.TypeToString[qtype], dns.RcodeToString[reply.Rcode])
		}
	}
	return nil, lastErr
}

func addAddr(ans *Answer, ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	a = a.Unmap()
	if !slices.Contains(ans.Addrs, a) {
		ans.Addrs = append(ans.Addrs, a)
	}
	return true
}

func canonical(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, "."))
}
