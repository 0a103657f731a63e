package certserver

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/hostname"
	"github.com/valyala/fasthttp"
)

// ChangesPath is the certificate endpoint's change feed:
//
//	GET /v1/changes?since=EPOCH.VERSION[&marks=1]
//
// answers 200, text/plain, with "EPOCH VERSION" on the first line (the
// cursor to ask with next), then either the line "reset" (the changes
// since the cursor given are not known: the cursor is of another store,
// older than the history kept, more than store.MaxChanges names behind, or
// missing; the reader must look up again everything it cached) or the names
// whose earlier answer may be out of date, one a line: those whose
// certificate was replaced or deleted, or moved to another certificate,
// since the cursor (store.ChangeFeed; a name that was not found before and
// now is, is not listed).
//
// With marks=1, a listed host name that no certificate serves at the
// time of this answer's lookups, or of those of an earlier answer at the
// same point of the feed (GET /v1/certs/NAME would answer 404: neither
// the name nor its wildcard one label up is stored) comes on a line
// "gone NAME" (GoneMark, a space, the name) instead: its certificate was
// deleted, or the last certificate holding it no longer does, and a
// reader should drop it at once rather than wait for its new answer,
// there being none. A name still served, through its wildcard too, comes
// plain; so do wildcard patterns (record IDs such as "*.example.com"),
// names whose lookup failed, and names the lookups had no time for (the
// marks have half the endpoint's LookupTimeout from the poll's start,
// waiting for other polls' lookups included, so that the answer stays
// well within the Lua module's read timeout): a plain line says only
// that the name changed. A reader is not told of a name twice: the
// cursor of an answer is past every name it lists, marked or not, so a
// name that came plain for lack of time is, for that reader, as a
// renewal (nginx's Lua module, with its pre-warm on, queues it, and the
// pre-warm's 404 drops it). No host name holds a space, so a marked line
// is never read as a name by a reader that asked for marks; a reader that did not ask (an older nginx module) never
// gets one. marks=0 or no marks is the answer without marks; any other
// value of marks, or marks given twice, answers 400 naming it. The
// workers of an nginx that poll at the same point of the feed share one
// round of lookups (goneMemo). Other parameters are ignored, so
// that a newer reader can ask an older sidecar (which answers without
// marks, every line a name).
//
// It answers 404 when the store keeps no change feed. nginx's Lua module
// asks about once a second per worker, with marks.
const ChangesPath = "/v1/changes"

// GoneMark starts a line of the change feed, followed by a space and a
// name, that names a host name no certificate serves (see ChangesPath).
const GoneMark = "gone"

// RecordHeader is the response header of a 200 from the certificate
// endpoint that names the stored record (its ID) serving the name asked.
const RecordHeader = "X-Certserver-Record"

// MatchHeader is the response header of a 200 from the certificate
// endpoint that names the stored name the answer was found by: the name
// asked itself, or the wildcard pattern one label up ("*.example.com").
// nginx's Lua module caches a name served through a pattern as one of
// the many a client can make up, whatever the record's first name.
const MatchHeader = "X-Certserver-Match"

// handleChanges answers GET /v1/changes.
func (e *CertEndpoint) handleChanges(rc *fasthttp.RequestCtx) {
	feed, ok := store.As[store.ChangeFeed](e.store)
	if !ok {
		rc.Error("no change feed\n", fasthttp.StatusNotFound)
		return
	}
	if !getOrHead(rc) {
		return
	}
	marks, err := parseMarks(rc.QueryArgs())
	if err != nil {
		rc.Error(err.Error()+"\n", fasthttp.StatusBadRequest)
		rc.Response.Header.Set("Cache-Control", "no-store")
		return
	}
	// One deadline for the feed and its marks: the answer comes within
	// LookupTimeout, below the Lua module's read timeout.
	start := time.Now()
	ctx, release := withLookupDeadline(e.base, e.cfg.LookupTimeout)
	defer release()
	ch, err := feed.CertChanges(ctx, ParseCursor(string(rc.QueryArgs().Peek("since"))))
	if err != nil {
		e.log.Error("change feed failed", "error", err)
		internalError(rc)
		return
	}
	var gone map[string]bool
	if marks && !ch.Reset && !rc.IsHead() {
		gone = e.goneNames(ctx, start, ch.Next, ch.Names)
	}
	rc.SetStatusCode(fasthttp.StatusOK)
	rc.SetContentType("text/plain; charset=utf-8")
	rc.Response.Header.Set("Cache-Control", "no-store")
	rc.SetBody(AppendChanges(nil, ch, gone))
}

// parseMarks reads the marks parameter of ChangesPath: "1" asks for
// marks, "0" or none for none; anything else, or the parameter given
// twice, is an error naming it.
func parseMarks(args *fasthttp.Args) (bool, error) {
	vs := args.PeekMulti("marks")
	switch {
	case len(vs) == 0:
		return false, nil
	case len(vs) > 1:
		return false, fmt.Errorf("marks given %d times: give it once, 1 or 0", len(vs))
	}
	switch string(vs[0]) {
	case "1":
		return true, nil
	case "0":
		return false, nil
	}
	return false, fmt.Errorf("marks=%s: want 1 (mark the names no certificate serves) or 0", strconv.Quote(string(vs[0])))
}

