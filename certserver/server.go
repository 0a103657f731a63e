package certserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/certserver/certserver/store"
	"github.com/valyala/fasthttp"
)

// server is the life cycle shared by the endpoints: a fasthttp.Server, the
// listeners it serves on and the socket files to remove when it stops.
// Each endpoint embeds one, which gives it Addrs, Serve and Close.
type server struct {
	// name names the endpoint in errors ("admin API").
	name string
	srv  *fasthttp.Server
	// lingering, set before Serve, lets handlers make a connection
	// linger when it closes (lingerOnClose); lingers is then the
	// connections that do, from Serve on.
	lingering bool
	lingers   *lingerSet
	// log is the endpoint's logger.
	log *slog.Logger
	// base is the server-lifetime context handlers derive theirs from,
	// cancelled once the server has stopped.
	base            context.Context
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

// init makes s the server of the endpoint called name: a fasthttp.Server
// answering with h, with the read timeout on both reading a request and
// writing its answer, idle keep-alive connections closed after idle,
// bodies over maxBody refused, and its own messages and fasthttp's logged
// to log.
func (s *server) init(name string, h fasthttp.RequestHandler, log *slog.Logger, maxBody int, read, idle, shutdown time.Duration) {
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
	s.name, s.log, s.base, s.shutdownTimeout, s.stop = name, log, base, shutdown, stop
}

// prepare is the first step of an endpoint's constructor: it refuses a nil
// store or logger, and returns cfg with its zero fields set to their
// defaults, or the error of the first field out of range; errors name the
// endpoint.
func prepare[C interface{ withDefaults() (C, error) }](name string, cfg C, st store.Store, logger *slog.Logger) (C, error) {
	if st == nil {
		return cfg, errors.New(name + ": nil store")
	}
	if logger == nil {
		return cfg, errors.New(name + ": nil logger")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return cfg, fmt.Errorf("%s: %w", name, err)
	}
	return cfg, nil
}

// binding is what an endpoint listens on: a unix socket at Socket, with
// SocketMode and SocketGroup, when Socket is set; a TCP address, a
// loopback one unless AllowNonLoopback, when TCP is set.
type binding struct {
	Socket           string
	SocketMode       fs.FileMode
	SocketGroup      string
	TCP              string
	AllowNonLoopback bool
}

// listen binds what b names. ctx bounds the binding only (the check for a
// live server on an existing socket file), not the life of the listeners.
// On error nothing stays bound and the server cannot be used again.
func (s *server) listen(ctx context.Context, b binding) error {
	err := ctx.Err()
	if err == nil && b.Socket != "" {
		err = s.listenUnix(ctx, b.Socket, b.SocketMode, b.SocketGroup)
	}
	if err == nil && b.TCP != "" {
		err = s.listenTCP(b.TCP, b.AllowNonLoopback)
	}
	if err != nil {
		s.close()
		return fmt.Errorf("%s: %w", s.name, err)
	}
	return nil
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

// Addrs returns the addresses Listen bound: a *net.UnixAddr holding a
// socket's path, a *net.TCPAddr with the port actually bound.
func (s *server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]net.Addr(nil), s.addrs...)
}

// Serve answers requests on every listener until ctx is done or one of
// them fails, then stops gracefully: it stops accepting connections, lets
// requests in flight finish for up to the endpoint's ShutdownTimeout, and
// removes the socket files. It returns nil after a clean stop, or the
// error that stopped a listener, or a shutdown that ran out of time. An
// endpoint serves once.
func (s *server) Serve(ctx context.Context) error {
	if err := s.serve(ctx); err != nil {
		return fmt.Errorf("%s: %w", s.name, err)
	}
	return nil
}

