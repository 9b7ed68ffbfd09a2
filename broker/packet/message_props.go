package packet

// AppendMessageProperties appends the property block (Property Length and
// properties) that a 5.0 PUBLISH carrying p would have. Cluster nodes use it
// to pass a message's properties to each other unchanged.
func AppendMessageProperties(dst []byte, p *Properties) ([]byte, error) {
	n, err := propsSize(p, uint8(PUBLISH))
	if err != nil {
		return dst, err
	}
	return appendProps(dst, p, uint8(PUBLISH), n), nil
}

// DecodeMessageProperties decodes a block written by
// AppendMessageProperties into p. It keeps a copy of b, never b itself.
func DecodeMessageProperties(b []byte, p *Properties) error {
	*p = Properties{}
	if len(b) == 0 {
		return nil
	}
	r := rd{b: append([]byte(nil), b...)}
	if err := decodeProps(&r, p, uint8(PUBLISH), true); err != nil {
		return err
	}
	if r.left() != 0 {
		return malformed("bytes after the property block")
	}
	return nil
}
