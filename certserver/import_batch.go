package certserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"mime"
	"runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
	"github.com/valyala/fasthttp"
)

// importCertificates answers POST /v1/certificates/batch: a stream of
// api.ImportRequest objects, one per line, each parsed and decided as
// POST /v1/certificates does it (parseImport, decideImport), the
// certificates to write stored in one commit (writeImports; in several
// when they do not fit in one) before the answer, an
// api.ImportBatchResponse, is sent. When a later commit fails after an
// earlier one, the answer is still 200 and the certificates not stored
// are refused with status 500 (notStored). It logs one line per batch.
//
// Decoding a line and parsing its chain and key are most of the work, so
// they run on every CPU; deciding and writing happen in the order sent,
// under importMu, so that a certificate sent twice in a batch is decided
// against the first.
func (a *AdminAPI) importCertificates(ctx context.Context, rc *fasthttp.RequestCtx, _ params) error {
	start := time.Now()
	lines, err := importBatchLines(rc)
	if err != nil {
		return err
	}
	now := a.cfg.Now()
	results := make([]api.ImportResult, len(lines))
	certs := make([]*store.Certificate, len(lines))
	bad := make([]error, len(lines))
	parallel(len(lines), func(i int) {
		var in importInput
		if bad[i] = decodeImportLine(lines[i], &in); bad[i] != nil {
			return
		}
		c, err := parseImport(&in, now)
		if err != nil {
			results[i] = refusedImport(err)
			return
		}
		certs[i] = c
	})
	for i, err := range bad {
		if err != nil {
			e := jsonError(err)
			e.Message = fmt.Sprintf("certificate %d: %s", i+1, e.Message)
			return e
		}
	}

	a.importMu.Lock()
	defer a.importMu.Unlock()
	written := map[string]*store.Certificate{}
	var writes []*store.Certificate
	var at []int // at[k] is the index in the batch of writes[k]
	for i, c := range certs {
		if c == nil {
			continue
		}
		old, ok := written[c.ID]
		if !ok {
			if old, err = a.storedCertificate(ctx, c.ID); err != nil {
				return err
			}
		}
		d := decideImport(c, old)
		results[i] = api.ImportResult{Status: d.status, ImportResponse: d.resp}
		if d.write {
			writes = append(writes, c)
			at = append(at, i)
			written[c.ID] = c
		}
	}
	if n, err := a.writeImports(ctx, writes); err != nil {
		if n == 0 {
			return err
		}
		// A batch too large for one commit was written in parts and a
		// later part failed: the answer tells which were stored.
		a.log.Error("certificate batch partly stored", "stored", n, "not_stored", len(writes)-n, "error", err)
		lost := map[string]bool{}
		for k, i := range at[n:] {
			results[i] = notStored(results[i], err)
			lost[writes[n+k].ID] = true
		}
		for i, c := range certs {
			if c != nil && lost[c.ID] && results[i].Result != api.ResultImported && results[i].Result != api.ResultRefused {
				results[i] = notStored(results[i], err) // decided against one that was not stored
			}
		}
	}

	n := map[string]int{}
	for _, r := range results {
		switch {
		case r.Result == api.ResultImported && r.Status == fasthttp.StatusCreated:
			n["created"]++
		case r.Result == api.ResultImported:
			n["replaced"]++
		default:
			n[r.Result]++
		}
	}
	a.log.Info("certificate batch imported", "certificates", len(lines), "created", n["created"], "replaced", n["replaced"],
		"unchanged", n[api.ResultUnchanged], "skipped", n[api.ResultSkipped], "refused", n[api.ResultRefused],
		"first_id", firstID(results), "took", time.Since(start).Round(time.Millisecond))
	writeJSON(rc, fasthttp.StatusOK, api.ImportBatchResponse{Results: results})
	return nil
}

// importBatchLines splits the body of POST /v1/certificates/batch into
// its lines, one JSON object each (NDJSON; JSON strings hold no raw line
// breaks), blank lines dropped, at most api.MaxImportBatch. Its errors
// are *api.Error values.
func importBatchLines(rc *fasthttp.RequestCtx) ([][]byte, error) {
	if ct := string(rc.Request.Header.ContentType()); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/x-ndjson" && mt != "application/json") {
			return nil, errorf(fasthttp.StatusUnsupportedMediaType, "content type %q is not application/x-ndjson", ct)
		}
	}
	var lines [][]byte
	for line := range bytes.SplitSeq(rc.PostBody(), []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if len(lines) == api.MaxImportBatch {
			return nil, errorf(fasthttp.StatusRequestEntityTooLarge, "a batch holds at most %d certificates; send the others in another request", api.MaxImportBatch)
		}
		lines = append(lines, line)
	}
	if len(lines) == 0 {
		return nil, errorf(fasthttp.StatusBadRequest, "empty request body: expected one JSON object per line")
	}
	return lines, nil
}

// refusedImport is the result of a certificate parseImport refused.
func refusedImport(err error) api.ImportResult {
	r := api.ImportResult{Status: fasthttp.StatusUnprocessableEntity, Error: err.Error()}
	var ae *api.Error
	if errors.As(err, &ae) {
		r.Status, r.Reason, r.Error = ae.Status, ae.Reason, ae.Message
	}
	r.Result = api.ResultRefused
	return r
}

// notStored is the result of a certificate of a batch that was decided
// but not stored, because the write of the part of the batch it was in
// failed with err after earlier parts were committed.
func notStored(r api.ImportResult, err error) api.ImportResult {
	r.Status, r.Reason, r.ReplacedSerial, r.StoredNotAfter = fasthttp.StatusInternalServerError, "", "", time.Time{}
	r.Error = "not stored: " + err.Error() + "; send it again"
	ae := storeFailure(err)
	if ae == nil {
		errors.As(err, &ae)
	}
	if ae != nil {
		r.Status, r.Reason, r.Error = ae.Status, ae.Reason, "not stored: "+ae.Message
	}
	r.Result = api.ResultRefused
	return r
}

// firstID is the ID of the first certificate of a batch that has one, to
// find the batch in the log.
func firstID(results []api.ImportResult) string {
	for _, r := range results {
		if r.ID != "" {
			return r.ID
		}
	}
	return ""
}

// parallel calls fn(0) … fn(n-1) on as many goroutines as there are CPUs
// and returns when every call has returned. A panic in a call does not
// kill the process: the other calls still run, and parallel then panics
// in the caller's goroutine with a *workerPanic holding the first value
// and its stack, which the handler's recoverPanic turns into a 500.
func parallel(n int, fn func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), n)
	var next sync.Mutex
	i := 0
	var first *workerPanic
	call := func(j int) {
		defer func() {
			if v := recover(); v != nil {
				next.Lock()
				if first == nil {
					first = &workerPanic{value: v, stack: debug.Stack()}
				}
				next.Unlock()
			}
		}()
		fn(j)
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				next.Lock()
				j := i
				i++
				next.Unlock()
				if j >= n {
					return
				}
				call(j)
			}
		})
	}
	wg.Wait()
	if first != nil {
		panic(first)
	}
}

// workerPanic is a panic recovered on one of parallel's goroutines; its
// message holds the stack where it happened.
type workerPanic struct {
	value any
	stack []byte
}

func (p *workerPanic) Error() string {
	return fmt.Sprintf("%v\n\nin a parallel worker:\n%s", p.value, p.stack)
}
