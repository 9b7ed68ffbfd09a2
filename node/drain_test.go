package node

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// A node that drains (a rolling restart, a scale-down) loses no persistent
// session: its client gets DISCONNECT 0x8B, the messages published for it
// meanwhile queue on the drained node, and when it reconnects to another
// node that node takes the session over, queue included, while the drained
// node still serves takeovers; after that nothing is left on it.
func TestDrainedNodeHandsItsSessionsOver(t *testing.T) {
	c, addrs := brokerCluster(t)
	dev := newDeviceState()
	a, _ := rawConnect(t, addrs[0], "drained", dev, true, 600)
	a.subscribe("drain/#", 2)

	srv := c.nodes[0].brk.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Drain(ctx, 100); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-a.disc:
		if code != packet.ServerShuttingDown {
			t.Fatalf("DISCONNECT %#x, want 0x8B", byte(code))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no DISCONNECT from the drained node")
	}
	if nc, err := net.DialTimeout("tcp", addrs[0], time.Second); err == nil {
		nc.Close()
		t.Fatal("the drained node accepted a connection")
	}

	// Published elsewhere while the client is away: forwarded to the
	// drained node, which still holds the session, and acknowledged.
	pub := dial(t, addrs[2], "publisher")
	publishN(t, pub, "drain", "d", 0, 20)

	b, ack := rawConnect(t, addrs[1], "drained", dev, false, 600)
	if !ack.SessionPresent {
		t.Fatal("CONNACK on node 1: session present 0, want 1 (taken over from the drained node)")
	}
	waitDeliveries(t, dev, "d", 20)
	if left := srv.WaitHandedOff(ctx); left != 0 {
		t.Fatalf("%d persistent sessions left on the drained node", left)
	}
	if err := c.nodes[0].Settle(ctx); err != nil {
		t.Fatalf("Settle: %v", err)
	}
	if s, ok := c.nodes[1].FSM().Session("drained"); !ok || s.Owner != "node-1" {
		t.Errorf("cluster records owner %q (known %v), want node-1", s.Owner, ok)
	}
	b.disconnect()
}
