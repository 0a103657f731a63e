package pebbletest

import (
	"bytes"
	"testing"
	"time"
)

// The orders Pebble's output says were issued are noted, a line split
// across writes included, a line said twice does no harm, and the output
// is copied whole.
func TestIssuanceFollowsPebblesOutput(t *testing.T) {
	is := newIssuance()
	var out bytes.Buffer
	w := is.writer(&out)
	parts := []string{
		"Pebble 2026/12/06 01:29:14 Issued certificate serial 1db001c5 for ord",
		"er JrBw_x-2\nPebble 2026/12/06 01:29:14 POST /my-order/ -> calling handler()\n",
		"Pebble 2026/12/06 01:29:14 Issued certificate serial 1db001c5 for order JrBw_x-2\n",
	}
	for _, p := range parts {
		if _, err := w.Write([]byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := out.String(), parts[0]+parts[1]+parts[2]; got != want {
		t.Errorf("output copied as %q, want %q", got, want)
	}
	done := make(chan struct{})
	go func() {
		is.wait("JrBw_x-2")
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(issuedWait / 2):
		t.Fatal("the wait for an issued order did not end")
	}
	is.mu.Lock()
	other := is.chanLocked("JrBw")
	is.mu.Unlock()
	select {
	case <-other:
		t.Error("an order Pebble did not issue is taken as issued")
	default:
	}
}
