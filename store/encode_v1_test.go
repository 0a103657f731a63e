package store

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
