package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadTSIGSecret: [dns01] tsig_secret_file holds the base64 secret
// alone or the key block tsig-keygen writes, whose name and algorithm
// must be the configured ones; every refusal names the file and the
// cause, never the secret.
func TestReadTSIGSecret(t *testing.T) {
	const secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ=="
	keygen := "key \"certserver\" {\n\talgorithm hmac-sha256;\n\tsecret \"" + secret + "\";\n};\n"
	for _, tc := range []struct {
		desc, file, name, alg string
		want                  string // the error, "" for the secret
	}{
		{desc: "secret alone", file: secret + "\n", name: "certserver", alg: "hmac-sha256"},
		{desc: "tsig-keygen's block", file: keygen, name: "certserver", alg: "hmac-sha256"},
		{desc: "block, name as FQDN and algorithm in capitals", file: "# made by tsig-keygen\n" + keygen, name: "certserver.", alg: "HMAC-SHA256"},
		{desc: "block on one line, unquoted name", file: "key certserver { algorithm hmac-sha256; secret \"" + secret + "\"; };", name: "certserver", alg: "hmac-sha256"},
		{desc: "block of another key", file: keygen, name: "other", alg: "hmac-sha256", want: `holds the key "certserver", but dns01.tsig_key is "other"`},
		{desc: "block of another algorithm", file: keygen, name: "certserver", alg: "hmac-sha512", want: `gives the key "certserver" the algorithm hmac-sha256, but dns01.tsig_algorithm is "hmac-sha512"`},
		{desc: "block without a secret", file: "key \"certserver\" {\n\talgorithm hmac-sha256;\n};\n", name: "certserver", alg: "hmac-sha256", want: `its key block for "certserver" has no secret`},
		{desc: "block without an algorithm", file: "key \"certserver\" {\n\tsecret \"" + secret + "\";\n};\n", name: "certserver", alg: "hmac-sha256", want: `its key block for "certserver" has no algorithm`},
		{desc: "unclosed block", file: "key \"certserver\" {\n\tsecret \"" + secret + "\";\n", name: "certserver", alg: "hmac-sha256", want: "not one key block as tsig-keygen writes it"},
		{desc: "a stray statement", file: "key \"certserver\" {\n\talgorithm hmac-sha256;\n\t\"" + secret + "\";\n};\n", name: "certserver", alg: "hmac-sha256", want: "a statement other than algorithm NAME and secret"},
		{desc: "not base64", file: "not a secret\n", name: "certserver", alg: "hmac-sha256", want: "holds neither a base64 TSIG secret alone nor a key block as tsig-keygen writes it"},
		{desc: "empty", file: "\n", name: "certserver", alg: "hmac-sha256", want: "is empty"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tsig.key")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readTSIGSecret(path, tc.name, tc.alg)
			switch {
			case tc.want == "" && (err != nil || got != secret):
				t.Errorf("readTSIGSecret = %q, %v; want the secret", got, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path)):
				t.Errorf("readTSIGSecret error %v, want one naming %s and saying %q", err, path, tc.want)
			case err != nil && strings.Contains(err.Error(), secret):
				t.Errorf("the error holds the secret: %v", err)
			}
		})
	}
}

// TestNewDNS01Provider: a provider other than rfc2136 is built from
// [dns01.env] by lego's own variable names, _FILE ones included; one
// missing a required setting is refused with lego's error naming the
// variable, never a value.
func TestNewDNS01Provider(t *testing.T) {
	// t.Setenv restores what newDNS01 puts in the environment.
	for _, k := range []string{"HTTPREQ_ENDPOINT", "HTTPREQ_PASSWORD_FILE", "HTTPREQ_USERNAME", "PDNS_API_URL", "PDNS_API_KEY", "PDNS_API_KEY_FILE"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	d := defaultDNS01Config()
	d.Provider = "pdns"
	d.Env = map[string]string{"PDNS_API_URL": "http://127.0.0.1:1"}
	if _, err := newDNS01(d); err == nil || !strings.Contains(err.Error(), "PDNS_API_KEY") || !strings.Contains(err.Error(), "provider pdns") {
		t.Errorf("pdns without its key: %v, want an error naming PDNS_API_KEY", err)
	}

	const password = "s3cret-password"
	file := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(file, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.Provider = "httpreq"
	d.Env = map[string]string{"HTTPREQ_ENDPOINT": "http://127.0.0.1:1", "HTTPREQ_USERNAME": "certserver", "HTTPREQ_PASSWORD_FILE": file}
	s, err := newDNS01(d)
	if err != nil || s == nil {
		t.Fatalf("httpreq: %v", err)
	}
	if got := os.Getenv("HTTPREQ_ENDPOINT"); got != "http://127.0.0.1:1" {
		t.Errorf("HTTPREQ_ENDPOINT is %q in the environment lego reads", got)
	}
}
