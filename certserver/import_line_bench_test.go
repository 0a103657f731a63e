package certserver

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/certserver/certserver/certserver/api"
	"github.com/certserver/certserver/store/certtest"
)

// BenchmarkImportLine decodes and parses one line of a batch as the
// server does for each certificate of POST /v1/certificates/batch: a
// certbot chain (a P-256 leaf under an intermediate) and its key, JSON
// as the client sends it.
func BenchmarkImportLine(b *testing.B) {
	root := certtest.New(b, certtest.Template{CommonName: "Bench Root", IsCA: true}, nil)
	inter := certtest.New(b, certtest.Template{CommonName: "Bench E1", IsCA: true}, root)
	leaf := certtest.New(b, certtest.Template{DNSNames: []string{"a.example.com"}}, inter)
	line, err := json.Marshal(api.ImportRequest{ChainPEM: string(leaf.ChainPEM), KeyPEM: string(leaf.KeyPEM), Source: api.SourceCertbot, Origin: "/etc/letsencrypt/live/a.example.com"})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		var in importInput
		if err := decodeImportLine(line, &in); err != nil {
			b.Fatal(err)
		}
		if _, err := parseImport(&in, now); err != nil {
			b.Fatal(err)
		}
	}
}
