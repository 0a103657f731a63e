package main

import (
	"testing"

	"github.com/certserver/certserver/store/pgtest"
)

// TestMain stops the PostgreSQL cluster the fleet tests share, if one was
// started, when the package's tests end.
func TestMain(m *testing.M) { pgtest.Main(m) }
