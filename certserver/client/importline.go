package client

import (
	"encoding/json"

	"github.com/certserver/certserver/certserver/api"
)

// appendImportLine appends req to dst as one line of the batch route: the
// JSON object encoding/json writes for it, and a newline. PEM is ASCII
// with a line break every 64 characters, which json.Encoder escapes
// through reflection byte by byte; this writes the same object several
// times faster.
func appendImportLine(dst []byte, req *api.ImportRequest) ([]byte, error) {
	var err error
	dst = append(dst, `{"chain_pem":`...)
	if dst, err = appendJSONString(dst, req.ChainPEM); err != nil {
		return nil, err
	}
	dst = append(dst, `,"key_pem":`...)
	if dst, err = appendJSONString(dst, req.KeyPEM); err != nil {
		return nil, err
	}
	if req.Source != "" {
		dst = append(dst, `,"source":`...)
		if dst, err = appendJSONString(dst, req.Source); err != nil {
			return nil, err
		}
	}
	if req.Origin != "" {
		dst = append(dst, `,"origin":`...)
		if dst, err = appendJSONString(dst, req.Origin); err != nil {
			return nil, err
		}
	}
	return append(dst, "}\n"...), nil
}

// appendJSONString appends s to dst as a JSON string, in one pass over s.
// Printable ASCII and the line breaks and tabs of PEM are written here; a
// string with any other byte is left to encoding/json.
func appendJSONString(dst []byte, s string) ([]byte, error) {
	mark := len(dst)
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		esc := jsonEscapes[s[i]]
		if esc == "" {
			continue
		}
		if esc == "?" {
			b, err := json.Marshal(s)
			return append(dst[:mark], b...), err
		}
		dst = append(dst, s[start:i]...)
		dst = append(dst, esc...)
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), nil
}

// jsonEscapes is what appendJSONString writes for each byte: "" for the
// byte itself, its escape, or "?" for a byte it leaves to encoding/json
// (control characters, non-ASCII, and <, >, & which encoding/json escapes
// for HTML).
var jsonEscapes = func() (t [256]string) {
	for c := range 256 {
		switch {
		case c == '"':
			t[c] = `\"`
		case c == '\\':
			t[c] = `\\`
		case c == '\n':
			t[c] = `\n`
		case c == '\r':
			t[c] = `\r`
		case c == '\t':
			t[c] = `\t`
		case c < 0x20 || c >= 0x80 || c == '<' || c == '>' || c == '&':
			t[c] = "?"
		}
	}
	return t
}()
