package broker

import (
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// Credentials that expire (AuthResult.Expiry, a token's exp) bound the
// connection they admitted: when they pass, the server ends it as it ends a
// connection for any other reason of its own. A 5.0 client gets DISCONNECT
// first; the deadline is armed only once the CONNACK is queued, since a
// server sends no DISCONNECT before a successful CONNACK ([MQTT-3.14.0-1]).
// A 3.1.1 client, which has no server DISCONNECT, is closed. The will is
// published as after any close the client did not ask for ([MQTT-3.1.2-8]).
//
// The reason code is 0xA0 (Maximum connect time): "the maximum connection
// time authorized for this connection has been exceeded" is exactly what
// happened, and it tells the client that a new connection with fresh
// credentials will be admitted. 0x87 (Not authorized) would read as a
// refusal of something the client did, which clients treat as final.
//
// Only the reader goroutine touches authTimer (handshake, re-authentication,
// teardown); the timer's function only queues the DISCONNECT. A connection
// whose credentials do not expire allocates no timer.

// setAuthExpiry arms, moves or (for a zero time) removes the connection's
// credential deadline. The connection must be established.
func (c *conn) setAuthExpiry(at time.Time) {
	c.stopAuthExpiry()
	if at.IsZero() {
		return
	}
	c.authTimer = time.AfterFunc(time.Until(at), c.authExpired)
}

// stopAuthExpiry removes the credential deadline, if any.
func (c *conn) stopAuthExpiry() {
	if c.authTimer != nil {
		c.authTimer.Stop()
		c.authTimer = nil
	}
}

// authExpired ends the connection when its credentials pass.
func (c *conn) authExpired() {
	c.srv.log.Info("credentials expired; closing", "client_id", c.clientID)
	c.disconnect(packet.MaximumConnectTime)
}
