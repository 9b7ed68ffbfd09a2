package broker

import (
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"github.com/mqcluster/mqcluster/broker/packet"
)

func rateConfig(rate float64, burst int) *Config {
	cfg := DefaultConfig()
	cfg.MaxPublishRate = rate
	cfg.PublishBurst = burst
	return &cfg
}

// A 5.0 client publishing faster than MaxPublishRate: the burst goes
// through, the rest get PUBACK / PUBREC 0x97 (0x96 is not a PUBACK or
// PUBREC reason code, [MQTT-3.4.2-1], [MQTT-3.5.2-1]) and are not
// delivered; the accepted ones are.
func TestPublishRateLimitV5(t *testing.T) {
	s := startServer(t, rateConfig(1, 5))
	sub := dialV5(t, s.addr, "rate-sub")
	sub.subscribe(t, paho.SubscribeOptions{Topic: "rate/#", QoS: 2})
	pub := dialV5(t, s.addr, "rate-pub")
	const n = 20
	accepted := map[string]bool{}
	refused := 0
	for i := 0; i < n; i++ {
		qos := byte(1 + i%2)
		payload := fmt.Sprint(i)
		r := pub.publish(t, &paho.Publish{Topic: "rate/x", QoS: qos, Payload: []byte(payload)})
		switch r.ReasonCode {
		case 0:
			accepted[payload] = true
		case byte(packet.QuotaExceeded):
			refused++
		default:
			t.Fatalf("QoS %d publish %d: reason code %#x", qos, i, r.ReasonCode)
		}
	}
	if len(accepted) < 5 || refused == 0 {
		t.Fatalf("%d accepted, %d refused: want the burst of 5 accepted and the rest mostly refused", len(accepted), refused)
	}
	if got := s.stats.RateLimitedPublishes.Load(); got != int64(refused) {
		t.Errorf("RateLimitedPublishes %d, want %d", got, refused)
	}
	for len(accepted) > 0 {
		m := sub.expect(t)
		if !accepted[string(m.Payload)] {
			t.Fatalf("refused message %q delivered", m.Payload)
		}
		delete(accepted, string(m.Payload))
	}
	sub.expectNone(t, 100*time.Millisecond)
}

// Publishing under the limit, nothing is refused.
func TestPublishRateLimitUnder(t *testing.T) {
	s := startServer(t, rateConfig(40, 2))
	sub := dialV5(t, s.addr, "under-sub")
	sub.subscribe(t, paho.SubscribeOptions{Topic: "under", QoS: 1})
	pub := dialV5(t, s.addr, "under-pub")
	tick := time.NewTicker(50 * time.Millisecond) // 20 per second, half the limit
	defer tick.Stop()
	for i := 0; i < 10; i++ {
		<-tick.C
		if r := pub.publish(t, &paho.Publish{Topic: "under", QoS: 1, Payload: []byte("u")}); r.ReasonCode != 0 {
			t.Fatalf("publish %d under the limit: reason code %#x", i, r.ReasonCode)
		}
	}
	for i := 0; i < 10; i++ {
		sub.expect(t)
	}
	if n := s.stats.RateLimitedPublishes.Load(); n != 0 {
		t.Fatalf("RateLimitedPublishes %d", n)
	}
}

// A 5.0 client that keeps flooding far past the limit is disconnected with
// DISCONNECT 0x96 (Message rate too high, a DISCONNECT reason code,
// [MQTT-3.14.2-1]); its QoS 0 messages over the limit are dropped.
func TestPublishRateLimitFlood(t *testing.T) {
	s := startServer(t, rateConfig(1, 1))
	r := dialRaw(t, s.addr)
	r.connect(packet.V5, "flooder")
	var b []byte
	for i := 0; i < 100; i++ {
		var err error
		b, err = (&packet.Publish{Topic: "flood", Payload: []byte("f")}).Append(b, packet.V5)
		if err != nil {
			t.Fatal(err)
		}
	}
	r.write(b)
	got := r.expectClosed(5 * time.Second)
	if len(got) != 1 {
		t.Fatalf("got %v, want DISCONNECT 0x96", got)
	}
	if d, ok := got[0].(*packet.Disconnect); !ok || d.ReasonCode != packet.MessageRateTooHigh {
		t.Fatalf("got %v, want DISCONNECT 0x96", got[0])
	}
	// One accepted (the burst), floodFactor × 1 dropped, the next one ends it.
	if n := s.stats.RateLimitedPublishes.Load(); n != floodFactor+1 {
		t.Errorf("RateLimitedPublishes %d, want %d", n, floodFactor+1)
	}
}

