package storetest

import (
	"testing"
)

// testBulkAddDomains adds Options.Bulk names in one AddDomains.
func testBulkAddDomains(t *testing.T, x *suite) {
}
