package broker

import (
	"context"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// Drain takes the broker out of service without dropping anything it
// holds: it stops accepting connections (the listeners close and Serve
// returns ErrClosed), then ends the client connections at rate per second
// (0: all at once) so that the nodes that take the clients are not
// stampeded, and waits for their goroutines to finish or ctx to end. Once
// ctx ends, the connections not yet told are ended at once.
//
// A 5.0 client gets DISCONNECT 0x8B Server shutting down, or 0x9C Use
// another server with the Server Reference property when
// Config.ServerReference is set; a 3.1.1 client, which has no server
// DISCONNECT, is closed. Neither is a normal disconnection, so wills are
// published (or start their delay) as when a connection is lost
// ([MQTT-3.1.2-8]).
//
// Sessions are not touched: persistent sessions stay in the store and in
// the cluster, offline, so that a client that reconnects elsewhere takes
// its session over from this broker (HandOver keeps working after Drain).
// Close remains the last step.
func (s *Server) Drain(ctx context.Context, rate float64) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.draining = true
	for ln := range s.listeners {
		ln.Close()
	}
	// Every connection accepted from now on is refused (accept), so this
	// list is all there will be.
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()

	code := packet.ServerShuttingDown
	var props packet.Properties
	if ref := s.cfg.ServerReference; ref != "" {
		code = packet.UseAnotherServer
		props.ServerReference = ref
		props.Set(packet.PropServerReference)
	}
	s.log.Info("draining client connections", "connections", len(conns), "rate", rate, "reason_code", byte(code))
	start := time.Now()
	var timer *time.Timer
	for i, c := range conns {
		if rate > 0 && ctx.Err() == nil {
			due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				select {
				case <-timer.C:
				case <-ctx.Done():
					s.log.Warn("drain timeout: closing the remaining connections at once", "remaining", len(conns)-i)
				}
			}
		}
		c.drain(code, props)
	}
	if timer != nil {
		timer.Stop()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.log.Info("client connections drained", "connections", len(conns), "took", time.Since(start).Round(time.Millisecond).String())
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// drain ends the connection for Drain: DISCONNECT with code and props to
// an established 5.0 client, a close otherwise (3.1.1, or a CONNECT not yet
// answered).
func (c *conn) drain(code packet.ReasonCode, props packet.Properties) {
	if c.established.Load() && c.version == packet.V5 {
		c.enqueueClose(&packet.Disconnect{ReasonCode: code, Properties: props})
		return
	}
	c.closeNow()
}

// Accepting reports whether the broker takes new connections: it serves at
// least one listener and is neither draining nor closed (readiness).
func (s *Server) Accepting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && !s.draining && len(s.listeners) > 0
}

// Draining reports whether Drain has started.
func (s *Server) Draining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// WaitHandedOff waits until no persistent session is left on this broker
// (their clients reconnected to other nodes, which took them over), or
// until ctx ends; it reports how many are left. A cluster node calls it
// after Drain, while it still serves takeovers.
func (s *Server) WaitHandedOff(ctx context.Context) int {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		n := len(s.PersistentSessions())
		if n == 0 {
			return 0
		}
		select {
		case <-ctx.Done():
			return n
		case <-t.C:
		}
	}
}
