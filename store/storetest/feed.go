package storetest

import (
	"testing"

	"github.com/certserver/certserver/store"
)

// testChangeFeed checks store.ChangeFeed on a store that has it.
func testChangeFeed(t *testing.T, x *suite) {
	feed, ok := x.s.(store.ChangeFeed)
	if !ok {
		t.Log("the store has no change feed (store.ChangeFeed): nothing to check")
		return
	}
	_ = feed
}
