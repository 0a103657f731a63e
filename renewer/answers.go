package renewer

import (
	"context"
	"sync"
	"time"
)

// keptAnswerTTL is how long an answer the on-demand check read is kept for
// the pre-flight of the order that follows it: long enough for the order
// to start (the name goes ahead of the queue), short enough that the
// pre-flight never judges from DNS a minute old.
const keptAnswerTTL = 30 * time.Second

// maxKeptAnswers bounds the answers kept; when it is reached, new answers
// are not kept (the pre-flight then asks DNS itself).
const maxKeptAnswers = 10_000

// keptAnswers are answers kept for one later reader (Resolver.keep,
// Resolver.lookupOnce). Safe for concurrent use.
type keptAnswers struct {
	mu sync.Mutex
	m  map[string]keptAnswer
}

type keptAnswer struct {
	ans Answer
	at  time.Time
}

// keep remembers ans, the answer for name that allowed it on demand, for
// the pre-flight of its order: that order then asks DNS once, not twice.
func (r *Resolver) keep(name string, ans Answer) {
	k := &r.kept
	now := r.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[string]keptAnswer{}
	}
	if len(k.m) >= maxKeptAnswers {
		for n, a := range k.m {
			if now.Sub(a.at) >= keptAnswerTTL {
				delete(k.m, n)
			}
		}
		if len(k.m) >= maxKeptAnswers {
			return
		}
	}
	k.m[canonical(name)] = keptAnswer{ans: ans, at: now}
}

// lookupOnce returns the answer kept for name (keep) when it is younger
// than keptAnswerTTL, and forgets it: it serves one pre-flight. Otherwise
// it asks DNS (Lookup).
func (r *Resolver) lookupOnce(ctx context.Context, name string) (Answer, error) {
	k := &r.kept
	now := r.now()
	k.mu.Lock()
	a, ok := k.m[canonical(name)]
	if ok {
		delete(k.m, canonical(name))
	}
	k.mu.Unlock()
	if ok && now.Sub(a.at) < keptAnswerTTL {
		return a.ans, nil
	}
	return r.Lookup(ctx, name)
}
