package broker

import (
	"context"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// moveCluster is a cluster in which every persistent session a client
// claims comes from another node with record; onRoute runs, once, while
// the arriving session's subscriptions are being routed.
type moveCluster struct {
	record  SessionRecord
	onRoute func()
	once    sync.Once
}

func (c *moveCluster) SetRoute(ctx context.Context, filter string, members int) error {
	if c.onRoute != nil {
		c.once.Do(c.onRoute)
	}
	return nil
}
func (c *moveCluster) Forward(m *Message, done func(error)) bool       { return false }
func (c *moveCluster) Retain(ctx context.Context, m *Message) error    { return nil }
func (c *moveCluster) Retained(filter string) []*Message               { return nil }
func (c *moveCluster) ReleaseSession(string, uint64, uint32)           {}
func (c *moveCluster) EndSession(string, uint64)                       {}
func (c *moveCluster) SetWill(WillRecord) string                       { return "" }
func (c *moveCluster) ClearWill(string)                                {}
func (c *moveCluster) SetSubscriptions(string, uint64, []Subscription) {}
func (c *moveCluster) ClaimWill(id string, publish func(ok bool))      { publish(true) }
func (c *moveCluster) HandOnRest(string, *SessionRecord)               {}
func (c *moveCluster) PassOn(owner, clientID string, d SessionDelivery, done func(error)) {
	done(nil)
}

func (c *moveCluster) ClaimSession(ctx context.Context, req SessionClaim) (*SessionTransfer, error) {
	if !req.Persistent || req.CleanStart {
		return &SessionTransfer{Epoch: 1}, nil
	}
	rec := c.record
	return &SessionTransfer{Epoch: 1, Record: &rec}, nil
}

// A session arriving from another node knows what its client was
// delivered there before it can take any message: a node handing on its
// stale copy of the session (a message the client already had at QoS 2)
// while the arriving session is still being installed does not get it
// delivered twice (jepsen-lite: two QoS 2 duplicates when a restarted node
// handed its copy on during the next move).
func TestArrivingSessionSkipsWhatItsClientHad(t *testing.T) {
	had := MessageRef{Node: "node-9", ID: 7}
	mc := &moveCluster{record: SessionRecord{ClientID: "mover", Version: byte(packet.V5), Expiry: 600,
		Subscriptions: []Subscription{{Filter: "m/#", Real: "m/#", Opts: packet.SubOptions{QoS: 2}}},
		Delivered:     []MessageRef{had}}}
	srv := startServer(t, nil, func(o *Options) { o.Cluster = mc })
	stale := func(id uint64, payload string) []SessionDelivery {
		return []SessionDelivery{{Msg: &Message{Topic: "m/x", Payload: []byte(payload), QoS: 2, Node: "node-9", ID: id}, QoS: 2}}
	}
	handedOn := make(chan error, 1)
	mc.onRoute = func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		handedOn <- srv.DeliverToSession(ctx, "mover", stale(had.ID, "already had"))
	}
	expiry := uint32(600)
	c := dialV5(t, srv.addr, "mover", func(cp *paho.Connect, _ *paho.ClientConfig) {
		cp.CleanStart = false
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	})
	if err := <-handedOn; err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.DeliverToSession(ctx, "mover", stale(8, "new")); err != nil {
		t.Fatal(err)
	}
	m := c.expect(t)
	if string(m.Payload) != "new" {
		t.Fatalf("got %q first; the client had %v already (QoS 2: exactly once)", m.Payload, had)
	}
	c.expectNone(t, 300*time.Millisecond)
}
