package renewer

import (
	"math/big"
	"testing"
	"time"

	"github.com/certserver/certserver/renewer/ratelimit"
	"github.com/certserver/certserver/store"
)

func TestClassifyOrder(t *testing.T) {
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	recent, err := selfSignedForLimiter("www.example.test", now.Add(-60*24*time.Hour), now.Add(30*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	old := *recent
	old.NotBefore = now.Add(-121 * 24 * time.Hour)
	unparsable := *recent
	unparsable.ChainPEM = nil
	lineage := *recent // a certbot lineage: -d www.example.test -d example.test -d shop.example.test
	lineage.Names = []string{"www.example.test", "example.test", "shop.example.test"}
	tests := []struct {
		desc string
		o    Order
		ari  bool
		want ratelimit.OrderKind
	}{
		{desc: "first certificate", o: Order{Name: "www.example.test"}, ari: true, want: ratelimit.OrderNew},
		{desc: "replacement with ARI", o: Order{Name: "www.example.test", Replaces: recent}, ari: true, want: ratelimit.OrderARIRenewal},
		{desc: "replacement without ARI", o: Order{Name: "www.example.test", Replaces: recent}, want: ratelimit.OrderRenewal},
		{desc: "replacement whose leaf does not parse", o: Order{Name: "www.example.test", Replaces: &unparsable}, ari: true, want: ratelimit.OrderRenewal},
		{desc: "replacement of a certificate older than 120 days", o: Order{Name: "www.example.test", Replaces: &old}, want: ratelimit.OrderNew},
		{desc: "the same set of three names, in another order, without ARI",
			o: Order{Name: "www.example.test", ExtraNames: []string{"shop.example.test", "example.test"}, Replaces: &lineage}, want: ratelimit.OrderRenewal},
		{desc: "the same set, with ARI", o: Order{Name: "www.example.test", ExtraNames: []string{"example.test", "shop.example.test"}, Replaces: &lineage},
			ari: true, want: ratelimit.OrderARIRenewal},
		{desc: "the same set, its replaces refused", o: Order{Name: "www.example.test", ExtraNames: []string{"example.test", "shop.example.test"},
			Replaces: &lineage, NoReplaces: true}, ari: true, want: ratelimit.OrderRenewal},
		{desc: "one name of a three-name certificate, without ARI", o: Order{Name: "www.example.test", Replaces: &lineage}, want: ratelimit.OrderNew},
		{desc: "one name of a three-name certificate, with ARI", o: Order{Name: "www.example.test", Replaces: &lineage}, ari: true, want: ratelimit.OrderARIRenewal},
		{desc: "a name added to the set, without ARI",
			o: Order{Name: "www.example.test", ExtraNames: []string{"example.test"}, Replaces: recent}, want: ratelimit.OrderNew},
		{desc: "ARI names a certificate the order shares no name with",
			o: Order{Name: "other.example.test", Replaces: recent}, ari: true, want: ratelimit.OrderNew},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			if got := ClassifyOrder(tc.o, tc.ari, now); got != tc.want {
				t.Errorf("ClassifyOrder = %s, want %s", got, tc.want)
			}
		})
	}
}

// selfSignedForLimiter is a certificate record for name valid from
// notBefore to notAfter, with an authority key identifier so that it has an
// ARI certificate identifier.
func selfSignedForLimiter(name string, notBefore, notAfter time.Time) (*store.Certificate, error) {
	return selfSignedWith(name, notBefore, notAfter, big.NewInt(42), []byte{1, 2, 3, 4})
}
