package renewer

import (
	"math/rand/v2"
	"time"
)

// shortLived is the lifetime under which a certificate is renewed at half of
// its lifetime instead of two thirds: a 6-day certificate renewed at day 4
// leaves too little room for a CA outage.
const shortLived = 10 * 24 * time.Hour

// RenewalTime returns when a certificate valid from notBefore to notAfter
// should be renewed when its CA offers no renewal information: at two thirds
// of its lifetime (half of it for certificates shorter than 10 days), moved
// by up to 5% of the lifetime either way so that certificates issued
// together are not renewed together. rnd supplies the jitter; it must not be
// shared between goroutines.
func RenewalTime(notBefore, notAfter time.Time, rnd *rand.Rand) time.Time {
	life := notAfter.Sub(notBefore)
	if life <= 0 {
		return notBefore
	}
	at := notBefore.Add(life * 2 / 3)
	if life < shortLived {
		at = notBefore.Add(life / 2)
	}
	return at.Add(jitter(life/20, rnd))
}

// WindowTime picks a uniformly random point in an ACME Renewal Information
// suggested window (RFC 9773 section 4.2) as seen at now: a window that has
// begun is narrowed to [now, end], and a window that has ended yields now.
func WindowTime(start, end, now time.Time, rnd *rand.Rand) time.Time {
	if start.Before(now) {
		start = now
	}
	if !end.After(start) {
		return start
	}
	return start.Add(time.Duration(rnd.Int64N(int64(end.Sub(start)))))
}

// backoffSteps is how long the renewer waits after the first, second and
// third consecutive failure of a name; later failures wait a day.
var backoffSteps = [...]time.Duration{time.Minute, 10 * time.Minute, 100 * time.Minute}

// maxBackoff is the wait after the fourth and later consecutive failures.
const maxBackoff = 24 * time.Hour

// Backoff returns how long to wait before the next attempt after the given
// number of consecutive failures (1 for the first): about 1 minute, 10
// minutes, 100 minutes, then daily, each moved by up to 10% either way so
// that names that failed together are not retried together. A failures
// count below 1 is treated as 1.
func Backoff(failures int, rnd *rand.Rand) time.Duration {
	d := maxBackoff
	if failures < 1 {
		failures = 1
	}
	if failures <= len(backoffSteps) {
		d = backoffSteps[failures-1]
	}
	return d + jitter(d/10, rnd)
}

// jitter returns a uniformly random duration in [-limit, limit].
func jitter(limit time.Duration, rnd *rand.Rand) time.Duration {
	if limit <= 0 {
		return 0
	}
	return time.Duration(rnd.Int64N(int64(2*limit)+1)) - limit
}
