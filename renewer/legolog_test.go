package renewer

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
)

func TestLegoLogger(t *testing.T) {
	var buf bytes.Buffer
	l := &legoLogger{}
	l.target.Store(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))

	tests := []struct {
		desc  string
		log   func()
		level string
		msg   string
		name  string
	}{
		{desc: "info with a name", log: func() { l.Printf("[INFO] "+"[%s] acme: Trying to solve HTTP-01", "a.example.test") },
			level: "DEBUG", msg: "acme: Trying to solve HTTP-01", name: "a.example.test"},
		{desc: "warn", log: func() { l.Printf("[WARN] [%s] acme: cleaning up failed: %v", "a.example.test", "boom") },
			level: "WARN", msg: "acme: cleaning up failed: boom", name: "a.example.test"},
		{desc: "info without a name", log: func() { l.Printf("[INFO] acme: Registering account for %s", "ops@example.test") },
			level: "DEBUG", msg: "acme: Registering account for ops@example.test"},
		{desc: "several names stay in the message", log: func() { l.Printf("[INFO] [a.example.test, b.example.test] acme: Obtaining") },
			level: "DEBUG", msg: "[a.example.test, b.example.test] acme: Obtaining"},
		{desc: "plain println", log: func() { l.Println("server closed") }, level: "INFO", msg: "server closed"},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			buf.Reset()
			tc.log()
			var rec map[string]any
			if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
				t.Fatalf("log line %q: %v", buf.String(), err)
			}
			if rec["level"] != tc.level || rec["msg"] != tc.msg {
				t.Errorf("logged %s %q, want %s %q", rec["level"], rec["msg"], tc.level, tc.msg)
			}
			name, _ := rec["name"].(string)
			if name != tc.name {
				t.Errorf("name attribute %q, want %q", name, tc.name)
			}
		})
	}

	t.Run("fatal panics instead of exiting", func(t *testing.T) {
		defer func() {
			if recover() == nil {
				t.Error("Fatalf did not panic")
			}
		}()
		l.Fatalf("giving up: %s", "reason")
	})
}
