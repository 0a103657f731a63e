package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/certserver/certserver/certserver"
	"github.com/certserver/certserver/renewer"
	"github.com/certserver/certserver/store"
)

// The renewer satisfies what the certserver package asks of it.
var (
	_ certserver.Scheduler  = (*renewer.Renewer)(nil)
	_ certserver.QueueStats = (*renewer.Renewer)(nil)
	_ certserver.OnDemand   = (*renewer.OnDemand)(nil)
	_ certserver.Revoker    = (*renewer.ACMEIssuer)(nil)
)

// acmeRequestTimeout bounds one HTTP request to the CA.
const acmeRequestTimeout = 30 * time.Second

// acmeFiles is what the files named in [acme] hold, read before the store
// is opened so that a bad file stops the start at once.
type acmeFiles struct {
	client *http.Client // trusts the system roots and acme.ca_roots
	eab    *renewer.ExternalAccount
}

// readACMEFiles reads acme.ca_roots and acme.eab_hmac_file. Its errors name
// the key.
func readACMEFiles(cfg acmeConfig) (*acmeFiles, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if cfg.CARoots != "" {
		b, err := os.ReadFile(cfg.CARoots)
		if err != nil {
			return nil, fmt.Errorf("acme.ca_roots: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("acme.ca_roots: %s holds no PEM certificate", cfg.CARoots)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	f := &acmeFiles{client: &http.Client{Transport: tr, Timeout: acmeRequestTimeout}}
	if cfg.EABHMACFile != "" {
		b, err := os.ReadFile(cfg.EABHMACFile)
		if err != nil {
			return nil, fmt.Errorf("acme.eab_hmac_file: %w", err)
		}
		key := strings.TrimSpace(string(b))
		if key == "" {
			return nil, fmt.Errorf("acme.eab_hmac_file: %s is empty", cfg.EABHMACFile)
		}
		f.eab = &renewer.ExternalAccount{KeyID: cfg.EABKID, HMACKey: key}
	}
	return f, nil
}

// issuance is the ACME side of the sidecar: the renewer and, when a check
// is configured, on-demand issuance.
type issuance struct {
	directory string
	issuer    *renewer.ACMEIssuer
	renewer   *renewer.Renewer
	onDemand  *renewer.OnDemand // nil when on-demand issuance is off
}

// newIssuance builds the issuer, the renewer and the on-demand policy of
// cfg over st. lego's log goes to logger. The renewer's metrics are
// registered with metrics, when it is not nil.
func newIssuance(cfg config, files *acmeFiles, st store.Store, metrics *certserver.Metrics, logger *slog.Logger) (*issuance, error) {
	a := cfg.ACME
	issuer, err := renewer.NewACMEIssuer(renewer.ACMEConfig{
		Directory:  a.Directory,
		Email:      a.Email,
		AgreeTerms: a.AgreeTerms,
		EAB:        files.eab,
		KeyType:    renewer.KeyType(a.KeyType),
		ReuseKey:   a.ReuseKey,
		Timeout:    a.Timeout.std(),
		HTTPClient: files.client,
	}, st, logger)
	if err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	renewer.SetLegoLogger(logger)
	// orderMetrics stays a nil interface when there are no metrics.
	var orderMetrics renewer.Metrics
	if metrics != nil {
		pm, err := renewer.NewPrometheusMetrics(metrics.Registerer())
		if err != nil {
			return nil, err
		}
		orderMetrics = pm
	}
	rn, err := renewer.New(renewer.Config{
		Workers:        cfg.Renewer.Workers,
		OrderTimeout:   a.Timeout.std(),
		IdleWait:       cfg.Renewer.IdleWait.std(),
		DefaultProfile: a.Profile,
		Metrics:        orderMetrics,
	}, st, issuer, logger)
	if err != nil {
		return nil, fmt.Errorf("renewer: %w", err)
	}
	is := &issuance{directory: a.Directory, issuer: issuer, renewer: rn}
	if !cfg.OnDemand.enabled() {
		return is, nil
	}
	o := cfg.OnDemand
	var resolver *renewer.Resolver
	if len(o.Targets) > 0 {
		if resolver, err = renewer.NewResolver(o.Resolvers, 0); err != nil {
			return nil, fmt.Errorf("on_demand.resolvers: %w", err)
		}
	}
	policy, err := renewer.NewPolicy(renewer.PolicyConfig{
		Allow:    o.Allow,
		Targets:  o.Targets,
		AskURL:   o.AskURL,
		AllowTTL: o.AllowTTL.std(),
		DenyTTL:  o.DenyTTL.std(),
	}, resolver, logger.With("subsystem", "on_demand"))
	if err != nil {
		return nil, fmt.Errorf("on_demand: %w", err)
	}
	if is.onDemand, err = renewer.NewOnDemand(renewer.OnDemandConfig{}, policy, st, rn, logger); err != nil {
		return nil, fmt.Errorf("on_demand: %w", err)
	}
	return is, nil
}

// run runs the renewer and on-demand issuance until ctx is done and waits
// for them to stop. It returns an error only when one of them stopped for
// another reason.
func (is *issuance) run(ctx context.Context) error {
	var wg sync.WaitGroup
	var err error
	wg.Go(func() {
		if e := is.renewer.Run(ctx); e != nil && !errors.Is(e, context.Canceled) {
			err = fmt.Errorf("renewer: %w", e)
		}
	})
	if is.onDemand != nil {
		wg.Go(func() { is.onDemand.Run(ctx) })
	}
	wg.Wait()
	return err
}