// goneMemo keeps, for one point of the change feed (the Next of an
// answer), which names goneNames found no certificate for and which it
// found one for. Every worker of an nginx polls about once a second with
// the cursor the others have, so after a batch they are all answered the
// same names at the same point: the first answer looks them up, the
// others read the memo. During a wave of renewals every poll has its own
// point and the memo mostly starts again. Reading it is as good as
// looking up, within a drop: an entry is the state at the time of its
// lookup, which can be a write later than at (a deletion that lands
// between the feed's answer and the lookup is marked under the earlier
// point, and a reader that drops the name asks for it again); and a name
// added for a name nothing served bumps no point, so "gone" can outlive
// it until the next point, costing a reader a drop and a fetch.
type goneMemo struct {
	// turn holds a value while a poll reads or fills the memo. A poll
	// waits for its turn no longer than its marks' own deadline, then
	// answers without marks.
	turn chan struct{}
	at   store.Cursor
	// gone holds the names looked up at at: true when no certificate
	// serves it. The keys are copies (a name of the feed's answer shares
	// the memory of its whole history entry). At most goneMemoMax names,
	// a couple of MB, kept until a poll at another point.
	gone map[string]bool
	// lastWarn is when a poll last logged that it listed names without
	// marks (Unix nanoseconds): at most one line a minute (warn), where
	// a wave on a slow store would make one a poll of every worker.
	lastWarn atomic.Int64
}

// marksWarnEvery is the least time between two lines of goneMemo.warn.
const marksWarnEvery = time.Minute

// warn logs msg with args unless it logged less than marksWarnEvery ago.
func (m *goneMemo) warn(log *slog.Logger, msg string, args ...any) {
	now := time.Now().UnixNano()
	last := m.lastWarn.Load()
	if now-last < int64(marksWarnEvery) || !m.lastWarn.CompareAndSwap(last, now) {
		return
	}
	log.Warn(msg+" (logged once a minute at most)", args...)
}

// goneMemoMax bounds the names a goneMemo keeps: readers far apart in
// the feed, all answered at one point, could otherwise fill it with every
// name of the history. Names past it are looked up by every poll.
const goneMemoMax = 4 * store.MaxChanges

// goneNames returns the host names of names, those of a change feed's
// answer at the point at, that no stored certificate serves now: those
// the certificate endpoint answers 404 for (lookup), or that e.marks
// holds as such at that point. Wildcard patterns are never in it, nor
// names whose lookup failed otherwise or that the time left no room for:
// a name left out is only said to have changed. A record whose key
// cannot be decrypted is still a certificate: the lookups read the store
// under the keys' sealing (e.marksStore) and open no key. They read the
// record cache the endpoint reads, and bring the renewed records in for
// the fetches that follow.
//
// The marks have half the endpoint's LookupTimeout from the poll's
// start, and no more than ctx, the poll's deadline, leaves them, waiting
// for the memo included: a poll answers within LookupTimeout (and one
// lookup that overruns it), well under the Lua module's
// read_timeout_ms, even with polls of other points ahead of it. A poll
// with no host name to mark neither waits nor looks up.
func (e *CertEndpoint) goneNames(ctx context.Context, start time.Time, at store.Cursor, names []string) map[string]bool {
	if !slices.ContainsFunc(names, func(n string) bool { return !hostname.IsWildcard(n) }) {
		return nil
	}
	m := &e.marks
	budget, release := withLookupDeadline(ctx, time.Until(start.Add(e.cfg.LookupTimeout/2)))
	defer release()
	select {
	case m.turn <- struct{}{}:
	default:
		// Done starts a timer: only when there is a wait.
		select {
		case m.turn <- struct{}{}:
		case <-budget.Done():
			m.warn(e.log, "change feed: names listed as changed only, not looked up for marks: other polls' lookups took the time",
				"names", len(names), "error", budget.Err())
			return nil
		}
	}
	defer func() { <-m.turn }()
	if m.gone == nil || m.at != at {
		m.at, m.gone = at, make(map[string]bool)
	}
	var gone map[string]bool
	var failed error
	looked, skipped := 0, 0
	for _, n := range names {
		if hostname.IsWildcard(n) {
			continue
		}
		no, ok := m.gone[n]
		if !ok {
			if budget.Err() != nil {
				// No time left: the names the memo holds are still marked.
				skipped++
				continue
			}
			_, found, err := lookup(budget, e.marksStore, n)
			if err != nil {
				skipped++
				if failed == nil {
					failed = err
				}
				continue
			}
			no = !found
			if len(m.gone) < goneMemoMax {
				m.gone[strings.Clone(n)] = no
			}
			looked++
		}
		if no {
			if gone == nil {
				gone = make(map[string]bool)
			}
			gone[n] = true
		}
	}
	if skipped > 0 {
		if failed == nil {
			failed = budget.Err()
		}
		// One line for all the names of an answer, and a minute at least
		// between two.
		m.warn(e.log, "change feed: names listed as changed only, not looked up for marks",
			"names", len(names), "looked_up", looked, "not_looked_up", skipped, "error", failed)
	}
	return gone
}

// AppendChanges appends to b the body of a 200 of ChangesPath for ch,
// each name in gone (nil: none) on a line "gone NAME" (GoneMark).
func AppendChanges(b []byte, ch store.Changes, gone map[string]bool) []byte {
	b = append(b, ch.Next.Epoch...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, ch.Next.Version, 10)
	b = append(b, '\n')
	if ch.Reset {
		return append(b, "reset\n"...)
	}
	for _, n := range ch.Names {
		if gone[n] {
			b = append(b, GoneMark+" "...)
		}
		b = append(b, n...)
		b = append(b, '\n')
	}
	return b
}

// ParseCursor reads the since parameter of ChangesPath, "EPOCH.VERSION";
// anything else is the zero cursor, which the feed answers with a reset.
func ParseCursor(s string) store.Cursor {
	epoch, v, ok := strings.Cut(s, ".")
	if !ok {
		return store.Cursor{}
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return store.Cursor{}
	}
	return store.Cursor{Epoch: epoch, Version: n}
}
