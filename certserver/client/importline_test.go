package client

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/certserver/certserver/certserver/api"
)

// TestAppendImportLine: each line is what json.Encoder writes for the
// request.
func TestAppendImportLine(t *testing.T) {
	for _, req := range []api.ImportRequest{
		{ChainPEM: "-----BEGIN CERTIFICATE-----\nMIIB+/=\n-----END CERTIFICATE-----\n", KeyPEM: "-----BEGIN EC PRIVATE KEY-----\r\nMHc\t\n-----END EC PRIVATE KEY-----\n", Source: api.SourceCertbot, Origin: "/etc/letsencrypt/live/a.example.com"},
		{},
		{ChainPEM: `a"b\c`, KeyPEM: "k\x01\x1f", Origin: "/srv/café/<x>&y\xff"},
		{ChainPEM: "x", Source: api.SourceImport},
	} {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(&req); err != nil {
			t.Fatal(err)
		}
		got, err := appendImportLine(nil, &req)
		if err != nil || string(got) != want.String() {
			t.Errorf("appendImportLine(%+v) = %q, %v; want %q", req, got, err, want.String())
		}
	}
}
