package certserver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// server is the life cycle shared by the endpoints: a fasthttp.Server, the
// listeners it serves on and the socket files to remove when it stops.
type server struct {
	srv             *fasthttp.Server
	log             *slog.Logger
	shutdownTimeout time.Duration
	// stop cancels the server-lifetime context handlers derive their
	// contexts from; it is called once the server has stopped.
	stop context.CancelFunc

	mu      sync.Mutex
	lns     []net.Listener
	sockets []*unixSocket
	addrs   []net.Addr
	serving bool
	closed  bool
}

// init makes s the server of an endpoint: a fasthttp.Server answering with
// h, with the read timeout on both reading a request and writing its
// answer, idle keep-alive connections closed after idle, bodies over
// maxBody refused, and fasthttp's own messages logged to log. It returns
// the server-lifetime context handlers derive theirs from, cancelled once
// the server has stopped.
func (s *server) init(h fasthttp.RequestHandler, log *slog.Logger, maxBody int, read, idle, shutdown time.Duration) context.Context {
	base, stop := context.WithCancel(context.Background())
	s.srv = &fasthttp.Server{
		Handler:                      h,
		Name:                         "certserver",
		ReadTimeout:                  read,
		WriteTimeout:                 read,
		IdleTimeout:                  idle,
		MaxRequestBodySize:           maxBody,
		DisablePreParseMultipartForm: true,
		NoDefaultContentType:         true,
		Logger:                       fasthttpLogger{log},
	}
	s.log, s.shutdownTimeout, s.stop = log, shutdown, stop
	return base
}

// listenTCP adds a TCP listener on addr. Unless allowNonLoopback is set,
// the address actually bound must be a loopback one: a name such as
// "localhost" is resolved by the system, and what it resolves to is checked
// too.
func (s *server) listenTCP(addr string, allowNonLoopback bool) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && !allowNonLoopback && !ta.IP.IsLoopback() {
		ln.Close()
		return fmt.Errorf("address %q resolved to %s: %w", addr, ta.IP, ErrNotLoopback)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lns = append(s.lns, ln)
	s.addrs = append(s.addrs, ln.Addr())
	return nil
}

// listenUnix adds a unix socket listener at path.
func (s *server) listenUnix(ctx context.Context, path string, mode fs.FileMode, group string) error {
	ln, sock, err := listenUnix(ctx, path, mode, group)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lns = append(s.lns, ln)
	s.sockets = append(s.sockets, sock)
	s.addrs = append(s.addrs, &net.UnixAddr{Name: path, Net: "unix"})
	return nil
}

// listenerAddrs returns the addresses of the listeners, unix sockets by
// their path.
func (s *server) listenerAddrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]net.Addr(nil), s.addrs...)
}

// serve serves on every listener until ctx is done or one of them fails,
// then shuts down gracefully: listeners close at once, requests in flight
// get shutdownTimeout to finish, socket files are removed. It returns the
// listener failure, or a shutdown that ran out of time; nil after a clean
// stop.
func (s *server) serve(ctx context.Context) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return errors.New("server is closed")
	case s.serving:
		s.mu.Unlock()
		return errors.New("server is already serving")
	case len(s.lns) == 0:
		s.mu.Unlock()
		return errors.New("no listeners: call Listen first")
	}
	s.serving = true
	lns := append([]net.Listener(nil), s.lns...)
	s.mu.Unlock()

	errc := make(chan error, len(lns))
	for _, ln := range lns {
		go func() {
			err := s.srv.Serve(ln)
			if err != nil {
				err = fmt.Errorf("serve on %s: %w", ln.Addr(), err)
			}
			errc <- err
		}()
	}
	var first error
	pending := len(lns)
	select {
	case <-ctx.Done():
	case first = <-errc:
		pending--
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.shutdownTimeout)
	defer cancel()
	serr := s.srv.ShutdownWithContext(sctx)
	if serr != nil && first == nil && errors.Is(serr, context.DeadlineExceeded) {
		first = fmt.Errorf("shutdown: requests still in flight after %s", s.shutdownTimeout)
	}
	// Shutdown closes the listeners the fasthttp server knows; closing them
	// here too covers a Serve goroutine that had not registered yet.
	closeErr := s.close()
	for ; pending > 0; pending-- {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	if first == nil {
		first = closeErr
	}
	return first
}

// close closes the listeners, removes the socket files and cancels the
// server-lifetime context. It is idempotent.
func (s *server) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, ln := range s.lns {
		ln.Close()
	}
	var errs []error
	for _, sock := range s.sockets {
		if err := sock.remove(); err != nil {
			errs = append(errs, fmt.Errorf("remove socket %s: %w", sock.path, err))
		}
	}
	s.stop()
	return errors.Join(errs...)
}

// fasthttpLogger sends the fasthttp server's own messages to slog.
type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Warn("http server", "detail", fmt.Sprintf(format, args...))
}

// recoverPanic turns a panic in a handler into a 500 and an error log, so
// that one bad request cannot take the sidecar down.
func recoverPanic(log *slog.Logger, rc *fasthttp.RequestCtx, write func(rc *fasthttp.RequestCtx)) {
	if v := recover(); v != nil {
		log.Error("panic in handler", "method", string(rc.Method()), "path", string(rc.URI().PathOriginal()),
			"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		rc.Response.Reset()
		write(rc)
	}
}
