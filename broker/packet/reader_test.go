package packet

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

// chunkReader hands out data in chunks of the given sizes (cycling), and
// records for every Read the size of the buffer it was given and whether the
// Reader held a pooled buffer at the time.
type chunkReader struct {
	data   []byte
	sizes  []int
	i      int
	eofHot bool // return io.EOF together with the last bytes
	owner  *Reader
	calls  []readCall
}

type readCall struct {
	bufLen int
	pooled bool
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.owner != nil {
		c.calls = append(c.calls, readCall{len(p), c.owner.pooled != nil})
	}
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(c.data)
	if len(c.sizes) > 0 {
		n = min(n, c.sizes[c.i%len(c.sizes)])
		c.i++
	}
	n = copy(p, c.data[:n])
	c.data = c.data[n:]
	if c.eofHot && len(c.data) == 0 {
		return n, io.EOF
	}
	return n, nil
}

// successRows returns the success rows a connection of version v can carry
// (CONNECT rows of any version included: CONNECT is decoded with its own).
func successRows(v Version) []fixture {
	var rows []fixture
	for _, f := range fixtures {
		if f.code == 0 && (f.v == v || f.pkt.Type() == CONNECT) {
			rows = append(rows, f)
		}
	}
	return rows
}

func TestReaderFixtureStream(t *testing.T) {
	for _, v := range []Version{V311, V5} {
		rows := successRows(v)
		var stream []byte
		for _, f := range rows {
			stream = append(stream, f.raw...)
		}
		for _, sizes := range [][]int{nil, {1}, {2, 3, 5}, {7}, {64}, {4096}, {1000, 1, 9000}} {
			for _, hot := range []bool{false, true} {
				src := &chunkReader{data: stream, sizes: sizes, eofHot: hot}
				r := NewReader(src, 0)
				r.SetVersion(v)
				for _, f := range rows {
					p, err := r.ReadPacket()
					if err != nil {
						t.Fatalf("v%d chunks %v: %s: %v", v, sizes, f.desc, err)
					}
					if d := diff(p, f.pkt); d != "" {
						t.Fatalf("v%d chunks %v: %s:%s", v, sizes, f.desc, d)
					}
				}
				if _, err := r.ReadPacket(); err != io.EOF {
					t.Fatalf("v%d chunks %v: at the end got %v, want io.EOF", v, sizes, err)
				}
				if r.pooled != nil {
					t.Fatalf("v%d chunks %v: buffer still borrowed at the end", v, sizes)
				}
			}
		}
	}
}

// TestReaderIdleHoldsNoBuffer checks that whenever the Reader waits for a
// new packet with nothing buffered, it reads into its small array and holds
// no pooled buffer.
func TestReaderIdleHoldsNoBuffer(t *testing.T) {
	pub := frame(0x32, lstr("a/b"), id16(1), bytes.Repeat([]byte("x"), 100))
	ping := bs(0xC0, 0)
	// Each packet arrives on its own, in two pieces, as over a quiet link.
	script := [][]byte{pub[:3], pub[3:], ping, pub[:50], pub[50:], ping[:1], ping[1:]}
	src := &scriptReader{chunks: script}
	r := NewReader(src, 0)
	r.SetVersion(V311)
	src.owner = r
	for range 4 {
		if _, err := r.ReadPacket(); err != nil {
			t.Fatal(err)
		}
		if r.pooled != nil {
			t.Fatal("buffer kept after a packet while the link is quiet")
		}
	}
	for i, c := range src.calls {
		if c.atBoundary && (c.pooled || c.bufLen > len(r.small)) {
			t.Errorf("read %d at a packet boundary: buffer of %d bytes, pooled=%v", i, c.bufLen, c.pooled)
		}
	}
	r.Release()
}

// scriptReader returns one scripted chunk per Read and records whether the
// Reader had nothing buffered (a packet boundary) at each call.
type scriptReader struct {
	chunks [][]byte
	owner  *Reader
	calls  []scriptCall
}

type scriptCall struct {
	bufLen     int
	pooled     bool
	atBoundary bool
}

func (s *scriptReader) Read(p []byte) (int, error) {
	if s.owner != nil {
		s.calls = append(s.calls, scriptCall{len(p), s.owner.pooled != nil, s.owner.r == s.owner.w})
	}
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.chunks[0])
	if s.chunks[0] = s.chunks[0][n:]; len(s.chunks[0]) == 0 {
		s.chunks = s.chunks[1:]
	}
	return n, nil
}

// TestReaderKeepsBufferUnderLoad: when reads keep filling the borrowed
// buffer, the Reader keeps it instead of returning to the small array.
func TestReaderKeepsBufferUnderLoad(t *testing.T) {
	pub := frame(0x30, lstr("t"), bytes.Repeat([]byte("y"), 60))
	stream := bytes.Repeat(pub, 1000)
	src := &chunkReader{data: stream}
	r := NewReader(src, 0)
	r.SetVersion(V311)
	src.owner = r
	for range 1000 {
		if _, err := r.ReadPacket(); err != nil {
			t.Fatal(err)
		}
	}
	small := 0
	for _, c := range src.calls {
		if c.bufLen <= len(r.small) {
			small++
		}
	}
	if small > 3 {
		t.Errorf("%d of %d reads went through the small array under load", small, len(src.calls))
	}
	if len(src.calls) > len(stream)/poolBufSize+5 {
		t.Errorf("%d reads for %d bytes", len(src.calls), len(stream))
	}
}

