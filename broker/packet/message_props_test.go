package packet

import (
	"reflect"
	"testing"
)

// Message properties round-trip through the block cluster nodes exchange.
func TestMessagePropertiesRoundTrip(t *testing.T) {
	var p Properties
	p.PayloadFormat, p.ContentType, p.ResponseTopic = 1, "application/json", "reply/to"
	p.CorrelationData = []byte{1, 2, 3}
	p.UserProperties = []UserProperty{{"a", "1"}, {"a", "2"}}
	p.Set(PropPayloadFormat)
	p.Set(PropContentType)
	p.Set(PropResponseTopic)
	p.Set(PropCorrelationData)
	b, err := AppendMessageProperties(nil, &p)
	if err != nil {
		t.Fatal(err)
	}
	var got Properties
	if err := DecodeMessageProperties(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, p) {
		t.Fatalf("round trip: got %+v, want %+v", got, p)
	}
	if err := DecodeMessageProperties(append(b, 0), &got); err == nil {
		t.Fatal("trailing byte accepted")
	}
}

// FuzzDecodeMessageProperties: any bytes decode without a panic, and a
// block that decodes encodes back to itself.
func FuzzDecodeMessageProperties(f *testing.F) {
	var p Properties
	p.ContentType, p.UserProperties = "text/plain", []UserProperty{{"k", "v"}}
	p.Set(PropContentType)
	seed, _ := AppendMessageProperties(nil, &p)
	f.Add(seed)
	f.Add([]byte{0})
	f.Add([]byte{5, 0x03, 0x00, 0x09, 'x'})
	f.Fuzz(func(t *testing.T, b []byte) {
		var got Properties
		if err := DecodeMessageProperties(b, &got); err != nil {
			return
		}
		again, err := AppendMessageProperties(nil, &got)
		if err != nil {
			t.Fatalf("decoded block does not encode: %v", err)
		}
		var back Properties
		if err := DecodeMessageProperties(again, &back); err != nil || !reflect.DeepEqual(back, got) {
			t.Fatalf("re-encoded block decodes to %+v (%v), want %+v", back, err, got)
		}
	})
}
