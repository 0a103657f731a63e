package certserver

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store/sealed"
	"github.com/valyala/fasthttp"
)

// KeyRotator re-encrypts stored private keys under the current
// key-encryption key, one batch at a time, while the store serves.
// *sealed.Store implements it.
type KeyRotator interface {
	// Rotate re-seals up to limit records after cursor ("" starts at the
	// beginning) and returns what it did and the cursor to go on with
	// (see sealed.Store.Rotate). It is safe for concurrent use.
	Rotate(ctx context.Context, cursor string, limit int) (sealed.Rotation, error)
}

// rotateKeys answers POST /v1/keys/rotate (api.RotateKeysRequest,
// api.KeyRotation): one batch of the rotation.
func (a *AdminAPI) rotateKeys(ctx context.Context, rc *fasthttp.RequestCtx, _ params) error {
	if a.cfg.Keys == nil {
		return errorf(fasthttp.StatusConflict, "private keys are not encrypted at rest here: set [store] key_encryption_key_file and restart")
	}
	var req api.RotateKeysRequest
	if body := rc.PostBody(); len(body) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			return errorf(fasthttp.StatusBadRequest, "body: want a JSON object {\"cursor\": ..., \"limit\": ...}: %v", err)
		}
	}
	if req.Limit == 0 {
		req.Limit = api.DefaultRotateBatch
	}
	if req.Limit < 1 || req.Limit > api.MaxRotateBatch {
		return errorf(fasthttp.StatusBadRequest, "limit %d: want 1 to %d", req.Limit, api.MaxRotateBatch)
	}
	r, err := a.cfg.Keys.Rotate(ctx, req.Cursor, req.Limit)
	if errors.Is(err, sealed.ErrCursor) {
		return errorf(fasthttp.StatusBadRequest, "%v", err)
	}
	if err != nil {
		return err
	}
	out := api.KeyRotation{KeyID: r.KeyID, Kind: string(r.Kind), Total: r.Total, Scanned: r.Scanned, Resealed: r.Resealed, Next: r.Next, Done: r.Done}
	for _, f := range r.Failed {
		// The error names the record and the key ID, never key material.
		a.log.Error("key rotation: private key cannot be decrypted", "kind", string(f.Kind), "id", f.ID, "error", f.Err)
		out.Failed = append(out.Failed, api.KeyFailure{Kind: string(f.Kind), ID: f.ID, Error: f.Err.Error()})
	}
	a.log.Info("key rotation batch", "key_id", r.KeyID, "kind", string(r.Kind), "cursor", req.Cursor, "scanned", r.Scanned,
		"resealed", r.Resealed, "failed", len(r.Failed), "done", r.Done)
	writeJSON(rc, fasthttp.StatusOK, out)
	return nil
}
