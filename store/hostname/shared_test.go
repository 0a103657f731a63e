package hostname

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// TestSharedNames holds Normalize to testdata/names.tsv, the table of SNI
// names that nginx's TestLuaValidName holds the Lua module's valid_name
// to: a name marked valid normalizes to itself, any other is refused. The
// Lua may accept more (lua-only), never less.
func TestSharedNames(t *testing.T) {
	f, err := os.Open("testdata/names.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	rows := 0
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, verdict, why, ok := splitRow(text)
		if !ok {
			t.Fatalf("names.tsv:%d: want NAME, VERDICT and WHY separated by tabs: %q", line, text)
		}
		rows++
		got, err := Normalize(name)
		switch verdict {
		case "valid":
			if err != nil || got != name {
				t.Errorf("names.tsv:%d: Normalize(%q) = %q, %v; want it unchanged (%s)", line, name, got, err, why)
			}
		case "invalid", "lua-only":
			if err == nil {
				t.Errorf("names.tsv:%d: Normalize(%q) = %q; want it refused (%s)", line, name, got, why)
			}
		default:
			t.Fatalf("names.tsv:%d: verdict %q is not valid, invalid or lua-only", line, verdict)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if rows < 20 {
		t.Fatalf("names.tsv holds %d names; the table is cut short", rows)
	}
}

// splitRow splits a names.tsv row into its three fields.
func splitRow(s string) (name, verdict, why string, ok bool) {
	f := strings.Split(s, "\t")
	if len(f) != 3 || f[0] == "" {
		return "", "", "", false
	}
	return f[0], f[1], f[2], true
}