func TestReaderLargePacket(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789"), 1000)
	want := &Publish{QoS: 1, PacketID: 5, Topic: "big", Payload: payload}
	raw, _ := Append(nil, want, V311)
	stream := cat(bs(0xC0, 0), raw, bs(0xC0, 0))
	for _, sizes := range [][]int{nil, {3}, {5000}, {4095, 1}} {
		r := NewReader(&chunkReader{data: stream, sizes: sizes}, 1<<20)
		r.SetVersion(V311)
		for i, w := range []Packet{&Pingreq{}, want, &Pingreq{}} {
			p, err := r.ReadPacket()
			if err != nil {
				t.Fatalf("chunks %v, packet %d: %v", sizes, i, err)
			}
			if d := diff(p, w); d != "" {
				t.Fatalf("chunks %v, packet %d:%s", sizes, i, d)
			}
		}
		if _, err := r.ReadPacket(); err != io.EOF {
			t.Fatalf("chunks %v: %v at the end", sizes, err)
		}
	}
}

// TestReaderRefusesFromTheHeader covers BAD-INPUT rows 2 and 3: a packet too
// large, or a first packet that is not CONNECT, is refused as soon as its
// fixed header is in, while the rest never arrives.
func TestReaderRefusesFromTheHeader(t *testing.T) {
	for _, c := range []struct {
		desc    string
		version Version
		head    []byte
		code    ReasonCode
	}{
		{"256 MB PUBLISH, 10 bytes, silence", V5, cat(bs(0x30, 0xFF, 0xFF, 0xFF, 0x7F), make([]byte, 10)), PacketTooLarge},
		{"first packet a 200 KB PUBLISH", 0, cat(bs(0x30, 0x80, 0x80, 0x0C), make([]byte, 10)), ProtocolError},
		{"type 15 in 3.1.1", V311, cat(bs(0xF0, 0x80, 0x01), make([]byte, 3)), MalformedPacket},
	} {
		pr, pw := io.Pipe()
		go pw.Write(c.head) // and never anything more
		r := NewReader(pr, 1<<20)
		r.SetVersion(c.version)
		done := make(chan error, 1)
		go func() { _, err := r.ReadPacket(); done <- err }()
		select {
		case err := <-done:
			var e *Error
			if !errors.As(err, &e) || e.Code != c.code {
				t.Errorf("%s: %v, want code 0x%02X", c.desc, err, byte(c.code))
			}
			// The error is sticky.
			if _, err2 := r.ReadPacket(); err2 != err {
				t.Errorf("%s: second call %v, want the same error", c.desc, err2)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s: ReadPacket waited for a body it should have refused", c.desc)
		}
		pw.Close()
	}
}

func TestReaderEOF(t *testing.T) {
	ping := bs(0xC0, 0)
	pub := frame(0x30, lstr("t"), []byte("abc"))
	for _, c := range []struct {
		desc string
		data []byte
		want error
	}{
		{"nothing", nil, io.EOF},
		{"half a fixed header", pub[:1], io.ErrUnexpectedEOF},
		{"half a body", pub[:5], io.ErrUnexpectedEOF},
		{"half a large body", frame(0x30, lstr("t"), make([]byte, 5000))[:4500], io.ErrUnexpectedEOF},
	} {
		r := NewReader(&chunkReader{data: cat(ping, c.data)}, 0)
		r.SetVersion(V311)
		if _, err := r.ReadPacket(); err != nil {
			t.Fatalf("%s: first packet: %v", c.desc, err)
		}
		if _, err := r.ReadPacket(); err != c.want {
			t.Errorf("%s: %v, want %v", c.desc, err, c.want)
		}
		if r.pooled != nil {
			t.Errorf("%s: buffer kept after the error", c.desc)
		}
	}
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestReaderNoProgress(t *testing.T) {
	r := NewReader(zeroReader{}, 0)
	if _, err := r.ReadPacket(); err != io.ErrNoProgress {
		t.Fatalf("got %v, want io.ErrNoProgress", err)
	}
}

func TestReaderMaxPacketSize(t *testing.T) {
	pub := frame(0x30, lstr("t"), make([]byte, 100)) // 105 bytes
	r := NewReader(&chunkReader{data: cat(pub, pub)}, 0)
	r.SetVersion(V311)
	if _, err := r.ReadPacket(); err != nil {
		t.Fatal(err)
	}
	r.SetMaxPacketSize(104)
	if _, err := r.ReadPacket(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want PacketTooLarge", err)
	}
}

// TestReaderConnectFirst reads a CONNECT before any version is set, then the
// packets of the version it announced.
func TestReaderConnectFirst(t *testing.T) {
	conn := frame(0x10, connectHead("MQTT", 5, 0x02, 0), props(), lstr("c"))
	stream := cat(conn, frame(0x30, lstr("t"), props(), []byte("x")))
	r := NewReader(&chunkReader{data: stream, sizes: []int{3}}, 0)
	p, err := r.ReadPacket()
	if err != nil {
		t.Fatal(err)
	}
	r.SetVersion(p.(*Connect).Version)
	p, err = r.ReadPacket()
	if err != nil || p.(*Publish).Topic != "t" {
		t.Fatalf("got %+v, %v", p, err)
	}
}

// A header that announces a large packet and then stops costs only what was
// sent: the body grows as bytes arrive (BAD-INPUT row 2).
func TestReaderLargeBodyGrowsWithInput(t *testing.T) {
	// CONNECT, Remaining Length 1,000,000, then the first bytes of the body
	// and the end of the stream.
	head := []byte{0x10, 0xC0, 0x84, 0x3D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05}
	rd := NewReader(bytes.NewReader(head), 0)
	if _, err := rd.ReadPacket(); err == nil {
		t.Fatal("a truncated 1 MB CONNECT was accepted")
	}
	grew := leastAllocated(func() { NewReader(bytes.NewReader(head), 0).ReadPacket() })
	if grew > 64<<10 {
		t.Fatalf("reading 11 bytes of an announced 1 MB packet allocated %d bytes", grew)
	}
}
