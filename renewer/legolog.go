package renewer

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	legolog "github.com/go-acme/lego/v4/log"
)

// lego v4 logs through one process-wide logger (lego/log.Logger). The
// renewer installs legoSink there once and points it at the slog logger of
// the most recently created ACMEIssuer.
var (
	legoSink        = &legoLogger{}
	installLegoSink sync.Once
)

// SetLegoLogger sends lego's log lines to l, under subsystem=lego: lego's
// "[INFO]" progress lines at debug level, "[WARN]" lines at warn, anything
// else at info, with the name lego prefixes ("[www.example.com] …") as the
// name attribute. lego's logger is global: the last call wins.
// NewACMEIssuer calls it with its own logger.
//
// lego logs URLs, names and its own errors, never private keys; certserver
// gives lego nothing else to log.
func SetLegoLogger(l *slog.Logger) {
	installLegoSink.Do(func() { legolog.Logger = legoSink })
	legoSink.target.Store(l.With("subsystem", "lego"))
}

// legoLogger adapts lego's StdLogger to slog.
type legoLogger struct {
	target atomic.Pointer[slog.Logger]
}

var _ legolog.StdLogger = (*legoLogger)(nil)

func (l *legoLogger) Print(args ...any)                 { l.emit(fmt.Sprint(args...)) }
func (l *legoLogger) Println(args ...any)               { l.emit(fmt.Sprintln(args...)) }
func (l *legoLogger) Printf(format string, args ...any) { l.emit(fmt.Sprintf(format, args...)) }

// Fatal, Fatalln and Fatalf log at error level and panic instead of
// exiting: a library must not end the sidecar. lego's library code does not
// call them; the renewer recovers panics from lego calls.
func (l *legoLogger) Fatal(args ...any) { l.fatal(fmt.Sprint(args...)) }
func (l *legoLogger) Fatalln(args ...any) {
	l.fatal(fmt.Sprintln(args...))
}
func (l *legoLogger) Fatalf(format string, args ...any) { l.fatal(fmt.Sprintf(format, args...)) }

func (l *legoLogger) fatal(msg string) {
	l.log(slog.LevelError, strings.TrimSpace(msg))
	panic("lego: " + msg)
}

func (l *legoLogger) emit(msg string) {
	msg = strings.TrimSpace(msg)
	level := slog.LevelInfo
	switch {
	case strings.HasPrefix(msg, "[INFO] "):
		level, msg = slog.LevelDebug, msg[len("[INFO] "):]
	case strings.HasPrefix(msg, "[WARN] "):
		level, msg = slog.LevelWarn, msg[len("[WARN] "):]
	}
	l.log(level, msg)
}

func (l *legoLogger) log(level slog.Level, msg string) {
	logger := l.target.Load()
	if logger == nil || !logger.Enabled(context.Background(), level) {
		return
	}
	// lego starts most lines with the names concerned: "[a.example] acme: …".
	if strings.HasPrefix(msg, "[") {
		if end := strings.Index(msg, "] "); end > 1 && !strings.ContainsAny(msg[1:end], " []") {
			logger.Log(context.Background(), level, msg[end+2:], "name", msg[1:end])
			return
		}
	}
	logger.Log(context.Background(), level, msg)
}
