package main

import (
	"context"
	"sync"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
)

// Batches of `certserver import`.
const (
	// defaultImportBatch is how many certificates one request carries by
	// default.
	defaultImportBatch = 500
	// maxImportBatchBytes caps the PEM bytes of one request: well inside
	// the server's body limit (certserver.DefaultAdminMaxImportBatchBody)
	// and one commit of its store.
	maxImportBatchBytes = 2 << 20
	// importUploads is how many batches are uploaded at once: one is
	// parsed and committed by the server while the next one travels.
	importUploads = 2
)

// importer walks the items to import, loads them and uploads them in
// batches (POST /v1/certificates/batch), or checks them here for a dry
// run. At most importUploads+2 batches are held at a time, whatever the
// number of items: memory does not grow with the tree.
type importer struct {
	e       *env
	cl      *client.Client // nil for a dry run
	timeout time.Duration
	batch   int
	now     time.Time

	mu    sync.Mutex
	fatal error // set once: the admin API is gone or refuses the token
}

// importBatch is a batch of loaded items, and their reports once done is
// closed.
type importBatch struct {
	items    []importItem
	outcomes []importOutcome
	done     chan struct{}
}

// run feeds every item walk yields, in batches, through upload (or a local
// check), and calls report with their reports in the order walked. It
// returns the error that stopped the uploads; the items not uploaded
// because of it are reported "not uploaded".
func (im *importer) run(ctx context.Context, walk func(yield func(importItem) bool), report func(importOutcome)) error {
	work := make(chan *importBatch)
	order := make(chan *importBatch, importUploads+1)
	go func() {
		defer close(order)
		defer close(work)
		im.batches(ctx, walk, func(b *importBatch) bool {
			order <- b
			select {
			case work <- b:
				return true
			case <-ctx.Done():
				// Reported as not uploaded.
				im.process(ctx, b)
				close(b.done)
				return false
			}
		})
	}()
	var wg sync.WaitGroup
	for range importUploads {
		wg.Go(func() {
			for b := range work {
				im.process(ctx, b)
				close(b.done)
			}
		})
	}
	for b := range order {
		<-b.done
		for _, o := range b.outcomes {
			report(o)
		}
	}
	wg.Wait()
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.fatal
}

// batches walks the items, loads them (unless the import has stopped) and
// hands them to send in batches of up to im.batch items and
// maxImportBatchBytes of PEM, until send returns false.
func (im *importer) batches(ctx context.Context, walk func(yield func(importItem) bool), send func(*importBatch) bool) {
	var b *importBatch
	var scratch []byte
	size := 0
	flush := func() bool {
		if b == nil {
			return true
		}
		ok := send(b)
		b, size = nil, 0
		return ok
	}
	walk(func(it importItem) bool {
		if im.stopped() == nil && ctx.Err() == nil {
			it.load(&scratch)
		}
		n := len(it.chain) + len(it.key)
		if b != nil && (len(b.items) == im.batch || size+n > maxImportBatchBytes) && !flush() {
			return false
		}
		if b == nil {
			b = &importBatch{done: make(chan struct{})}
		}
		b.items = append(b.items, it)
		size += n
		return true
	})
	flush()
}

// stopped returns the error that stopped the import, if any.
func (im *importer) stopped() error {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.fatal
}

// process fills b.outcomes: a local check on a dry run, else the server's
// results of one upload of the loaded items. Items that could not be read,
// or lack a chain or a key, are checked here and not sent.
func (im *importer) process(ctx context.Context, b *importBatch) {
	b.outcomes = make([]importOutcome, len(b.items))
	var reqs []api.ImportRequest
	var sent []int
	for i := range b.items {
		it := &b.items[i]
		// Without a chain or a key there is nothing to send: the local
		// check says what is missing in the words of an upload.
		if it.err != nil || im.cl == nil || len(it.chain) == 0 || len(it.key) == 0 {
			b.outcomes[i] = checkLocally(it, im.now)
			continue
		}
		reqs = append(reqs, api.ImportRequest{ChainPEM: string(it.chain), KeyPEM: string(it.key), Source: it.source, Origin: it.path})
		sent = append(sent, i)
	}
	if len(reqs) == 0 {
		return
	}
	notSent := func(reason, detail string) {
		for _, i := range sent {
			b.outcomes[i] = importOutcome{Path: b.items[i].path, Result: api.ResultSkipped, Reason: reason, Detail: detail}
		}
	}
	if im.stopped() != nil || ctx.Err() != nil {
		notSent(reasonUnreachable, "")
		return
	}
	uctx, cancel := context.WithTimeout(ctx, im.timeout)
	resp, err := im.cl.ImportCertificates(uctx, reqs)
	cancel()
	if err != nil {
		reason, detail, fatal := batchError(im.cl, err)
		if fatal != nil {
			im.mu.Lock()
			if im.fatal == nil {
				im.fatal = fatal
			}
			im.mu.Unlock()
		}
		notSent(reason, detail)
		return
	}
	for j, i := range sent {
		b.outcomes[i] = outcome(&b.items[i], &resp.Results[j])
	}
}