// 3.1.1 has no reason codes: QoS 1/2 PUBLISHes over the limit are held
// back — the client is slowed, nothing is lost — and QoS 0 ones dropped.
func TestPublishRateLimitV311(t *testing.T) {
	const rate, burst = 10, 2
	s := startServer(t, rateConfig(rate, burst))
	sub := dialV5(t, s.addr, "v3rate-sub")
	sub.subscribe(t, paho.SubscribeOptions{Topic: "v3rate/#", QoS: 1})
	pub := dialV3(t, s.addr, "v3rate-pub", true)
	const n = 8
	start := time.Now()
	for i := 0; i < n; i++ {
		pub.pub(t, "v3rate/q1", 1, false, fmt.Sprint(i))
	}
	// The burst goes at once, the others at the rate.
	if d, min := time.Since(start), time.Duration(n-burst-1)*time.Second/rate; d < min {
		t.Errorf("%d QoS 1 PUBLISHes took %v, want at least %v at %d/s", n, d, min, rate)
	}
	for i := 0; i < n; i++ {
		if m := sub.expect(t); string(m.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: %q", i, m.Payload)
		}
	}
	// QoS 0 beyond what the bucket holds is dropped; the QoS 1 marker,
	// handled after them, shows they have all been seen. The bucket is
	// full again after burst/rate.
	time.Sleep(burst * time.Second / rate)
	limited := s.stats.RateLimitedPublishes.Load()
	for i := 0; i < 10; i++ {
		pub.pub(t, "v3rate/q0", 0, false, "zero")
	}
	pub.pub(t, "v3rate/q1", 1, false, "marker")
	zeros := 0
	for {
		m := sub.expect(t)
		if string(m.Payload) == "marker" {
			break
		}
		zeros++
	}
	if zeros < burst || zeros > burst+2 {
		t.Errorf("%d of 10 QoS 0 messages delivered, want about the burst (%d)", zeros, burst)
	}
	if got := s.stats.RateLimitedPublishes.Load() - limited; got < int64(10-zeros) {
		t.Errorf("RateLimitedPublishes grew by %d, want at least %d", got, 10-zeros)
	}
	if !pub.IsConnected() {
		t.Error("3.1.1 publisher disconnected")
	}
}

// The bucket refills at the rate up to the burst.
func TestPublishBucket(t *testing.T) {
	cfg := rateConfig(2, 3)
	b := newPublishBucket(cfg, 0)
	for i := 0; i < 3; i++ {
		if !b.take(0) {
			t.Fatalf("burst token %d refused", i)
		}
	}
	if b.take(0) {
		t.Fatal("token beyond the burst")
	}
	if b.take(int64(400 * time.Millisecond)) {
		t.Fatal("0.8 token taken")
	}
	if !b.take(int64(500 * time.Millisecond)) {
		t.Fatal("1 token after 500 ms at 2/s refused")
	}
	if b.take(int64(time.Hour)); b.tokens != 2 {
		t.Fatalf("after an hour %v tokens left, want the burst 3 minus 1", b.tokens)
	}
	b.tokens = 0.5
	if w := b.wait(); w < 250*time.Millisecond || w > 251*time.Millisecond {
		t.Fatalf("wait for half a token at 2/s: %v", w)
	}
}
