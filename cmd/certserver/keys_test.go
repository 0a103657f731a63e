package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/certserver/client"
	"github.com/certserver/certserver/store"
	"github.com/certserver/certserver/store/sealed"
)

// generateKeyLine runs `certserver keys generate` and returns its line.
func generateKeyLine(t *testing.T) (line, id string) {
	t.Helper()
	e, stdout, stderr := testEnv(nil)
	if code := run(context.Background(), e, []string{"keys", "generate"}); code != exitOK {
		t.Fatalf("keys generate: exit %d: %s", code, stderr)
	}
	line = strings.TrimSpace(stdout.String())
	id, _, _ = strings.Cut(line, " ")
	return line, id
}

// storedKeys opens the Badger store at dir (no server may have it open)
// and returns every certificate's and account's key as stored.
func storedKeys(t *testing.T, dir string, accounts ...string) map[string][]byte {
	t.Helper()
	b, err := store.OpenBadger(dir, store.BadgerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	out := map[string][]byte{}
	cs, err := b.ListCertificates(context.Background(), "", 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		out[c.ID] = c.KeyPEM
	}
	for _, id := range accounts {
		a, err := b.GetAccount(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		out["account "+id] = a.KeyPEM
	}
	for slot := 0; ; slot++ {
		k, err := b.PoolKey(context.Background(), store.KeyECDSAP256, slot)
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprintf("pool slot %d", slot)] = k.KeyPEM
	}
	return out
}

// TestKeysRotate runs the whole life of a key-encryption key against a
// real Badger store: a store with keys in clear gets a key file, new keys
// are sealed, a second key is appended and `certserver keys rotate`
// re-seals everything under it while serve runs, and with the first key
// removed from the file every certificate is still served. No log line
// and no output holds key material.
func TestKeysRotate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	storeDir := filepath.Join(dir, "store")
	kekPath := filepath.Join(dir, "kek")

	// A store from before encryption: one certificate, one account.
	oldChain, oldKey := genCert(t, time.Now().Add(30*24*time.Hour), "old.example.com")
	oldCert, err := store.ParseCertificate(oldChain, oldKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := store.OpenBadger(storeDir, store.BadgerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PutCertificate(ctx, oldCert); err != nil {
		t.Fatal(err)
	}
	if err := b.PutAccount(ctx, &store.Account{ID: "acct", Directory: "https://ca.test/dir", KeyPEM: oldKey}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.SwapPoolKey(ctx, "", &store.PoolKey{KeyType: store.KeyECDSAP256, Slot: 0, ID: "pool-a", KeyPEM: oldKey, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	b.Close()

	line1, id1 := generateKeyLine(t)
	line2, id2 := generateKeyLine(t)
	writeKEK := func(lines ...string) {
		t.Helper()
		if err := os.WriteFile(kekPath, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := `
[store]
path = "` + storeDir + `"
key_encryption_key_file = "` + kekPath + `"
[certs]
socket = ""
listen = "127.0.0.1:0"
[challenge]
listen = ""
[admin]
listen = "127.0.0.1:0"
[log]
level = "debug"
`
	var logs []string
	newChain, newKey := genCert(t, time.Now().Add(30*24*time.Hour), "new.example.com")
	want := map[string][]byte{"old.example.com": oldKey, "new.example.com": newKey}
	serveAll := func(s *served) {
		t.Helper()
		m := regexp.MustCompile(`certs_tcp=(127\.0\.0\.1:\d+)`).FindStringSubmatch(s.log.String())
		if m == nil {
			t.Fatalf("no certificate endpoint address in the log:\n%s", s.log)
		}
		for name, key := range want {
			resp, err := http.Get("http://" + m[1] + "/v1/certs/" + name)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.HasSuffix(body, key) {
				t.Errorf("GET %s: %d, want 200 with its key in clear", name, resp.StatusCode)
			}
		}
	}
	rotate := func(s *served, args ...string) (int, string, string) {
		t.Helper()
		e, stdout, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN_TOKEN": testToken})
		code := run(ctx, e, append([]string{"keys", "rotate", "--admin", s.admin}, args...))
		logs = append(logs, stdout.String(), stderr.String())
		return code, stdout.String(), stderr.String()
	}

	// 1. Sealing on: a new certificate is stored sealed, the old one in
	// clear still serves.
	writeKEK(line1)
	s := startServe(t, cfg)
	if !strings.Contains(s.log.String(), "key_encryption_key="+id1) {
		t.Errorf("the start line does not name the key in use, %s", id1)
	}
	cl, err := client.New(s.admin, testToken, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.ImportCertificate(ctx, &api.ImportRequest{ChainPEM: string(newChain), KeyPEM: string(newKey)}); err != nil {
		t.Fatal(err)
	}
	cl.CloseIdleConnections()
	serveAll(s)
	s.stop(t)
	logs = append(logs, s.log.String())
	raw := storedKeys(t, storeDir, "acct")
	if id, _ := sealed.KeyID(raw["new.example.com"]); id != id1 {
		t.Errorf("new certificate stored under key %q, want %s", id, id1)
	}
	if sealed.IsSealed(raw["old.example.com"]) || sealed.IsSealed(raw["account acct"]) {
		t.Error("a key stored before sealing was rewritten by serving")
	}

	// 2. A second key appended: rotate, in batches of one, with lines of
	// progress.
	writeKEK(line1, line2)
	s = startServe(t, cfg)
	code, stdout, stderr := rotate(s, "--batch", "1", "--progress", "lines")
	if code != exitOK || !strings.Contains(stdout, "rotated to key "+id2+": 4 records read, 4 re-encrypted, 0 already under it, 0 could not be decrypted") {
		t.Fatalf("keys rotate: exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, "certificates: 2 read, 2 re-encrypted; ACME accounts: 1 read, 1 re-encrypted; key pool keys: 1 read, 1 re-encrypted") {
		t.Errorf("the summary does not count each kind of record: %q", stdout)
	}
	if !strings.Contains(stderr, "4/4 records") {
		t.Errorf("no progress line in %q", stderr)
	}
	serveAll(s)
	s.stop(t)
	logs = append(logs, s.log.String())
	for what, v := range storedKeys(t, storeDir, "acct") {
		if id, _ := sealed.KeyID(v); id != id2 {
			t.Errorf("%s stored under key %q after rotation, want %s", what, id, id2)
		}
	}

	// 3. The first key removed: everything serves; rotating again does
	// nothing.
	writeKEK(line2)
	s = startServe(t, cfg)
	serveAll(s)
	code, stdout, _ = rotate(s)
	if code != exitOK || !strings.Contains(stdout, "4 records read, 0 re-encrypted, 4 already under it") {
		t.Errorf("second rotation: exit %d: %s", code, stdout)
	}
	s.stop(t)
	logs = append(logs, s.log.String())

	// Nothing printed or logged holds a key.
	all := strings.Join(logs, "\n")
	for _, l := range []string{line1, line2} {
		_, k, _ := strings.Cut(l, " ")
		if strings.Contains(all, k[:16]) {
			t.Error("a key-encryption key was logged or printed")
		}
	}
	for _, k := range [][]byte{oldKey, newKey} {
		lines := strings.Split(strings.TrimSpace(string(k)), "\n")
		if strings.Contains(all, lines[1]) {
			t.Error("a private key was logged or printed")
		}
	}
	if strings.Contains(all, "PRIVATE KEY") {
		t.Error("the logs mention a PEM private key")
	}
}

// TestKeysStartFailures: serve refuses a key file it should not use,
// naming it and the line, and printing no key.
func TestKeysStartFailures(t *testing.T) {
	dir := t.TempDir()
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))
	tests := []struct {
		desc string
		text string
		mode os.FileMode
		want string
	}{
		{"readable by all", "k1 " + key + "\n", 0o644, "mode 0644 lets other users at it"},
		{"malformed", "# keys\nk1 " + key[:20] + "\n", 0o600, "line 2: the key (second field) is 15 bytes, want 32"},
		{"fields swapped", key + " k1\n", 0o600, "line 1: the first field looks like a key, not a key ID"},
		{"missing", "", 0, "no such file"},
	}
	for i, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			kek := filepath.Join(dir, "kek"+string(rune('a'+i)))
			if tt.mode != 0 {
				if err := os.WriteFile(kek, []byte(tt.text), tt.mode); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(kek, tt.mode); err != nil {
					t.Fatal(err)
				}
			}
			cfgPath := filepath.Join(dir, "certserver.toml")
			cfg := "[store]\npath = \"" + filepath.Join(dir, "store") + "\"\nkey_encryption_key_file = \"" + kek + "\"\n" +
				"[certs]\nsocket = \"\"\nlisten = \"127.0.0.1:0\"\n[challenge]\nlisten = \"\"\n[admin]\nenabled = false\n"
			if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			e, _, stderr := testEnv(nil)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if code := run(ctx, e, []string{"serve", "--config", cfgPath}); code != exitFailure {
				t.Fatalf("exit code %d, want %d\n%s", code, exitFailure, stderr)
			}
			msg := stderr.String()
			if !strings.Contains(msg, "store.key_encryption_key_file") || !strings.Contains(msg, kek) || !strings.Contains(msg, tt.want) {
				t.Errorf("stderr %q: want it to name the key, %s and say %q", msg, kek, tt.want)
			}
			if strings.Contains(msg, key[:12]) {
				t.Error("the error holds the key")
			}
		})
	}
}

// TestKeysRotateReportsUnreadable: a stored key sealed under a key the
// file no longer holds is listed, left as it is, and makes the command
// exit 1.
func TestKeysRotateReportsUnreadable(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	storeDir, kekPath := filepath.Join(dir, "store"), filepath.Join(dir, "kek")
	lostLine, _ := generateKeyLine(t)
	line, id := generateKeyLine(t)
	lost, err := sealed.ParseKeyring(strings.NewReader(lostLine+"\n"), "lost")
	if err != nil {
		t.Fatal(err)
	}
	chain, key := genCert(t, time.Now().Add(30*24*time.Hour), "lost.example.com")
	c, err := store.ParseCertificate(chain, key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := store.OpenBadger(storeDir, store.BadgerOptions{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := sealed.Wrap(b, lost).PutCertificate(ctx, c); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if err := os.WriteFile(kekPath, []byte(line+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServe(t, "[store]\npath = \""+storeDir+"\"\nkey_encryption_key_file = \""+kekPath+"\"\n"+
		"[certs]\nsocket = \"\"\nlisten = \"127.0.0.1:0\"\n[challenge]\nlisten = \"\"\n[admin]\nlisten = \"127.0.0.1:0\"\n")
	e, stdout, stderr := testEnv(map[string]string{"CERTSERVER_ADMIN_TOKEN": testToken})
	if code := run(ctx, e, []string{"keys", "rotate", "--admin", s.admin, "--json", "--progress", "none"}); code != exitFailure {
		t.Fatalf("exit %d, want %d\n%s\n%s", code, exitFailure, stdout, stderr)
	}
	lostID, _, _ := strings.Cut(lostLine, " ")
	if !strings.Contains(stderr.String(), "certificate lost.example.com: ") || !strings.Contains(stderr.String(), `"`+lostID+`"`) {
		t.Errorf("stderr %q: want the record and its key ID", stderr)
	}
	var sum struct {
		KeyID    string           `json:"key_id"`
		Scanned  int              `json:"scanned"`
		Resealed int              `json:"resealed"`
		Failed   []api.KeyFailure `json:"failed"`
	}
	if err := json.Unmarshal([]byte(stdout.String()), &sum); err != nil {
		t.Fatalf("--json output %q: %v", stdout, err)
	}
	if sum.KeyID != id || sum.Scanned != 1 || sum.Resealed != 0 || len(sum.Failed) != 1 || sum.Failed[0].ID != "lost.example.com" {
		t.Errorf("summary %+v", sum)
	}
}

// TestRotateSummaryByKind: the summary's line names every kind the
// sidecar counted, the known ones first in their order, a kind this
// command does not know (a newer sidecar's) by its own name.
func TestRotateSummaryByKind(t *testing.T) {
	s := &rotateSummary{Kinds: map[string]*kindSummary{
		"pool": {Scanned: 3, Resealed: 1}, "certificate": {Scanned: 5, Resealed: 5}, "widget": {Scanned: 2},
	}}
	want := "certificates: 5 read, 5 re-encrypted; ACME accounts: 0 read, 0 re-encrypted; key pool keys: 3 read, 1 re-encrypted; widget: 2 read, 0 re-encrypted"
	if got := s.byKind(); got != want {
		t.Errorf("byKind() = %q\nwant %q", got, want)
	}
}
