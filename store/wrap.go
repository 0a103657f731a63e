package store

// Wrapper is implemented by a Store that decorates another one (store/sealed
// encrypts private keys on their way in and out of the Store it wraps).
// A decorator implements Store itself, and forwards the optional abilities
// of the store it wraps (ChangeFeed, Replica, ReplicationSource, …) only
// through Unwrap: callers find them with As.
type Wrapper interface {
	// Unwrap returns the Store this one decorates.
	Unwrap() Store
}

// As finds the first Store in the chain st, st.Unwrap(), st.Unwrap().Unwrap(),
// … that implements T (an optional ability such as ChangeFeed), the way
// errors.As walks wrapped errors. It is the one place callers look for an
// optional ability. An ability found below a decorator bypasses it: what
// it reads and writes is as the inner store holds it (a ReplicationSource
// under store/sealed hands out private keys sealed, and a Replica under it
// applies them as given), which is what a copy of the store wants.
func As[T any](st Store) (T, bool) {
	for st != nil {
		if v, ok := st.(T); ok {
			return v, true
		}
		w, ok := st.(Wrapper)
		if !ok {
			break
		}
		st = w.Unwrap()
	}
	var zero T
	return zero, false
}
