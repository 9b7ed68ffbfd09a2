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
