package certserver

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// The PROXY protocol (HAProxy's "proxy-protocol.txt", versions 1 and 2)
// is how nginx's stream module (proxy_protocol on) tells the server behind
// it who connected: one header before the first byte of the connection.
// readProxyHeader reads it, strictly: a connection that does not start
// with a well-formed header is refused, never guessed at.

// proxyV2Sig is the 12-byte signature that starts a version 2 header.
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// Limits of the headers: version 1 lines are at most 107 bytes with their
// CRLF; a version 2 header carries addresses and TLVs, which nginx does not
// send, in at most maxProxyV2Len bytes after its fixed 16.
const (
	maxProxyV1Len = 107
	maxProxyV2Len = 1024
)

// errProxyHeader is wrapped by every error readProxyHeader returns for a
// malformed header (not for a failed read).
var errProxyHeader = errors.New("bad PROXY protocol header")

// proxyHeader is what a PROXY protocol header says: the client's address
// and the address it connected to. Both are zero for a header that gives
// none (version 1 UNKNOWN, version 2 LOCAL or an unspecified family): a
// health check of the proxy itself, or a client it could not describe.
type proxyHeader struct {
	Src, Dst netip.AddrPort
}

// readProxyHeader reads one PROXY protocol header, version 1 or 2, from r
// and nothing after it.
func readProxyHeader(r *bufio.Reader) (proxyHeader, error) {
	first, err := r.Peek(1)
	if err != nil {
		return proxyHeader{}, err
	}
	switch first[0] {
	case 'P':
		return readProxyV1(r)
	case '\r':
		return readProxyV2(r)
	}
	return proxyHeader{}, fmt.Errorf("%w: the connection starts with %#x, not a PROXY header (is proxy_protocol on in nginx's stream server?)", errProxyHeader, first[0])
}

// readProxyV1 reads a version 1 header: "PROXY TCP4|TCP6 SRC DST SPORT
// DPORT\r\n", or "PROXY UNKNOWN...\r\n".
func readProxyV1(r *bufio.Reader) (proxyHeader, error) {
	var line []byte
	for {
		b, err := r.ReadByte()
		if err != nil {
			return proxyHeader{}, err
		}
		line = append(line, b)
		if b == '\n' {
			break
		}
		if len(line) >= maxProxyV1Len {
			return proxyHeader{}, fmt.Errorf("%w: version 1 line longer than %d bytes", errProxyHeader, maxProxyV1Len)
		}
	}
	s, ok := strings.CutSuffix(string(line), "\r\n")
	if !ok {
		return proxyHeader{}, fmt.Errorf("%w: version 1 line does not end in CRLF", errProxyHeader)
	}
	f := strings.Split(s, " ")
	if f[0] != "PROXY" || len(f) < 2 {
		return proxyHeader{}, fmt.Errorf("%w: %q does not start with \"PROXY \"", errProxyHeader, s)
	}
	switch f[1] {
	case "UNKNOWN":
		return proxyHeader{}, nil // the rest is to be ignored
	case "TCP4", "TCP6":
	default:
		return proxyHeader{}, fmt.Errorf("%w: protocol %q, want TCP4, TCP6 or UNKNOWN", errProxyHeader, f[1])
	}
	if len(f) != 6 {
		return proxyHeader{}, fmt.Errorf("%w: %d fields, want 6", errProxyHeader, len(f))
	}
	var h proxyHeader
	for i, a := range []*netip.AddrPort{&h.Src, &h.Dst} {
		ip, err := netip.ParseAddr(f[2+i])
		if err != nil || ip.Zone() != "" || ip.Is4() != (f[1] == "TCP4") {
			return proxyHeader{}, fmt.Errorf("%w: %q is not an %s address", errProxyHeader, f[2+i], f[1])
		}
		port, err := parsePort(f[4+i])
		if err != nil {
			return proxyHeader{}, err
		}
		*a = netip.AddrPortFrom(ip, port)
	}
	return h, nil
}

// parsePort parses a version 1 port: decimal 0 to 65535, no sign, no
// leading zero.
func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || s[0] == '+' || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("%w: port %q is not a decimal from 0 to 65535", errProxyHeader, s)
	}
	return uint16(n), nil
}

// readProxyV2 reads a version 2 header: the signature, version and
// command, family and protocol, length, then the addresses and TLVs
// (skipped).
func readProxyV2(r *bufio.Reader) (proxyHeader, error) {
	var fixed [16]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return proxyHeader{}, err
	}
	if !bytes.Equal(fixed[:12], proxyV2Sig) {
		return proxyHeader{}, fmt.Errorf("%w: the version 2 signature is wrong", errProxyHeader)
	}
	if v := fixed[12] >> 4; v != 2 {
		return proxyHeader{}, fmt.Errorf("%w: version %d, want 2", errProxyHeader, v)
	}
	cmd, fam := fixed[12]&0x0f, fixed[13]
	n := int(binary.BigEndian.Uint16(fixed[14:]))
	if n > maxProxyV2Len {
		return proxyHeader{}, fmt.Errorf("%w: %d bytes of addresses and TLVs, more than %d", errProxyHeader, n, maxProxyV2Len)
	}
	rest := make([]byte, n)
	if _, err := io.ReadFull(r, rest); err != nil {
		return proxyHeader{}, err
	}
	switch cmd {
	case 0x0: // LOCAL: the proxy's own connection; the addresses are to be ignored
		return proxyHeader{}, nil
	case 0x1: // PROXY
	default:
		return proxyHeader{}, fmt.Errorf("%w: command %#x, want LOCAL or PROXY", errProxyHeader, cmd)
	}
	var size int
	switch fam {
	case 0x00: // UNSPEC
		return proxyHeader{}, nil
	case 0x11: // TCP over IPv4
		size = 4
	case 0x21: // TCP over IPv6
		size = 16
	default:
		return proxyHeader{}, fmt.Errorf("%w: family and protocol %#x, want TCP over IPv4 or IPv6", errProxyHeader, fam)
	}
	if n < 2*size+4 {
		return proxyHeader{}, fmt.Errorf("%w: %d bytes cannot hold two addresses of %d bytes and two ports", errProxyHeader, n, size)
	}
	src, _ := netip.AddrFromSlice(rest[:size])
	dst, _ := netip.AddrFromSlice(rest[size : 2*size])
	ports := rest[2*size:]
	return proxyHeader{
		Src: netip.AddrPortFrom(src, binary.BigEndian.Uint16(ports)),
		Dst: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(ports[2:])),
	}, nil
}
