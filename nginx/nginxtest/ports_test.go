package nginxtest

import (
	"net"
	"strconv"
	"testing"
)

// A port FreeAddr gave a test is below the ephemeral range, and no other
// claim, in this process or another, gets it until the test ends.
func TestFreeAddrHoldsItsPort(t *testing.T) {
	var port int
	t.Run("holder", func(t *testing.T) {
		_, p, err := net.SplitHostPort(FreeAddr(t, "127.0.0.1"))
		if err != nil {
			t.Fatal(err)
		}
		if port, err = strconv.Atoi(p); err != nil || port < portLow || port >= ephemeralLow() {
			t.Fatalf("port %s, want one from %d to %d", p, portLow, ephemeralLow()-1)
		}
		if _, ok := claimPort(t, portLockDir(t), port); ok {
			t.Fatalf("port %d claimed again while the test that got it runs", port)
		}
	})
	release, ok := claimPort(t, portLockDir(t), port)
	if !ok {
		t.Fatalf("port %d still held after the test that got it ended", port)
	}
	release()
}
