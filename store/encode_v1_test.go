package store

// encodeCertificateV1 is the certificate encoder of formatV1, as the
// store wrote records before formatV2: kept to write the stores that the
// decoder and the upgrade must still read.
func encodeCertificateV1(c *Certificate) []byte {
	n := 64 + len(c.ID) + len(c.ChainPEM) + len(c.KeyPEM) + len(c.Issuer) + len(c.Serial) + len(c.Origin)
	for _, name := range c.Names {
		n += len(name) + 2
	}
	e := encoder{b: make([]byte, 0, n)}
	e.b = append(e.b, formatV1)
	e.str(c.ID)
	e.uint(uint64(len(c.Names)))
	for _, name := range c.Names {
		e.str(name)
	}
	e.bytes(c.ChainPEM)
	e.bytes(c.KeyPEM)
	encodeCertTail(&e, c)
	return e.b
}

// interMap is an intermediateSource held in a map.
type interMap map[[digestSize]byte][]byte

func (m interMap) intermediatePEM(d [digestSize]byte) ([]byte, bool) {
	p, ok := m[d]
	return p, ok
}

// encodeV2 encodes c in formatV2 and returns, with the record, a source
// of the intermediates it refers to.
func encodeV2(c *Certificate) ([]byte, interMap) {
	rec, inters := encodeCertificate(c)
	m := interMap{}
	for _, in := range inters {
		m[in.digest] = appendPEM(nil, "CERTIFICATE", in.der)
	}
	return rec, m
}
