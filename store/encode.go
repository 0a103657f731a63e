package store

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Records are stored as the JSON of their structs (Certificate, Domain,
// Account, challengeRecord). JSON values always start with '{'; a future
// binary encoding must start with another byte so both can be read.

// challengeRecord is the stored form of an HTTP-01 challenge.
type challengeRecord struct {
	KeyAuth string    `json:"key_auth"`
	Expires time.Time `json:"expires"`
}

// encode returns the stored form of a record.
func encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	return b, nil
}

// decodeItem decodes the value of item into v. The decoded record holds
// copies: nothing refers to Badger's memory once it returns.
func decodeItem(item *badger.Item, v any) error {
	return item.Value(func(b []byte) error {
		if err := json.Unmarshal(b, v); err != nil {
			return fmt.Errorf("decode %T at %q: %w", v, item.Key(), err)
		}
		return nil
	})
}
