package renewer

import (
	"time"

	"github.com/certserver/certserver/renewer/clocktest"
)

// fakeClock is the tests' clock (clocktest.Clock).
type fakeClock = clocktest.Clock

func newFakeClock(t time.Time) *fakeClock { return clocktest.New(t) }
