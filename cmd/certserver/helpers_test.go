package main

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certserver/certserver/store/certtest"
)

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testEnv returns an env whose output is captured and whose environment
// variables are vars.
func testEnv(vars map[string]string) (*env, *syncBuffer, *syncBuffer) {
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	return &env{
		stdin:  strings.NewReader(""),
		stdout: stdout,
		stderr: stderr,
		getenv: func(k string) string { return vars[k] },
		now:    time.Now,
	}, stdout, stderr
}

const testToken = "import-test-token"

// genCert returns a self-signed certificate for names expiring at notAfter
// and its key, PEM encoded.
func genCert(t *testing.T, notAfter time.Time, names ...string) (chain, key []byte) {
	t.Helper()
	c := certtest.New(t, certtest.Template{DNSNames: names, NotBefore: notAfter.Add(-90 * 24 * time.Hour), NotAfter: notAfter}, nil)
	return c.CertPEM, c.KeyPEM
}

// waitFor polls cond until it holds or 10 seconds pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
