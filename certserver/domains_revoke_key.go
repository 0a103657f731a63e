package certserver

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
)

// keyCompromise is the RFC 5280 reason code of a compromised key.
const keyCompromise = 1

// keyScanPage is how many certificate records retireKey reads at a time.
const keyScanPage = 1000

// retireKeyTimeout bounds retireKey. It runs on when the client gives
// up (the revocation is done; what follows must not stop half-way), and
// logs its outcome.
const retireKeyTimeout = 15 * time.Minute

// removePoolKey takes the key of c, revoked for keyCompromise, out of
// the key pool ([keys] reuse = "pool"), so that no new certificate takes
// it. revoke calls it before it makes any name due (reorder): a name
// ordered at once, by this host's renewer or another of the fleet, then
// finds the slot empty and makes a new key. An order that read the slot
// before is caught by the renewer's check before its certificate is
// stored (ACMEIssuer.poolKeyKept). Its answer is what retireKey
// completes.
func (a *AdminAPI) removePoolKey(ctx context.Context, c *store.Certificate) (*api.KeyShared, error) {
	key, err := store.ParseKey(c.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("the revoked certificate's key: %w", err)
	}
	id, err := store.PublicKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	ks := &api.KeyShared{KeyID: id}
	if p, ok := store.As[store.KeyPool](a.store); ok {
		if ks.PoolSlots, err = p.RemovePoolKey(ctx, id); err != nil {
			return nil, err
		}
	}
	return ks, nil
}

// retireKey deals with the rest of a revocation of c for keyCompromise,
// once removePoolKey took its key (ks.KeyID) out of the key pool: every
// other certificate on the same key is
// made due for renewal now with the managed names it serves (reorder),
// so that all of them move to new keys. They are found by their key,
// byte for byte (a pool key is copied into each certificate as it is),
// reading every record (200,000 in 1.4 s), and each is rewritten with
// its names (20,000 on one key in 13 s; both measured at a load of 20 on
// 2 cores). They are not revoked. skip is left alone, as reorder does.
func (a *AdminAPI) retireKey(ctx context.Context, c *store.Certificate, ks *api.KeyShared, skip string, now time.Time) (*api.KeyShared, error) {
	log := a.log.With("certificate", c.ID, "serial", c.Serial, "key_id", ks.KeyID)
	log.Info("compromised key: removed from the key pool; finding the other certificates on it", "pool_slots", ks.PoolSlots)
	start := time.Now()
	for after := ""; ; {
		page, err := a.store.ListCertificates(ctx, after, keyScanPage)
		if err != nil {
			return nil, err
		}
		for _, o := range page {
			if o.ID == c.ID || !bytes.Equal(o.KeyPEM, c.KeyPEM) {
				continue
			}
			ks.Certificates++
			names, err := a.reorder(ctx, o, "", skip, now)
			if err != nil {
				log.Error("compromised key: stopped making the certificates on it due", "done", ks.Certificates-1, "error", err)
				return nil, fmt.Errorf("certificate %s on the same key (%d before it made due): %w", o.ID, ks.Certificates-1, err)
			}
			ks.Reordered += len(names)
		}
		if len(page) < keyScanPage {
			break
		}
		after = page[len(page)-1].ID
	}
	log.Warn("compromised key retired: removed from the key pool, the other certificates on it due for renewal now",
		"pool_slots", ks.PoolSlots, "certificates", ks.Certificates, "reordered", ks.Reordered, "took", time.Since(start).Round(time.Millisecond))
	return ks, nil
}

// keySharedMessage says what retireKey did, for a revocation's message.
func keySharedMessage(ks *api.KeyShared) string {
	if ks.Certificates == 0 && ks.PoolSlots == 0 {
		return "; no other certificate uses its key"
	}
	var b bytes.Buffer
	if ks.PoolSlots > 0 {
		fmt.Fprintf(&b, "; its key was in the key pool ([keys] reuse = \"pool\"): removed, no new certificate takes it")
	}
	switch ks.Certificates {
	case 0:
		b.WriteString("; no other certificate uses it now")
	default:
		fmt.Fprintf(&b, "; %d other certificates use the same key: they are NOT revoked, and are due for renewal now onto new keys (%d managed names, at the renewer's pace); the CA may revoke them too", ks.Certificates, ks.Reordered)
	}
	return b.String()
}