// Close releases what Listen bound without serving, for when start-up fails
// elsewhere. Serve does it itself when it returns.
func (s *server) Close() error { return s.close() }

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
	lingers := s.lingers
	if s.lingering {
		lingers = &lingerSet{conns: make(map[*lingerConn]struct{})}
		s.lingers = lingers
	}
	s.mu.Unlock()

	errc := make(chan error, len(lns))
	for _, ln := range lns {
		go func() {
			var served net.Listener = ln
			if lingers != nil {
				served = lingerListener{ln, lingers}
			}
			err := s.srv.Serve(served)
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
	// fasthttp no longer counts a connection whose Close it called:
	// the lingering ones end here, not after the server has stopped.
	lingers.cut()
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

// getOrHead reports whether rc is a GET or HEAD request, answering 405
// when it is not.
func getOrHead(rc *fasthttp.RequestCtx) bool {
	if rc.IsGet() || rc.IsHead() {
		return true
	}
	rc.Error("method not allowed\n", fasthttp.StatusMethodNotAllowed)
	rc.Response.Header.Set("Allow", "GET, HEAD")
	return false
}

// durationField is a duration of a configuration: its name, where it is,
// and the default a zero value takes.
type durationField struct {
	name string
	v    *time.Duration
	def  time.Duration
}

// defaultDurations sets each zero field to its default, and refuses a
// negative one, naming it.
func defaultDurations(fields []durationField) error {
	for _, f := range fields {
		if *f.v < 0 {
			return fmt.Errorf("%s %v is negative", f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	return nil
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

// lingerTime bounds how long a connection marked to linger reads what its
// client still sends after the answer, before it closes.
const lingerTime = 5 * time.Second

// maxLingering bounds how many connections of a server linger at once;
// past it, a marked connection closes at once (its client may then see a
// reset instead of the answer).
const maxLingering = 64

// lingerListener accepts lingerConns of one lingerSet.
type lingerListener struct {
	net.Listener
	set *lingerSet
}

func (l lingerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &lingerConn{Conn: c, set: l.set}, nil
}

// lingerConn is a connection that, once marked (lingerOnClose), closes as
// nginx's lingering close does: Close ends its side (a FIN after the
// answer) and returns, and a goroutine reads and throws away what the
// client still sends, for lingerTime at most, then closes it. A server
// that closes while a request body is still arriving makes its system
// answer the rest with a reset, which can destroy the answer before the
// client has read it: the client says "connection reset by peer" instead
// of the 413 that names the limit.
type lingerConn struct {
	net.Conn
	set    *lingerSet
	linger atomic.Bool
}

func (c *lingerConn) Close() error {
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok || !c.linger.CompareAndSwap(true, false) || !c.set.start(c) {
		return c.Conn.Close()
	}
	if cw.CloseWrite() != nil {
		c.set.done(c)
		return c.Conn.Close()
	}
	go func() {
		defer c.set.done(c)
		io.Copy(io.Discard, c.Conn) //nolint:errcheck // the client's close, the deadline or a reset ends it alike
		c.Conn.Close()
	}()
	return nil
}

// lingerOnClose marks the connection of rc to linger when it closes (see
// lingerConn). The connections of a server without lingering (its
// lingering field) are left as they are.
func lingerOnClose(rc *fasthttp.RequestCtx) {
	if c, ok := rc.Conn().(*lingerConn); ok {
		c.linger.Store(true)
	}
}

// lingerSet is the lingering connections of a server, which its Serve
// cuts short and waits for when it stops. Its methods are safe for
// concurrent use; those of a nil set do nothing.
type lingerSet struct {
	mu      sync.Mutex
	conns   map[*lingerConn]struct{}
	stopped bool
	wg      sync.WaitGroup
}

// count returns how many connections linger now.
func (l *lingerSet) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns)
}

// start adds c and gives it lingerTime to read, unless the server stops
// or maxLingering linger already. The deadline is set under the lock,
// so that a cut, which sets it to now, cannot come between and be undone.
func (l *lingerSet) start(c *lingerConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped || len(l.conns) >= maxLingering || c.Conn.SetReadDeadline(time.Now().Add(lingerTime)) != nil {
		return false
	}
	l.conns[c] = struct{}{}
	l.wg.Add(1)
	return true
}

// done removes c, which start added.
func (l *lingerSet) done(c *lingerConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	l.wg.Done()
}

// cut ends the reading of every lingering connection now, and waits
// until they are closed; no connection lingers after it.
func (l *lingerSet) cut() {
	if l == nil {
		return
	}
	l.mu.Lock()
	l.stopped = true
	for c := range l.conns {
		c.Conn.SetReadDeadline(time.Now()) //nolint:errcheck // a closed connection needs no cut
	}
	l.mu.Unlock()
	l.wg.Wait()
}
