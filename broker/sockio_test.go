package broker

import (
	"bytes"
	"fmt"
	"math/rand"
	"testing"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// A publisher's byte stream, CONNECT included, written in chunks of random
// sizes: the direct socket reads (sockio.go) hand the packet reader every
// byte once and in order, whatever the chunks and however a small read's
// pooled buffer is split between packets, from empty payloads to packets
// larger than every buffer. The subscriber gets every message in order and
// intact, the publisher every PUBACK in order.
func TestSocketReadsChunkedStream(t *testing.T) {
	t.Parallel()
	s := startServer(t, nil)
	sizes := []int{0, 1, 7, 8, 9, 100, 511, 512, 2000, sockBufSize, sockBufSize + 1, 3000, 4090, 5000, 70000}
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			t.Parallel()
			sub := rawConnected(t, s.addr, v, "chunks-sub-"+v.String())
			sub.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "chunks/" + v.String() + "/#", Options: packet.SubOptions{QoS: 0}}}})
			if _, ok := sub.read().(*packet.Suback); !ok {
				t.Fatal("no SUBACK")
			}

			pub := dialRaw(t, s.addr)
			pub.v = v
			pub.rd.SetVersion(v)
			cp := &packet.Connect{ProtocolName: "MQTT", Version: v, CleanStart: true, ClientID: "chunks-pub-" + v.String()}
			stream, err := cp.Append(nil, v)
			if err != nil {
				t.Fatal(err)
			}
			var want [][]byte
			for round := range 3 {
				for i, n := range sizes {
					payload := bytes.Repeat([]byte{byte(len(want))}, n)
					if n > 0 {
						payload[0], payload[n-1] = byte(round), byte(i)
					}
					p := &packet.Publish{Topic: fmt.Sprintf("chunks/%s/%d", v, len(want)), QoS: 1, PacketID: uint16(len(want) + 1), Payload: payload}
					if stream, err = p.Append(stream, v); err != nil {
						t.Fatal(err)
					}
					want = append(want, payload)
				}
			}
			rng := rand.New(rand.NewSource(int64(v)))
			for rest := stream; len(rest) > 0; {
				k := min(len(rest), 1+rng.Intn(3000))
				pub.write(rest[:k])
				rest = rest[k:]
			}

			if ca, ok := pub.read().(*packet.Connack); !ok || ca.ReasonCode != packet.Success {
				t.Fatalf("publisher: no successful CONNACK")
			}
			for i := range want {
				a, ok := pub.read().(*packet.Ack)
				if !ok || a.PacketType != packet.PUBACK || a.PacketID != uint16(i+1) {
					t.Fatalf("publisher: acknowledgement %d is %#v, want PUBACK %d", i, a, i+1)
				}
			}
			for i, w := range want {
				p, ok := sub.read().(*packet.Publish)
				if !ok {
					t.Fatalf("subscriber: message %d is not a PUBLISH", i)
				}
				if topic := fmt.Sprintf("chunks/%s/%d", v, i); p.Topic != topic || !bytes.Equal(p.Payload, w) {
					t.Fatalf("subscriber: message %d is %s with %d bytes, want %s with %d", i, p.Topic, len(p.Payload), topic, len(w))
				}
			}
		})
	}
}
