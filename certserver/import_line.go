package certserver

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"

	"github.com/certserver/certserver/certserver/api"
)

// decodeImportLine decodes one line of a batch into in: one JSON object,
// no unknown fields, nothing after it. The line a client sends (an object
// of api.ImportRequest's string fields, ASCII, spelled as in its tags) is
// decoded by decodeImportFast, several times faster than encoding/json;
// any other line, and any line that fast path declines, is decoded by
// encoding/json, whose result and errors stand.
func decodeImportLine(line []byte, in *importInput) error {
	if decodeImportFast(line, in) {
		return nil
	}
	var req api.ImportRequest
	if err := decodeImportSlow(line, &req); err != nil {
		return err
	}
	*in = *inputOf(&req)
	return nil
}

// decodeImportSlow is decodeImportLine with encoding/json.
func decodeImportSlow(line []byte, req *api.ImportRequest) error {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(req); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("unexpected data after the object")
	}
	return nil
}

// decodeImportFast decodes line into in when it is a JSON object whose
// members are api.ImportRequest's fields, each at most once, named
// exactly as in its tags, with string values of printable ASCII and the
// escapes \" \\ \/ \b \f \n \r \t; it reports whether it did. Whatever it
// accepts, encoding/json decodes to the same request; it declines the rest
// (other spellings of a name, which encoding/json matches without regard
// to case, a repeated name, null, \u escapes, non-ASCII bytes, anything
// malformed) for encoding/json to decide.
func decodeImportFast(line []byte, in *importInput) bool {
	d := lineDecoder{b: line}
	if !d.skip('{') {
		return false
	}
	var seen [4]bool
	if !d.skip('}') {
		for {
			name, ok := d.plainString()
			if !ok || !d.skip(':') {
				return false
			}
			var i int
			var dst *[]byte
			var dstString *string
			switch name {
			case "chain_pem":
				i, dst = 0, &in.chain
			case "key_pem":
				i, dst = 1, &in.key
			case "source":
				i, dstString = 2, &in.source
			case "origin":
				i, dstString = 3, &in.origin
			default:
				return false
			}
			if seen[i] {
				return false
			}
			seen[i] = true
			v, ok := d.str()
			if !ok {
				return false
			}
			if dst != nil {
				*dst = v
			} else {
				*dstString = string(v)
			}
			if d.skip('}') {
				break
			}
			if !d.skip(',') {
				return false
			}
		}
	}
	d.space()
	return d.i == len(d.b)
}

// lineDecoder reads the JSON of one batch line for decodeImportFast.
type lineDecoder struct {
	b []byte
	i int
}

// space skips JSON white space.
func (d *lineDecoder) space() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\r', '\n':
			d.i++
		default:
			return
		}
	}
}

// skip skips white space and then c, reporting whether c was there; when
// it was not, only the white space is skipped.
func (d *lineDecoder) skip(c byte) bool {
	d.space()
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// plainString reads a string of printable ASCII without escapes, after
// white space.
func (d *lineDecoder) plainString() (string, bool) {
	if !d.skip('"') {
		return "", false
	}
	start := d.i
	for ; d.i < len(d.b); d.i++ {
		switch c := d.b[d.i]; {
		case c == '"':
			s := string(d.b[start:d.i])
			d.i++
			return s, true
		case c < 0x20 || c >= 0x80 || c == '\\':
			return "", false
		}
	}
	return "", false
}

// str reads a string after white space: printable ASCII, and the escapes
// decodeImportFast accepts.
func (d *lineDecoder) str() ([]byte, bool) {
	if !d.skip('"') {
		return nil, false
	}
	// The string is as long as its JSON up to the first quote, unless that
	// quote is escaped: a size hint.
	var s []byte
	if n := bytes.IndexByte(d.b[d.i:], '"'); n > 0 {
		s = make([]byte, 0, n)
	}
	start := d.i
	for d.i < len(d.b) {
		// PEM is runs of 64 plain characters: skip them 8 at a time.
		for d.i+8 <= len(d.b) && plain8(binary.LittleEndian.Uint64(d.b[d.i:])) {
			d.i += 8
		}
		if d.i == len(d.b) {
			break
		}
		c := d.b[d.i]
		switch {
		case c == '"':
			s = append(s, d.b[start:d.i]...)
			d.i++
			return s, true
		case c == '\\':
			s = append(s, d.b[start:d.i]...)
			if d.i+1 == len(d.b) {
				return nil, false
			}
			switch e := d.b[d.i+1]; e {
			case '"', '\\', '/':
				s = append(s, e)
			case 'b':
				s = append(s, '\b')
			case 'f':
				s = append(s, '\f')
			case 'n':
				s = append(s, '\n')
			case 'r':
				s = append(s, '\r')
			case 't':
				s = append(s, '\t')
			default:
				return nil, false
			}
			d.i += 2
			start = d.i
		case c < 0x20 || c >= 0x80:
			return nil, false
		default:
			d.i++
		}
	}
	return nil, false
}

// Bytes repeated in each of a uint64's eight bytes, for plain8.
const (
	ones8  = 0x0101010101010101
	highs8 = 0x8080808080808080
)

// plain8 reports whether each of the eight bytes of x is printable ASCII
// other than a quote or a backslash: what str copies as it is. Each test
// sets the high bit of a byte that fails it (and maybe of bytes above
// that one, which does not change the answer).
func plain8(x uint64) bool {
	below := func(x uint64, n byte) uint64 { return (x - ones8*uint64(n)) &^ x & highs8 }
	return x&highs8 == 0 && below(x, 0x20) == 0 && below(x^(ones8*'"'), 1) == 0 && below(x^(ones8*'\\'), 1) == 0
}
