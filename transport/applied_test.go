package transport

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestAppliedIndexPropagation: each side learns the other's applied index
// over the one stream a→b: b from a's frames, a from b's acknowledgements.
func TestAppliedIndexPropagation(t *testing.T) {
	cfg := testConfig("a")
	// Heartbeats far apart: the index must travel when it changes, not
	// wait for the next heartbeat.
	cfg.HeartbeatInterval = 5 * time.Second
	cfg.PeerTimeout = 20 * time.Second
	a := startNode(t, cfg, Handlers{})
	cfgB := testConfig("b")
	cfgB.HeartbeatInterval = 5 * time.Second
	cfgB.PeerTimeout = 20 * time.Second
	b := startNode(t, cfgB, Handlers{})
	a.SetPeer("b", b.addr) // b has no sender to a

	eventually(t, 5*time.Second, func() error {
		if !a.PeerConnected("b") {
			return errors.New("a→b not connected")
		}
		return nil
	})
	a.SetAppliedIndex(42)
	b.SetAppliedIndex(17)
	eventually(t, time.Second, func() error {
		if got := b.PeerApplied("a"); got != 42 {
			return fmt.Errorf("b sees a at %d", got)
		}
		if got := a.PeerApplied("b"); got != 17 {
			return fmt.Errorf("a sees b at %d", got)
		}
		return nil
	})
	a.SetAppliedIndex(40) // lower: ignored
	if got := a.Stats().Peers[0].AppliedIndex; got != 17 {
		t.Fatalf("stats show b at %d", got)
	}

	// Waiting, both ways.
	errc := make(chan error, 2)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		errc <- b.WaitPeerApplied(ctx, "a", 50)
	}()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		errc <- a.WaitPeerApplied(ctx, "b", 20)
	}()
	a.SetAppliedIndex(50)
	b.SetAppliedIndex(20)
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatalf("wait: %v (b sees a at %d, a sees b at %d)", err, b.PeerApplied("a"), a.PeerApplied("b"))
		}
	}

	// Already there: at once. Never: the context's error.
	if err := b.WaitPeerApplied(context.Background(), "a", 50); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.WaitPeerApplied(ctx, "a", 1000); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait for an index never reached: %v", err)
	}

	// A removed peer ends the wait; so does Close.
	go func() { errc <- a.WaitPeerApplied(context.Background(), "b", 1000) }()
	eventually(t, time.Second, func() error { return waiting(a.Transport, "b") })
	a.RemovePeer("b")
	if err := <-errc; !errors.Is(err, ErrPeerRemoved) {
		t.Fatalf("wait on a removed peer: %v", err)
	}
	go func() { errc <- b.WaitPeerApplied(context.Background(), "a", 1000) }()
	eventually(t, time.Second, func() error { return waiting(b.Transport, "a") })
	b.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("wait at close: %v", err)
	}
}

// waiting reports nil once someone waits on peer's applied index.
func waiting(t *Transport, peer string) error {
	t.applied.mu.Lock()
	defer t.applied.mu.Unlock()
	if e := t.applied.m[peer]; e == nil || e.ch == nil {
		return fmt.Errorf("nobody waits on %s", peer)
	}
	return nil
}

// TestHeartbeatsKeepStreamAlive: an idle stream carries heartbeats both
// ways, so neither side calls the other silent.
func TestHeartbeatsKeepStreamAlive(t *testing.T) {
	cfg := testConfig("a")
	cfg.PeerTimeout = 200 * time.Millisecond
	a := startNode(t, cfg, Handlers{})
	b := startNode(t, testConfig("b"), Handlers{})
	a.SetPeer("b", b.addr)
	eventually(t, 5*time.Second, func() error {
		if !a.PeerConnected("b") {
			return errors.New("not connected")
		}
		return nil
	})
	// Idle for five peer timeouts: connected all along, on one stream.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for end := time.After(5 * cfg.PeerTimeout); ; {
		select {
		case <-tick.C:
			if !a.PeerConnected("b") {
				t.Fatalf("stream down while idle: %+v", a.Stats().Peers[0])
			}
			continue
		case <-end:
		}
		break
	}
	st := a.Stats().Peers[0]
	if !st.Connected || st.Reconnects != 0 || st.Silence > cfg.PeerTimeout {
		t.Fatalf("stats %+v: want one stream, heard recently", st)
	}
}
