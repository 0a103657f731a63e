package certserver

import (
	"bytes"
	"context"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/certserver/certserver/certserver/api"
	"github.com/valyala/fasthttp"
)

// handlerFunc answers one admin API request. ctx is bounded by the request
// timeout and ends when the server stops; rc must not be kept after the
// handler returns. A returned *api.Error is written as the JSON error
// answer; any other error is logged and answered 500.
type handlerFunc func(ctx context.Context, rc *fasthttp.RequestCtx, p params) error

// params are the values of a route's "{name}" path segments.
type params map[string]string

// route is one method and path pattern of the admin API.
type route struct {
	// method is the HTTP method ("GET", "POST", …).
	method string
	// pattern is the path, where a segment "{name}" matches any one
	// non-empty segment and is passed to the handler as params["name"].
	pattern string
	// public routes are served without a token; keep them free of secrets.
	public bool
	// browser routes also take the token as the password of HTTP Basic
	// authentication (RFC 7617), which browsers ask for and send by
	// themselves, and challenge for it. Only for read-only pages: a
	// browser sends Basic credentials with cross-site requests too.
	browser bool
	// quiet routes, polled by machines, are logged at debug level.
	quiet bool
	// ownLog routes log a line of their own for each answered request;
	// their request line is at debug level unless the answer is an error.
	ownLog bool
	// maxBody is the largest request body accepted, in bytes; 0 means
	// AdminConfig.MaxBody for a method that carries a body, and
	// noBodyLimit for one that does not.
	maxBody int
	handle  handlerFunc

	segs []string
}

// noBodyLimit is the body limit of routes whose method carries no body.
const noBodyLimit = 4 << 10

// router finds the route for a method and path. Routes are few, so it
// scans them in order; the first match wins.
type router struct {
	routes []*route
}

// add registers rt. It panics on a malformed pattern, a programming error.
func (r *router) add(rt route) {
	if !strings.HasPrefix(rt.pattern, "/") || rt.method == "" || rt.handle == nil {
		panic("certserver: bad route " + rt.method + " " + rt.pattern)
	}
	rt.segs = strings.Split(rt.pattern[1:], "/")
	r.routes = append(r.routes, &rt)
}

// match returns the route for method and the raw path of a request (as
// sent, before any decoding) with its path parameters, percent-decoded.
// When no route matches, it returns nil and the methods the path is served
// for (empty when the path is unknown). A path with a segment that cannot
// be served (see pathSegment) matches nothing and comes with that error.
func (r *router) match(method, rawPath string) (*route, params, []string, *api.Error) {
	if !strings.HasPrefix(rawPath, "/") {
		return nil, nil, nil, nil
	}
	segs := strings.Split(rawPath[1:], "/")
	for i, s := range segs {
		v, err := pathSegment(s)
		if err != nil {
			return nil, nil, nil, err
		}
		segs[i] = v
	}
	var allowed []string
	for _, rt := range r.routes {
		p, ok := matchSegments(rt.segs, segs)
		if !ok {
			continue
		}
		if rt.method == method || (method == fasthttp.MethodHead && rt.method == fasthttp.MethodGet) {
			return rt, p, nil, nil
		}
		if !slices.Contains(allowed, rt.method) {
			allowed = append(allowed, rt.method)
		}
	}
	return nil, nil, allowed, nil
}

// matchSegments matches path segments against pattern segments.
func matchSegments(pattern, segs []string) (params, bool) {
	if len(pattern) != len(segs) {
		return nil, false
	}
	var p params
	for i, ps := range pattern {
		if len(ps) > 2 && ps[0] == '{' && ps[len(ps)-1] == '}' {
			if segs[i] == "" {
				return nil, false
			}
			if p == nil {
				p = params{}
			}
			p[ps[1:len(ps)-1]] = segs[i]
			continue
		}
		if ps != segs[i] {
			return nil, false
		}
	}
	return p, true
}

// pathSegment returns the percent-decoded value of one segment of a raw
// request path (RFC 3986 section 2.1). It is the one rule every endpoint
// applies to what it takes from a path (a name, a token), so that a handler
// acts on the segment the caller sent and nothing else: a segment that is
// a dot segment ("." or "..", RFC 3986 section 3.3), or decodes to one
// ("%2e%2e"), or holds a "/" or a "\" once decoded ("%2f", "%5c"), is
// refused with a 400 error naming it, as is a malformed escape.
// Decoding first and then resolving dot segments, as HTTP servers do for
// files, would let "a.example.com%2f..%2fb.example.com" act on
// b.example.com. Any other segment without "%" is returned as is, without
// allocating.
func pathSegment(raw string) (string, *api.Error) {
	if strings.IndexByte(raw, '%') < 0 {
		if raw != "." && raw != ".." && strings.IndexByte(raw, '\\') < 0 {
			return raw, nil
		}
	}
	v, err := url.PathUnescape(raw)
	switch {
	case err != nil:
		return "", errorf(fasthttp.StatusBadRequest, "path segment %s: malformed percent-encoding", quoteSegment(raw))
	case v == "." || v == "..":
		return "", errorf(fasthttp.StatusBadRequest, "path segment %s is a dot segment: name the resource itself", quoteSegment(raw))
	case strings.ContainsAny(v, "/\\"):
		return "", errorf(fasthttp.StatusBadRequest, "path segment %s (decoded %s) holds a slash or a backslash: a segment names one thing", quoteSegment(raw), quoteSegment(v))
	}
	return v, nil
}

// quoteSegment quotes a path segment for an error message, cut after
// maxNameEcho bytes.
func quoteSegment(s string) string {
	if len(s) > maxNameEcho {
		return strconv.Quote(s[:maxNameEcho]) + "…"
	}
	return strconv.Quote(s)
}

// pathParam returns the one segment after prefix of the raw path of a GET
// or HEAD request, percent-decoded, for the endpoints nginx and the CA call
// (prefix "{param}"). Otherwise it answers in plain text and returns false:
// 400 for a path with a segment pathSegment refuses, wherever it is; 404
// for another path; 405 for another method.
func pathParam(rc *fasthttp.RequestCtx, prefix string) (string, bool) {
	path := rc.URI().PathOriginal()
	for rest := path; len(rest) > 0; {
		var seg []byte
		seg, rest, _ = bytes.Cut(rest, []byte("/"))
		if bytes.IndexByte(seg, '%') < 0 && bytes.IndexByte(seg, '\\') < 0 && string(seg) != "." && string(seg) != ".." {
			continue
		}
		if _, err := pathSegment(string(seg)); err != nil {
			rc.Error(err.Message+"\n", fasthttp.StatusBadRequest)
			return "", false
		}
	}
	if len(path) <= len(prefix) || string(path[:len(prefix)]) != prefix || bytes.IndexByte(path[len(prefix):], '/') >= 0 {
		rc.Error("not found\n", fasthttp.StatusNotFound)
		return "", false
	}
	if !getOrHead(rc) {
		return "", false
	}
	v, err := pathSegment(string(path[len(prefix):]))
	if err != nil {
		rc.Error(err.Message+"\n", fasthttp.StatusBadRequest)
		return "", false
	}
	return v, true
}
