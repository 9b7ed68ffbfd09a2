package broker

import (
	"bufio"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// benchClient is a minimal 3.1.1 client for in-process benchmarks: cheap
// enough that the broker, not the client, is what the profile shows.
type benchClient struct {
	nc net.Conn
	w  *bufio.Writer
	rd *packet.Reader
}

func benchDial(b *testing.B, addr, id string) *benchClient {
	b.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	c := &benchClient{nc: nc, w: bufio.NewWriterSize(nc, 64<<10), rd: packet.NewReader(nc, 0)}
	c.rd.SetVersion(packet.V311)
	cp := &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, CleanStart: true, ClientID: id}
	buf, _ := cp.Append(nil, packet.V311)
	c.w.Write(buf)
	c.w.Flush()
	if _, err := c.rd.ReadPacket(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nc.Close() })
	return c
}

// BenchmarkFanIn: 10 publishers, QoS 0, 64-byte payloads, one subscriber;
// ns/op is per delivered message.
func BenchmarkFanIn(b *testing.B) { benchRoute(b, 10, 1, 0) }

// BenchmarkFanOut: one publisher, 50 subscribers, QoS 0; ns/op is per
// delivered message.
func BenchmarkFanOut(b *testing.B) { benchRoute(b, 1, 50, 0) }

// BenchmarkQoS1: 4 publishers at QoS 1 (the broker acks each), one QoS 1
// subscriber that acks each delivery.
func BenchmarkQoS1(b *testing.B) { benchRoute(b, 4, 1, 1) }

func benchRoute(b *testing.B, pubs, subs int, qos byte) {
	cfg := DefaultConfig()
	// No slow-consumer or queue drops: every message is counted.
	cfg.WriteQueueBytes = 1 << 30
	cfg.QueueMessages, cfg.QueueBytes = 10_000_000, 1<<32
	s := startServer(b, &cfg)
	var wg sync.WaitGroup
	perSub := b.N
	for i := 0; i < subs; i++ {
		c := benchDial(b, s.addr, fmt.Sprintf("sub%d", i))
		sp := &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "bench/#", Options: packet.SubOptions{QoS: qos}}}}
		buf, _ := sp.Append(nil, packet.V311)
		c.w.Write(buf)
		c.w.Flush()
		if _, err := c.rd.ReadPacket(); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ack []byte
			for got := 0; got < perSub; {
				// A message the broker dropped never comes: give up after
				// a quiet second (the drops are reported).
				c.nc.SetReadDeadline(time.Now().Add(time.Second))
				pk, err := c.rd.ReadPacket()
				if err != nil {
					return
				}
				if p, ok := pk.(*packet.Publish); ok {
					got++
					if p.QoS == 1 {
						a := packet.Ack{PacketType: packet.PUBACK, PacketID: p.PacketID}
						ack, _ = a.Append(ack[:0], packet.V311)
						c.w.Write(ack)
						c.w.Flush()
					}
				}
			}
			c.w.Flush()
		}()
	}
	publishers := make([]*benchClient, pubs)
	for i := range publishers {
		publishers[i] = benchDial(b, s.addr, fmt.Sprintf("pub%d", i))
	}
	payload := make([]byte, 64)
	b.ResetTimer()
	b.ReportAllocs()
	var pw sync.WaitGroup
	for i, c := range publishers {
		n := b.N / pubs
		if i == 0 {
			n += b.N % pubs
		}
		pw.Add(1)
		go func() {
			defer pw.Done()
			// QoS 1 publishers keep at most 32 PUBACKs outstanding, as
			// real clients do.
			window := make(chan struct{}, 32)
			if qos == 1 {
				go func() { // drain PUBACKs
					for k := 0; k < n; k++ {
						if _, err := c.rd.ReadPacket(); err != nil {
							return
						}
						<-window
					}
				}()
			}
			var buf []byte
			for k := 0; k < n; k++ {
				if qos == 1 {
					select {
					case window <- struct{}{}:
					default:
						c.w.Flush()
						window <- struct{}{}
					}
				}
				p := packet.Publish{Topic: "bench/topic", QoS: qos, PacketID: uint16(k%65535 + 1), Payload: payload}
				buf, _ = p.Append(buf[:0], packet.V311)
				c.w.Write(buf)
			}
			c.w.Flush()
		}()
	}
	pw.Wait()
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(s.stats.DroppedQoS0.Load()+s.stats.DroppedQueueFull.Load()), "dropped")
}
