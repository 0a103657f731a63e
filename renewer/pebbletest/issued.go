package pebbletest

import (
	"bytes"
	"io"
	"regexp"
	"sync"
	"time"
)

// Pebble v2.10.1 can deadlock on an order polled while it is issued: its
// order handler (POST /my-order/) read-locks the order twice
// (wfe.Order, then orderForDisplay), and the issuing goroutine
// (ca.CompleteOrder) write-locks it after the certificate is made. A
// write lock asked for between the two read locks blocks the second, and
// the first is never released: every request that touches the order,
// and soon the whole store, waits for ever. ACME clients poll the order
// right after finalizing it (lego does at once), which is exactly when
// the issuing goroutine runs. So the front holds a successful finalize's
// answer until Pebble has logged the order's certificate (issuance
// tracks that in Pebble's output) and a moment more: the client's poll
// then finds the order valid, and no issuing goroutine left to meet.

// issuedSettle is how long after the log line of an order's certificate
// the front still holds the finalize's answer: the issuing goroutine
// write-locks the order right after logging.
const issuedSettle = 20 * time.Millisecond

// issuedWait bounds how long the front holds a finalize's answer for an
// order whose certificate Pebble does not log.
const issuedWait = 10 * time.Second

// issuedLine is Pebble's log line of an issued certificate.
var issuedLine = regexp.MustCompile(`Issued certificate serial [0-9a-f]+ for order (\S+)`)

// issuance follows the orders whose certificates Pebble has issued, from
// its output. Its methods are safe for concurrent use.
type issuance struct {
	mu      sync.Mutex
	partial []byte
	done    map[string]chan struct{}
}

func newIssuance() *issuance { return &issuance{done: make(map[string]chan struct{})} }

// writer returns a writer of Pebble's output that copies it to w and
// notes the orders it says were issued.
func (is *issuance) writer(w io.Writer) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		is.scan(p)
		return w.Write(p)
	})
}

// scan notes the orders the complete lines of p (after what earlier
// writes left of a line) say were issued.
func (is *issuance) scan(p []byte) {
	is.mu.Lock()
	defer is.mu.Unlock()
	buf := append(is.partial, p...)
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			break
		}
		if m := issuedLine.FindSubmatch(buf[:i]); m != nil {
			c := is.chanLocked(string(m[1]))
			select {
			case <-c:
			default:
				close(c)
			}
		}
		buf = buf[i+1:]
	}
	is.partial = append(is.partial[:0:0], buf...)
}

// chanLocked returns the channel closed when order's certificate is
// issued; is.mu is held.
func (is *issuance) chanLocked(order string) chan struct{} {
	c, ok := is.done[order]
	if !ok {
		c = make(chan struct{})
		is.done[order] = c
	}
	return c
}

// wait waits until Pebble has issued order's certificate and issuedSettle
// more, issuedWait at most.
func (is *issuance) wait(order string) {
	is.mu.Lock()
	c := is.chanLocked(order)
	is.mu.Unlock()
	select {
	case <-c:
		time.Sleep(issuedSettle)
	case <-time.After(issuedWait):
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
