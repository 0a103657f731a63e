package certserver

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
)

// proxyV2 builds a version 2 header: version/command byte, family byte,
// and the bytes after the length.
func proxyV2(verCmd, fam byte, rest []byte) string {
	b := append([]byte(nil), proxyV2Sig...)
	b = append(b, verCmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(rest)))
	return string(append(b, rest...))
}

// v2Addrs is the address block of a version 2 header for src and dst.
func v2Addrs(src, dst netip.AddrPort) []byte {
	var b []byte
	b = append(b, src.Addr().AsSlice()...)
	b = append(b, dst.Addr().AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

func TestReadProxyHeader(t *testing.T) {
	src4, dst4 := netip.MustParseAddrPort("192.0.2.7:51234"), netip.MustParseAddrPort("127.0.0.1:443")
	src6, dst6 := netip.MustParseAddrPort("[2001:db8::7]:51234"), netip.MustParseAddrPort("[::1]:443")
	tlv := []byte{0x04, 0x00, 0x02, 'h', 'i'} // a NOOP TLV
	tests := []struct {
		desc    string
		in      string
		want    proxyHeader
		bad     bool   // errProxyHeader
		eof     bool   // a read error, not a malformed header
		wantErr string // in the error, when set
	}{
		{desc: "v1 TCP4 as nginx sends it", in: "PROXY TCP4 192.0.2.7 127.0.0.1 51234 443\r\n", want: proxyHeader{src4, dst4}},
		{desc: "v1 TCP6", in: "PROXY TCP6 2001:db8::7 ::1 51234 443\r\n", want: proxyHeader{src6, dst6}},
		{desc: "v1 UNKNOWN with addresses", in: "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"},
		{desc: "v1 UNKNOWN alone", in: "PROXY UNKNOWN\r\n"},
		{desc: "v1 port 0 and 65535", in: "PROXY TCP4 192.0.2.7 127.0.0.1 0 65535\r\n",
			want: proxyHeader{netip.MustParseAddrPort("192.0.2.7:0"), netip.MustParseAddrPort("127.0.0.1:65535")}},
		{desc: "v1 IPv6 address under TCP4", in: "PROXY TCP4 2001:db8::7 ::1 51234 443\r\n", bad: true, wantErr: "not an TCP4 address"},
		{desc: "v1 IPv4 address under TCP6", in: "PROXY TCP6 192.0.2.7 127.0.0.1 51234 443\r\n", bad: true},
		{desc: "v1 zone in address", in: "PROXY TCP6 fe80::1%eth0 ::1 51234 443\r\n", bad: true},
		{desc: "v1 port out of range", in: "PROXY TCP4 192.0.2.7 127.0.0.1 65536 443\r\n", bad: true, wantErr: "port"},
		{desc: "v1 port with leading zero", in: "PROXY TCP4 192.0.2.7 127.0.0.1 0443 443\r\n", bad: true},
		{desc: "v1 port with sign", in: "PROXY TCP4 192.0.2.7 127.0.0.1 +443 443\r\n", bad: true},
		{desc: "v1 missing field", in: "PROXY TCP4 192.0.2.7 127.0.0.1 51234\r\n", bad: true, wantErr: "5 fields"},
		{desc: "v1 double space", in: "PROXY TCP4  192.0.2.7 127.0.0.1 51234 443\r\n", bad: true},
		{desc: "v1 UDP4", in: "PROXY UDP4 192.0.2.7 127.0.0.1 51234 443\r\n", bad: true, wantErr: "protocol"},
		{desc: "v1 bare LF", in: "PROXY TCP4 192.0.2.7 127.0.0.1 51234 443\n", bad: true, wantErr: "CRLF"},
		{desc: "v1 lowercase", in: "proxy TCP4 192.0.2.7 127.0.0.1 51234 443\r\n", bad: true, wantErr: "not a PROXY header"},
		{desc: "v1 line too long", in: "PROXY UNKNOWN " + strings.Repeat("x", 100) + "\r\n", bad: true, wantErr: "longer than 107"},
		{desc: "v1 cut short", in: "PROXY TCP4 192.0.2.7", eof: true},
		{desc: "a TLS ClientHello instead", in: "\x16\x03\x01\x00\xa5", bad: true, wantErr: "proxy_protocol on"},
		{desc: "empty connection", in: "", eof: true},
		{desc: "v2 PROXY TCP4", in: proxyV2(0x21, 0x11, v2Addrs(src4, dst4)), want: proxyHeader{src4, dst4}},
		{desc: "v2 PROXY TCP6", in: proxyV2(0x21, 0x21, v2Addrs(src6, dst6)), want: proxyHeader{src6, dst6}},
		{desc: "v2 PROXY TCP4 with a TLV", in: proxyV2(0x21, 0x11, append(v2Addrs(src4, dst4), tlv...)), want: proxyHeader{src4, dst4}},
		{desc: "v2 LOCAL", in: proxyV2(0x20, 0x00, nil)},
		{desc: "v2 LOCAL with addresses", in: proxyV2(0x20, 0x11, v2Addrs(src4, dst4))},
		{desc: "v2 PROXY UNSPEC", in: proxyV2(0x21, 0x00, nil)},
		{desc: "v2 version 1", in: proxyV2(0x11, 0x11, v2Addrs(src4, dst4)), bad: true, wantErr: "version 1"},
		{desc: "v2 command 2", in: proxyV2(0x22, 0x11, v2Addrs(src4, dst4)), bad: true, wantErr: "command"},
		{desc: "v2 UDP over IPv4", in: proxyV2(0x21, 0x12, v2Addrs(src4, dst4)), bad: true, wantErr: "family"},
		{desc: "v2 unix stream", in: proxyV2(0x21, 0x31, make([]byte, 216)), bad: true},
		{desc: "v2 length short of the addresses", in: proxyV2(0x21, 0x21, v2Addrs(src4, dst4)), bad: true, wantErr: "cannot hold"},
		{desc: "v2 length over the limit", in: proxyV2(0x21, 0x11, make([]byte, 1025)), bad: true, wantErr: "more than 1024"},
		{desc: "v2 bad signature", in: "\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + string(v2Addrs(src4, dst4)), bad: true, wantErr: "signature"},
		{desc: "v2 cut in the addresses", in: proxyV2(0x21, 0x11, v2Addrs(src4, dst4))[:20], eof: true},
		{desc: "v2 cut in the fixed part", in: string(proxyV2Sig[:8]), eof: true},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			const after = "\x16\x03\x01after"
			br := bufio.NewReader(strings.NewReader(tc.in + after))
			if tc.eof {
				br = bufio.NewReader(strings.NewReader(tc.in))
			}
			got, err := readProxyHeader(br)
			switch {
			case tc.bad:
				if !errors.Is(err, errProxyHeader) {
					t.Fatalf("got %+v, %v; want a bad header error", got, err)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %q does not say %q", err, tc.wantErr)
				}
				return
			case tc.eof:
				if err == nil || errors.Is(err, errProxyHeader) || !(errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
					t.Fatalf("got %+v, %v; want a read error", got, err)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			// Nothing after the header is consumed.
			rest, _ := io.ReadAll(br)
			if string(rest) != after {
				t.Errorf("left %q after the header, want %q", rest, after)
			}
		})
	}
}
