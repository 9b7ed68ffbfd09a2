package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// BAD-INPUT.md row 24 and the acceptance point "slow consumers cannot grow
// memory without bound", from both sides: subscribers that never read, and
// clients that send but never read what they are owed.

// startSmallBuffers runs a broker like startServer whose sockets have small
// send buffers, so that a client that stops reading blocks the broker's
// writes after kilobytes instead of megabytes.
func startSmallBuffers(t *testing.T, cfg *Config) *testServer {
	t.Helper()
	s, err := New(*cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(smallSendBuffers{ln})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return &testServer{Server: s, addr: ln.Addr().String()}
}

type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetWriteBuffer(8 << 10)
	}
	return nc, err
}

// stopReading shrinks the client's receive buffer: with the broker's small
// send buffer, a few kilobytes the client does not read stop the broker's
// writer.
func (r *raw) stopReading() { r.nc.(*net.TCPConn).SetReadBuffer(4 << 10) }

// Row 24: subscribers to '#' that never read and never acknowledge. Their
// in-flight window stays at its bound, their session queue at QueueMessages
// with the overflow dropped and counted, their write queue at
// WriteQueueBytes with QoS 0 dropped and counted, and once their socket has
// accepted nothing for WriteTimeout they are disconnected; the publisher is
// never held up, and the broker's memory does not follow the flood.
func TestBadInput24_SlowSubscriber(t *testing.T) {
	cfg := DefaultConfig()
	cfg.QueueMessages = 100
	cfg.QueueBytes = 1 << 20
	cfg.WriteQueueBytes = 256 << 10
	cfg.WriteTimeout = time.Second
	s := startSmallBuffers(t, &cfg)
	b := watch(t, s, "health/#")

	slow5 := rawConnected(t, s.addr, packet.V5, "slow5", func(cp *packet.Connect) {
		cp.CleanStart = false
		cp.Properties.SessionExpiry = 600
		cp.Properties.Set(packet.PropSessionExpiry)
	})
	slow3 := rawConnected(t, s.addr, packet.V311, "slow3", func(cp *packet.Connect) { cp.CleanStart = false })
	for _, r := range []*raw{slow5, slow3} {
		r.write(pkt(0x82, u16(1), noProps(r.v), str("#"), []byte{1}))
		r.suback(t, 1, packet.GrantedQoS1)
		r.stopReading()
	}

	heap := liveHeap()
	pub := rawConnected(t, s.addr, packet.V5, "flood")
	payload := make([]byte, 2<<10)
	const n = 3000
	var flood []byte
	for i := 1; i <= n; i++ {
		flood = append(flood, pkt(0x32, str("flood/q1"), u16(uint16(i)), props(), payload)...)
		flood = append(flood, pkt(0x30, str("flood/q0"), props(), payload)...)
	}
	go pub.nc.Write(flood)
	start := time.Now()
	for i := 1; i <= n; i++ {
		if a := next[*packet.Ack](pub); a.PacketType != packet.PUBACK || a.PacketID != uint16(i) {
			t.Fatalf("publisher got %s id %d, want PUBACK %d", a.PacketType, a.PacketID, i)
		}
	}
	pub.ping()
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("the publisher was held up for %v by its slow subscribers", d)
	}
	flood = nil

	for _, id := range []string{"slow5", "slow3"} {
		ss := s.session(id)
		if ss == nil {
			t.Fatalf("no session %q", id)
		}
		ss.mu.Lock()
		queued, qbytes, inflight := ss.queue.len(), ss.queue.bytes, len(ss.inflight)
		ss.mu.Unlock()
		if queued > cfg.QueueMessages || qbytes > cfg.QueueBytes || inflight > int(cfg.MaxInflight) {
			t.Fatalf("%s: %d queued (%d bytes), %d in flight; want at most %d, %d, %d",
				id, queued, qbytes, inflight, cfg.QueueMessages, cfg.QueueBytes, cfg.MaxInflight)
		}
	}
	if d, want := s.stats.DroppedQueueFull.Load(), int64(2*(n-cfg.QueueMessages-int(cfg.MaxInflight))); d < want {
		t.Fatalf("%d QoS 1 messages dropped from full queues, want at least %d", d, want)
	}
	if d := s.stats.DroppedQoS0.Load(); d == 0 {
		t.Fatal("no QoS 0 message dropped for the slow subscribers")
	}
	if g := growth(t, "live heap with two stalled subscribers", heap, liveHeap()); g > 8*mib {
		t.Fatalf("live heap grew by %d MiB with two stalled subscribers (%d MiB published)", g/mib, 2*n*len(payload)/mib)
	}
	// Their sockets accept nothing: the write timeout disconnects them,
	// their persistent sessions stay, still bounded.
	eventually(t, 10*time.Second, func() error {
		for _, id := range []string{"slow5", "slow3"} {
			if s.session(id).online() {
				return fmt.Errorf("%s still connected", id)
			}
		}
		return nil
	})
	for i := 1; i <= 2*cfg.QueueMessages; i++ {
		pub.write(pkt(0x32, str("flood/offline"), u16(uint16(i)), props(), payload))
		next[*packet.Ack](pub)
	}
	for _, id := range []string{"slow5", "slow3"} {
		ss := s.session(id)
		ss.mu.Lock()
		queued := ss.queue.len()
		ss.mu.Unlock()
		if queued > cfg.QueueMessages {
			t.Fatalf("offline %s: %d queued, want at most %d", id, queued, cfg.QueueMessages)
		}
	}
	b.healthy(t)
}

// Row 24, the other side of a slow consumer: a client that sends and never
// reads what it is owed (PINGRESPs, acknowledgements). Those cannot be
// dropped, so once WriteQueueBytes of them wait the client is disconnected
// instead of queueing without bound.
func TestBadInput24_ClientThatNeverReads(t *testing.T) {
	cfg := DefaultConfig()
	cfg.WriteQueueBytes = 64 << 10
	s := startSmallBuffers(t, &cfg)
	b := watch(t, s, "health/#")
	bothVersions(t, func(t *testing.T, v packet.Version) {
		heap, slow := liveHeap(), s.stats.SlowConsumers.Load()
		r := rawConnected(t, s.addr, v, "deaf")
		r.stopReading()
		// 650 kB that earn 150,000 PINGRESPs and PUBACKs, about 13 MB of
		// write queue if nothing bounded it.
		var flood []byte
		for i := 0; i < 100_000; i++ {
			flood = append(flood, 0xC0, 0x00)
		}
		for i := 1; i <= 50_000; i++ {
			flood = append(flood, pkt(0x32, str("x"), u16(uint16(i)), noProps(v))...)
		}
		go r.nc.Write(flood) // fails once the broker gives up on the client
		eventually(t, 20*time.Second, func() error {
			if s.session("deaf") != nil {
				return errors.New("the client that never reads is still connected")
			}
			return nil
		})
		flood = nil
		if g := growth(t, "live heap after the client that never reads", heap, liveHeap()); g > 4*mib {
			t.Fatalf("live heap grew by %d MiB", g/mib)
		}
		if s.stats.SlowConsumers.Load() != slow+1 {
			t.Fatal("the disconnect was not counted as a slow consumer")
		}
		b.healthy(t)
	})
}
