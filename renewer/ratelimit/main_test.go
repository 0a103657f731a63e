package ratelimit_test

import (
	"testing"

	"github.com/certserver/certserver/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
