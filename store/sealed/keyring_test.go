package sealed

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// secret is a key whose base64 form the tests look for in errors.
var secret = bytes.Repeat([]byte{0xA5}, KeySize)

func keyLine(id string, key []byte) string {
	return id + " " + base64.StdEncoding.EncodeToString(key) + "\n"
}

func writeKeyring(t *testing.T, text string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
	return path
}

func TestLoadKeyring(t *testing.T) {
	good := "# keys\n\n" + keyLine("old", secret) + "  " + keyLine("new-1", bytes.Repeat([]byte{7}, KeySize))
	path := writeKeyring(t, good, 0o640)
	kr, err := LoadKeyring(path)
	if err != nil {
		t.Fatal(err)
	}
	if kr.Current() != "new-1" {
		t.Errorf("current key %q, want the last one, new-1", kr.Current())
	}
	if got := strings.Join(kr.IDs(), ","); got != "old,new-1" {
		t.Errorf("IDs %s, want old,new-1", got)
	}
}

func TestLoadKeyringErrors(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString(secret)
	tests := []struct {
		desc string
		text string
		mode os.FileMode
		want string
	}{
		{"readable by others", keyLine("a", secret), 0o644, "mode 0644 lets other users at it"},
		{"empty", "# nothing\n", 0o600, "no key in it"},
		{"one field", "a\n", 0o600, "line 1: want \"ID KEY\", found 1 fields"},
		{"three fields", "# c\n" + "a " + b64 + " x\n", 0o600, "line 2: want \"ID KEY\", found 3 fields"},
		{"bad id", "a/b " + b64 + "\n", 0o600, "line 1: the first field is not a valid key ID: want 1 to 64 letters"},
		{"long id", strings.Repeat("x", 65) + " " + b64 + "\n", 0o600, "line 1: the first field is not a valid key ID: 65 characters, want 1 to 64"},
		{"duplicate", keyLine("a", secret) + keyLine("a", secret), 0o600, "line 2: key ID \"a\" appears twice"},
		{"not base64", "a " + b64[:10] + "!" + b64[11:] + "\n", 0o600, "line 1: the key (second field) is not standard base64"},
		{"short", keyLine("a", secret[:16]), 0o600, "line 1: the key (second field) is 16 bytes, want 32"},
		// The fields swapped: the key is where the ID belongs.
		{"swapped", "# c\n" + b64 + " a\n", 0o600, "line 2: the first field looks like a key, not a key ID: write \"ID KEY\""},
		{"swapped, key of another form", hex.EncodeToString(secret) + " a\n", 0o600, "line 1: the key (second field) is not standard base64"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			path := writeKeyring(t, tt.text, tt.mode)
			_, err := LoadKeyring(path)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) || !strings.Contains(msg, path) {
				t.Errorf("error %q, want it to name %s and say %q", msg, path, tt.want)
			}
			hexKey := hex.EncodeToString(secret)
			if strings.Contains(msg, b64[:12]) || strings.Contains(msg, b64[12:24]) || strings.Contains(msg, hexKey[:12]) {
				t.Errorf("error %q holds key material", msg)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "nope")
		_, err := LoadKeyring(path)
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("error %v, want one naming %s", err, path)
		}
	})
}

func TestGenerateKey(t *testing.T) {
	now := time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)
	a, err := GenerateKey(now)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := GenerateKey(now)
	if a == b {
		t.Fatal("two generated keys are the same")
	}
	if !strings.HasPrefix(a, "20261205-") {
		t.Errorf("line %q: want an ID starting with the date", a)
	}
	kr, err := ParseKeyring(strings.NewReader(a+"\n"+b+"\n"), "generated")
	if err != nil {
		t.Fatalf("generated lines do not load: %v", err)
	}
	if id, _, _ := strings.Cut(b, " "); kr.Current() != id {
		t.Errorf("current %q, want %q", kr.Current(), id)
	}
}
