package broker

import (
	"math"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// publishBucket is one connection's token bucket of inbound PUBLISHes
// (Config.MaxPublishRate, PublishBurst), owned by the reader goroutine. It
// exists only when a rate is configured: without one, handlePublish never
// reads the clock for it.
type publishBucket struct {
	rate   float64 // tokens per nanosecond
	burst  float64
	tokens float64
	last   int64 // unix ns of the last refill

	// Refusals in the current one-second window; past floodLimit the
	// client is disconnected.
	windowStart int64
	refused     int
	floodLimit  int
}

func newPublishBucket(cfg *Config, now int64) *publishBucket {
	return &publishBucket{
		rate:        cfg.MaxPublishRate / float64(time.Second),
		burst:       float64(cfg.PublishBurst),
		tokens:      float64(cfg.PublishBurst),
		last:        now,
		windowStart: now,
		floodLimit:  floodFactor * max(cfg.PublishBurst, int(math.Ceil(cfg.MaxPublishRate))),
	}
}

// floodFactor: a client refused more than floodFactor times what the
// limit allows in a second (the larger of the burst and the rate) within
// one second is not slowing down, and is disconnected.
const floodFactor = 10

// take refills the bucket up to now and takes a token if there is one.
func (b *publishBucket) take(now int64) bool {
	if d := now - b.last; d > 0 {
		b.tokens = min(b.burst, b.tokens+float64(d)*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// refuse counts one refused PUBLISH and reports whether the client is
// flooding.
func (b *publishBucket) refuse(now int64) bool {
	if now-b.windowStart >= int64(time.Second) {
		b.windowStart, b.refused = now, 0
	}
	b.refused++
	return b.refused > b.floodLimit
}

// wait is how long until the bucket holds a token.
func (b *publishBucket) wait() time.Duration {
	return time.Duration((1-b.tokens)/b.rate) + 1
}

// limitPublish applies MaxPublishRate to one inbound PUBLISH; the caller
// has checked that a rate is configured. It reports whether the PUBLISH
// was refused (and answered here); an error closes the connection.
//
//   - 5.0: a QoS 1 or 2 PUBLISH over the limit is answered with PUBACK /
//     PUBREC 0x97 (Quota exceeded) and not delivered. 0x96 (Message rate
//     too high) is not among the PUBACK and PUBREC Reason Codes a sender
//     must choose from ([MQTT-3.4.2-1], [MQTT-3.5.2-1]); it is a DISCONNECT
//     Reason Code ([MQTT-3.14.2-1]) and ends a flood (below). A PUBREC of
//     0x80 or more ends the QoS 2 flow, so the packet id is not kept.
//   - 3.1.1 has no reason codes: a QoS 1 or 2 PUBLISH over the limit is
//     held back instead — the reader waits for a token before handling it,
//     so the client is slowed by TCP backpressure and loses nothing.
//   - QoS 0 over the limit is dropped in both versions.
//
// A client refused more than floodFactor times the limit within one second
// is disconnected: DISCONNECT 0x96 in 5.0, a plain close in 3.1.1.
// Every PUBLISH over the limit is counted in Stats.RateLimitedPublishes.
func (c *conn) limitPublish(p *packet.Publish) (bool, error) {
	now := time.Now().UnixNano()
	b := c.pubBucket
	if b == nil {
		b = newPublishBucket(&c.srv.cfg, now)
		c.pubBucket = b
	}
	if b.take(now) {
		return false, nil
	}
	c.srv.stats.RateLimitedPublishes.Add(1)
	if c.version < packet.V5 && p.QoS > 0 {
		if !c.waitForToken(b) {
			return true, errDisconnected
		}
		return false, nil
	}
	if b.refuse(now) {
		c.srv.log.Info("publish rate far over the limit; disconnecting", "client_id", c.clientID)
		return true, &packet.Error{Code: packet.MessageRateTooHigh, Reason: "publish rate far over the limit"}
	}
	switch p.QoS {
	case 1:
		c.enqueueAck(packet.PUBACK, p.PacketID, packet.QuotaExceeded)
	case 2:
		c.enqueueAck(packet.PUBREC, p.PacketID, packet.QuotaExceeded)
	}
	return true, nil
}

// maxRateWait bounds one sleep of a reader held back by the rate limit, so
// that a connection closed meanwhile (takeover, shutdown) is noticed soon.
const maxRateWait = 100 * time.Millisecond

// waitForToken blocks the reader until the bucket holds a token, and takes
// it. The writers this reader owes are started first, so that subscribers
// do not wait for it. It reports false when the connection closes meanwhile.
func (c *conn) waitForToken(b *publishBucket) bool {
	c.runKicks()
	for {
		c.wmu.Lock()
		closing := c.closing
		c.wmu.Unlock()
		if closing {
			return false
		}
		time.Sleep(min(b.wait(), maxRateWait))
		if b.take(time.Now().UnixNano()) {
			return true
		}
	}
}
