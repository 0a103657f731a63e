package ratelimit

import (
	"time"
)

// The bucket arithmetic. tat is the bucket's theoretical arrival time: the
// bucket holds Burst - (tat-now)/T tokens, where T is Interval, and is full
// when tat <= now. Taking a token moves tat to max(tat, now) + T, which is
// allowed while the result is at most now + Burst*T, that is while tat is
// at most now + (Burst-1)*T. An unlimited bucket has no tokens to count; its
// tat is only ever moved by the CA draining it, and it is open from tat on.

// slack is how far past now tat may be for one more token to fit.
func slack(lim Limit) time.Duration {
	return time.Duration(lim.Burst-1) * lim.Interval()
}

// readyAt is when the bucket holds a token (now when it does).
func readyAt(lim Limit, tat, now time.Duration) time.Duration {
	if lim.Unlimited() {
		return max(tat, now)
	}
	return max(tat-slack(lim), now)
}

// take spends one token if the bucket holds one, else leaves it as it is
// (as Boulder does with a spend it cannot make).
func take(lim Limit, tat, now time.Duration) time.Duration {
	if lim.Unlimited() || readyAt(lim, tat, now) > now {
		return tat
	}
	return max(tat, now) + lim.Interval()
}

// give returns one token, never filling past full.
func give(lim Limit, tat, now time.Duration) time.Duration {
	if lim.Unlimited() || tat <= now {
		return tat
	}
	return max(tat-lim.Interval(), now)
}

// drain empties the bucket so that its next token arrives at until.
func drain(lim Limit, tat, until time.Duration) time.Duration {
	if lim.Unlimited() {
		return max(tat, until)
	}
	return max(tat, until+slack(lim))
}
