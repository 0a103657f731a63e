package main

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/renewer/pebbletest"
)

// TestKeyPoolRevokeWithPebble runs the real sidecar with [keys] reuse =
// "pool" and one key in the pool against a real Pebble: two names get
// certificates on one key, served as such by the certificate endpoint.
// Revoking one for keyCompromise says that the other shares the key and
// is not revoked, and both move to a new key, again one for both (the
// pool is filled again).
func TestKeyPoolRevokeWithPebble(t *testing.T) {
	ca := pebbletest.Start(t, pebbletest.Options{})
	const a, b = "a.pool.test", "b.pool.test"
	for _, n := range []string{a, b} {
		ca.DNS.SetA(n, netip.MustParseAddr("127.0.0.1"))
	}
	s, sock := servePebble(t, ca, "email = \"ops@pool.test\"\n", "[keys]\nreuse = \"pool\"\npool_size = 1\n")
	cli := func(args ...string) string {
		t.Helper()
		code, out, errOut := runCLI(t, s.admin, "", args...)
		if code != exitOK {
			t.Fatalf("%s: exit code %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}
	hc := unixHTTPClient(sock)
	// served returns the serial of name's certificate once it is not
	// old, and the key the endpoint serves for name (the store the
	// endpoint reads is the one the renewer writes).
	served := func(name, old string) (serial, key string) {
		t.Helper()
		waitFor(t, name+" valid with a certificate other than "+old, func() bool {
			var doc api.Domain
			code, out, _ := runCLI(t, s.admin, "", "domains", "show", "--json", name)
			if code != exitOK || json.Unmarshal([]byte(out), &doc) != nil {
				return false
			}
			if doc.State == "failing" {
				t.Fatalf("%s: the order failed: %s", name, doc.LastError)
			}
			if doc.State != "valid" || doc.Certificate == nil || doc.Certificate.Serial == old {
				return false
			}
			serial = doc.Certificate.Serial
			return true
		})
		waitFor(t, "the endpoint to serve "+name+" serial "+serial, func() bool {
			resp, err := hc.Get("http://certs/v1/certs/" + name)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			key = ""
			for rest := body; ; {
				var blk *pem.Block
				if blk, rest = pem.Decode(rest); blk == nil {
					break
				}
				if strings.HasSuffix(blk.Type, "PRIVATE KEY") {
					key = string(pem.EncodeToMemory(blk))
				}
			}
			return resp.StatusCode == 200 && key != ""
		})
		return serial, key
	}

	cli("domains", "add", a, b)
	serialA, keyA := served(a, "")
	serialB, keyB := served(b, "")
	if keyA != keyB {
		t.Fatal("two names on a pool of one key are served different keys")
	}

	var rev api.Revocation
	if err := json.Unmarshal([]byte(cli("domains", "revoke", "--reason", "keyCompromise", "--json", a)), &rev); err != nil {
		t.Fatal(err)
	}
	if ks := rev.KeyShared; ks == nil || ks.PoolSlots != 1 || ks.Certificates != 1 || ks.Reordered != 1 ||
		!strings.Contains(rev.Message, "1 other certificates use the same key: they are NOT revoked") {
		t.Errorf("revoke answer %+v, key_shared %+v: want the pool's slot emptied and %s's certificate due", rev, rev.KeyShared, b)
	}
	if st := ca.CertStatus(t, serialA); st.Status != "Revoked" {
		t.Errorf("%s at Pebble: %+v, want revoked", a, st)
	}
	_, newA := served(a, serialA)
	_, newB := served(b, serialB) // renewed from the due index
	if newA == keyA || newB == keyB || newA != newB {
		t.Errorf("after the revocation: a on a new key %v, b on a new key %v, both on one key %v; want all three",
			newA != keyA, newB != keyB, newA == newB)
	}
}
