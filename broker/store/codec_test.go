package store

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/mqcluster/mqcluster/broker"
)

func TestCodecRoundTrip(t *testing.T) {
	neg := sessionRecord("neg")
	neg.DisconnectedAt, neg.Expiry, neg.Version = -1, 0, 3
	sessions := []*broker.SessionRecord{sessionRecord("c"), neg, {ClientID: "bare"}}
	for _, rec := range sessions {
		got, err := decodeSession(appendSession(nil, rec.ClientID, rec))
		if err != nil || !reflect.DeepEqual(got, rec) {
			t.Errorf("session %q: got %+v, %v", rec.ClientID, got, err)
		}
	}
	maxed := storedMessage(math.MaxUint64, fullMessage("t"))
	maxed.PacketID, maxed.Released, maxed.SubIDs = math.MaxUint16, true, []uint32{math.MaxUint32}
	maxed.Msg.ExpiresAt = math.MinInt64
	stored := []*broker.StoredMessage{
		storedMessage(1, fullMessage("t")),
		storedMessage(2, presentButEmpty("t")),
		maxed,
		{Msg: bareMessage("")},
	}
	for _, m := range stored {
		got, err := decodeStored(appendStored(nil, m))
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("stored %d: got %+v, %v", m.Seq, got, err)
		}
	}
	for _, m := range []*broker.Message{fullMessage("r"), presentButEmpty("r"), bareMessage("r")} {
		got, err := decodeRetained(appendRetained(nil, m))
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Errorf("retained: got %s, %v; want %s", dumpMessage(got), err, dumpMessage(m))
		}
	}
}

// TestDecodeCorrupt: every kind of damage is an ErrCorrupt saying what is
// wrong.
func TestDecodeCorrupt(t *testing.T) {
	validStored := appendStored(nil, storedMessage(1, fullMessage("t")))
	validSession := appendSession(nil, "c", sessionRecord("c"))
	tests := []struct {
		name   string
		decode func([]byte) error
		in     []byte
		want   string
	}{
		{"empty", decodeStoredErr, nil, "record version: truncated"},
		{"version", decodeStoredErr, []byte{2}, "unknown record version 2"},
		{"stored flags", decodeStoredErr, []byte{1, 0x80}, "unknown flags 0x80"},
		{"truncated", decodeStoredErr, validStored[:len(validStored)-1], "origin: length 11 exceeds the 10 bytes left"},
		{"trailing", decodeStoredErr, append(validStored[:len(validStored):len(validStored)], 0), "1 trailing bytes"},
		{"bad varint", decodeStoredErr, []byte{1, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, "seq: bad varint"},
		{"packet id range", decodeStoredErr, []byte{1, 0, 1, 0x80, 0x80, 0x04}, "packet id: 65536 out of range"},
		{"qos", decodeStoredErr, []byte{1, 0, 1, 1, 3}, "qos: 3"},
		{"sub id count", decodeStoredErr, []byte{1, 0, 1, 1, 1, 50, 1}, "subscription id count: 50 out of range"},
		{"huge length", decodeStoredErr, []byte{1, 0, 1, 1, 1, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F}, "share filter length: 4294967295 out of range"},
		{"length beyond", decodeStoredErr, []byte{1, 0, 1, 1, 1, 0, 9, 'a'}, "share filter: length 9 exceeds the 1 bytes left"},
		{"message flags", decodeRetainedErr, []byte{1, 0, 0, 0, 0x40}, "unknown message flags 0x40"},
		{"user property count", decodeRetainedErr, []byte{1, 0, 0, 0, 0, 3, 0, 0}, "user property count: 3 out of range"},
		{"session truncated", decodeSessionErr, validSession[:10], "username: length 6 exceeds the 0 bytes left"},
		{"expiry range", decodeSessionErr, []byte{1, 1, 'c', 5, 0x80, 0x80, 0x80, 0x80, 0x10}, "session expiry: 4294967296 out of range"},
		{"sub options", decodeSessionErr, []byte{1, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0x03, 0}, "subscription options 0x3"},
		{"subscription count", decodeSessionErr, []byte{1, 0, 5, 0, 0, 0, 2, 0, 0, 0, 0, 0}, "subscription count: 2 out of range"},
	}
	for _, tt := range tests {
		err := tt.decode(tt.in)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want ErrCorrupt with %q", tt.name, err, tt.want)
		}
	}
}

func decodeStoredErr(b []byte) error   { _, err := decodeStored(b); return err }
func decodeRetainedErr(b []byte) error { _, err := decodeRetained(b); return err }
func decodeSessionErr(b []byte) error  { _, err := decodeSession(b); return err }

// FuzzDecodeRecord feeds every record decoder the same bytes. A decoder
// never panics, returns ErrCorrupt or a value that encodes and decodes to
// itself, and keeps nothing of its input.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendSession(nil, "c", sessionRecord("c")))
	f.Add(appendSession(nil, "", &broker.SessionRecord{}))
	f.Add(appendStored(nil, storedMessage(1, fullMessage("t"))))
	f.Add(appendStored(nil, storedMessage(2, presentButEmpty("t"))))
	f.Add(appendRetained(nil, fullMessage("r")))
	f.Add(appendRetained(nil, bareMessage("r")))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		b := bytes.Clone(in)
		if rec, err := decodeSession(b); err == nil {
			scribble(b)
			checkStable(t, "session", rec, func() (any, error) { return decodeSession(appendSession(nil, rec.ClientID, rec)) }, func() (any, error) { return decodeSession(in) })
		} else if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("session: %v is not ErrCorrupt", err)
		}
		copy(b, in)
		if m, err := decodeStored(b); err == nil {
			scribble(b)
			checkStable(t, "stored", m, func() (any, error) { return decodeStored(appendStored(nil, m)) }, func() (any, error) { return decodeStored(in) })
		} else if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("stored: %v is not ErrCorrupt", err)
		}
		copy(b, in)
		if m, err := decodeRetained(b); err == nil {
			scribble(b)
			checkStable(t, "retained", m, func() (any, error) { return decodeRetained(appendRetained(nil, m)) }, func() (any, error) { return decodeRetained(in) })
		} else if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("retained: %v is not ErrCorrupt", err)
		}
	})
}

// scribble overwrites a decoder's input: a result that still points into
// it changes.
func scribble(b []byte) {
	for i := range b {
		b[i] = 0xA5
	}
}

// checkStable checks that got (decoded from a buffer since scribbled on)
// equals a fresh decode of the original input, and that encoding it and
// decoding again gives it back.
func checkStable(t *testing.T, what string, got any, reencode, fresh func() (any, error)) {
	t.Helper()
	want, err := fresh()
	if err != nil {
		t.Fatalf("%s: second decode failed: %v", what, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: result changed with its input buffer:\n got %+v\nwant %+v", what, got, want)
	}
	again, err := reencode()
	if err != nil {
		t.Fatalf("%s: re-encoded record does not decode: %v", what, err)
	}
	if !reflect.DeepEqual(again, got) {
		t.Fatalf("%s: round trip changed it:\n got %+v\nwant %+v", what, again, got)
	}
}
