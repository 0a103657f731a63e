package certserver

import (
	"context"
	"slices"
	"strings"

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

// match returns the route for method and path with its path parameters.
// When no route matches, it returns nil and the methods the path is served
// for (empty when the path is unknown).
func (r *router) match(method, path string) (*route, params, []string) {
	if !strings.HasPrefix(path, "/") {
		return nil, nil, nil
	}
	segs := strings.Split(path[1:], "/")
	var allowed []string
	for _, rt := range r.routes {
		p, ok := matchSegments(rt.segs, segs)
		if !ok {
			continue
		}
		if rt.method == method || (method == fasthttp.MethodHead && rt.method == fasthttp.MethodGet) {
			return rt, p, nil
		}
		if !slices.Contains(allowed, rt.method) {
			allowed = append(allowed, rt.method)
		}
	}
	return nil, nil, allowed
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
