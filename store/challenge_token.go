package store

import "strings"

// TLSALPN01Prefix starts the challenge record of a TLS-ALPN-01 challenge
// (RFC 8737). The record is keyed by the name being validated, not by the
// CA's token: the CA's connection carries only the name (its SNI), so that
// is what the responder can look up. The colon keeps every such record out
// of reach of the HTTP-01 endpoint, which answers base64url tokens only.
const TLSALPN01Prefix = "tls-alpn-01:"

// TLSALPN01Token returns the challenge record token under which the key
// authorization of a TLS-ALPN-01 challenge for name is stored:
// "tls-alpn-01:" and name in ASCII lowercase without a trailing dot. The
// renewer writes it and the responder reads it; both call this, so they
// agree on one spelling.
func TLSALPN01Token(name string) string {
	return TLSALPN01Prefix + strings.ToLower(strings.TrimSuffix(name, "."))
}
