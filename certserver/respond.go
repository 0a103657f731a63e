package certserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"strconv"
	"strings"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store"
	"github.com/valyala/fasthttp"
)

// databaseRetryAfter is the Retry-After of an answer given while the
// fleet's database is unavailable.
const databaseRetryAfter = 10

// storeFailure is the answer to a request the store failed with err when
// retrying later can help, else nil: 503 naming the fleet's database and
// the cause when the store could not reach it (store.ErrUnavailable; a
// write under way may have been made when it is store.ErrUncertain too), 503 when the store did not answer in time. It is
// the one place that decides how a store's failure is answered.
func storeFailure(err error) *api.Error {
	switch {
	case errors.Is(err, store.ErrUnavailable):
		what := "the request was not carried out"
		if errors.Is(err, store.ErrUncertain) {
			what = "the connection broke while a write was committed, so it may or may not have been made: look before sending it again"
		}
		return &api.Error{
			Status: fasthttp.StatusServiceUnavailable,
			Message: "the fleet's database (PostgreSQL) is unavailable, " + what + ": " + err.Error() +
				"; certificates are still served from each host's copy; try again once the database is back",
			Reason:     api.ReasonDatabaseUnavailable,
			RetryAfter: databaseRetryAfter,
		}
	case errors.Is(err, context.DeadlineExceeded):
		return errorf(fasthttp.StatusServiceUnavailable, "the store did not answer in time")
	}
	return nil
}

// writeJSON answers status with v as a JSON document.
func writeJSON(rc *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only a programming error gets here: every answer is a plain struct.
		b = []byte(`{"error":"internal error"}`)
		status = fasthttp.StatusInternalServerError
	}
	rc.SetStatusCode(status)
	rc.SetContentType("application/json")
	rc.Response.Header.Set("Cache-Control", "no-store")
	rc.SetBody(b)
	rc.WriteString("\n")
}

// writeError answers e.Status with e as the JSON error document.
func writeError(rc *fasthttp.RequestCtx, e *api.Error) {
	if e.RetryAfter > 0 {
		rc.Response.Header.Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	writeJSON(rc, e.Status, e)
}

// errorf returns an *api.Error with the given status and message.
func errorf(status int, format string, args ...any) *api.Error {
	return &api.Error{Status: status, Message: fmt.Sprintf(format, args...)}
}

// decodeJSON decodes the request body, a single JSON object, into dst.
// Unknown fields, trailing data and a content type other than JSON are
// refused. Its errors are *api.Error values naming the problem.
func decodeJSON(rc *fasthttp.RequestCtx, dst any) error {
	if ct := string(rc.Request.Header.ContentType()); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return errorf(fasthttp.StatusUnsupportedMediaType, "content type %q is not application/json", ct)
		}
	}
	body := rc.PostBody()
	if len(bytes.TrimSpace(body)) == 0 {
		return errorf(fasthttp.StatusBadRequest, "empty request body: expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errorf(fasthttp.StatusBadRequest, "invalid JSON: unexpected data after the object")
	}
	return nil
}

// jsonError explains a decoding error in the API's words.
func jsonError(err error) *api.Error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return errorf(fasthttp.StatusBadRequest, "invalid JSON at byte %d: %v", syn.Offset, err)
	case errors.As(err, &typ):
		if typ.Field == "" {
			return errorf(fasthttp.StatusBadRequest, "invalid JSON: expected an object, got %s", typ.Value)
		}
		return errorf(fasthttp.StatusBadRequest, "invalid JSON: field %q must be %s, got %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(fasthttp.StatusBadRequest, "invalid JSON: unexpected end of input")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return errorf(fasthttp.StatusBadRequest, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return errorf(fasthttp.StatusBadRequest, "invalid JSON: %v", err)
}

// jsonKind names a Go kind the way a JSON user thinks of it.
func jsonKind(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	case "bool":
		return "a boolean"
	}
	return "a number"
}
