package ratelimit

import (
	"time"

	"github.com/certserver/certserver/store"
)

// restoreHorizon bounds how far past its period a restored bucket may be
// empty: a saved time further out comes from a clock that jumped, and is
// cut to that.
const restoreHorizon = 7 * 24 * time.Hour

// Changes returns the buckets that changed since the previous call (the
// first call: since the Limiter was made), each with the wall-clock time
// it is full again (a bucket full now, whose saved copy is to go, with
// now), and starts afresh. The Renewer saves them in the store every
// second, so that a restart, or a crash, forgets at most that second of
// spending instead of handing the account full buckets again. A shared
// Limiter's buckets are in its store already: it has none to save.
func (l *Limiter) Changes() []store.RateBucket {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shared != nil || len(l.changed) == 0 {
		return nil
	}
	// The Limiter counts on the monotonic clock from its epoch; a saved
	// time is on the wall clock, which may have been stepped since.
	wall := l.now()
	now := l.since(wall)
	wall = wall.Round(0)
	out := make([]store.RateBucket, 0, len(l.changed))
	for k := range l.changed {
		b, ok := l.ref(k.Limit, k.Key)
		if !ok {
			continue
		}
		out = append(out, store.RateBucket{Limit: string(k.Limit), Key: k.Key, Full: wall.Add(max(l.get(l.buckets, b), now) - now)})
	}
	clear(l.changed)
	return out
}

// Restore puts back buckets saved from an earlier Limiter of the same
// account (Changes). A bucket that is full by now is skipped, as is one of
// a limit this Limiter does not know or no longer limits (a limit raised
// to unlimited is open at once; should the CA still disagree, its next
// rateLimited answer closes it again). A time further out than its
// limit's period and restoreHorizon (the clock jumped) is cut to that,
// and the cut counts as a change, so that the saved copy is mended; other
// restored buckets are not changes. A bucket this Limiter already holds
// keeps the later of the two times. A limit changed in between applies
// from now on to a bucket that is full again when it was. A shared
// Limiter restores nothing: its buckets are the store's.
func (l *Limiter) Restore(bs []store.RateBucket) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shared != nil {
		return
	}
	wall := l.now()
	now := l.since(wall)
	wall = wall.Round(0)
	for _, sb := range bs {
		b, ok := l.ref(LimitID(sb.Limit), sb.Key)
		if !ok || b.limit.Unlimited() {
			continue
		}
		tat := now + sb.Full.Sub(wall)
		if limit := now + b.limit.Per + restoreHorizon; tat > limit {
			tat = limit
			l.changed[b.bucketKey()] = struct{}{}
		}
		if tat <= now || tat <= l.get(l.buckets, b) {
			continue
		}
		l.buckets.Set(b.bucketKey(), tat)
	}
}

// ref returns the bucket of limit id under key, and false for a limit the
// Limiter does not keep, or an account-wide limit with a key.
func (l *Limiter) ref(id LimitID, key string) (bucketRef, bool) {
	d, ok := limitOf(id)
	if !ok || d.accountWide() != (key == "") {
		return bucketRef{}, false
	}
	return l.refFor(id, key), true
}
