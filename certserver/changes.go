package certserver

import (
	"strconv"
	"strings"

	"github.com/certserver/certserver/store"
	"github.com/valyala/fasthttp"
)

// ChangesPath is the certificate endpoint's change feed:
//
//	GET /v1/changes?since=EPOCH.VERSION
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
// It answers 404 when the store keeps no change feed. nginx's Lua module
// asks about once a second per worker.
const ChangesPath = "/v1/changes"

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
	ctx, release := withLookupDeadline(e.base, e.cfg.LookupTimeout)
	ch, err := feed.CertChanges(ctx, ParseCursor(string(rc.QueryArgs().Peek("since"))))
	release()
	if err != nil {
		e.log.Error("change feed failed", "error", err)
		internalError(rc)
		return
	}
	rc.SetStatusCode(fasthttp.StatusOK)
	rc.SetContentType("text/plain; charset=utf-8")
	rc.Response.Header.Set("Cache-Control", "no-store")
	rc.SetBody(AppendChanges(nil, ch))
}

// AppendChanges appends to b the body of a 200 of ChangesPath for ch.
func AppendChanges(b []byte, ch store.Changes) []byte {
	b = append(b, ch.Next.Epoch...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, ch.Next.Version, 10)
	b = append(b, '\n')
	if ch.Reset {
		return append(b, "reset\n"...)
	}
	for _, n := range ch.Names {
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
