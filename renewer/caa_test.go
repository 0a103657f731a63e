package renewer

import (
	"testing"
)

func TestParseCAAValue(t *testing.T) {
	tests := []struct {
		desc, value, issuer string
		params              map[string]string
		wantErr             bool
	}{
		{desc: "issuer only", value: "letsencrypt.org", issuer: "letsencrypt.org", params: map[string]string{}},
		{desc: "empty", value: ";", params: map[string]string{}},
		{desc: "nothing at all", value: "", params: map[string]string{}},
		{desc: "trailing semicolon", value: "ca.test;", issuer: "ca.test", params: map[string]string{}},
		{desc: "parameters", value: "ca.test; accounturi=https://ca.test/a/1; validationmethods=http-01",
			issuer: "ca.test", params: map[string]string{"accounturi": "https://ca.test/a/1", "validationmethods": "http-01"}},
		{desc: "value holding =", value: "ca.test; accounturi=https://ca.test/?a=1", issuer: "ca.test",
			params: map[string]string{"accounturi": "https://ca.test/?a=1"}},
		{desc: "parameters without issuer", value: "; accounturi=x", params: map[string]string{"accounturi": "x"}},
		{desc: "parameter without =", value: "ca.test; nonsense", wantErr: true},
		{desc: "empty parameter in the middle", value: "ca.test;; a=b", wantErr: true},
		{desc: "space inside the issuer", value: "ca test", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			issuer, params, err := parseCAAValue(tc.value)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				return
			}
			if issuer != tc.issuer || len(params) != len(tc.params) {
				t.Fatalf("got %q %v, want %q %v", issuer, params, tc.issuer, tc.params)
			}
			for k, v := range tc.params {
				if params[k] != v {
					t.Errorf("param %s = %q, want %q", k, params[k], v)
				}
			}
		})
	}
}
