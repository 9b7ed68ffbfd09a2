package main

import (
	"context"
	"errors"
	"math/rand"
	"sync"
	"time"
)

// Workload is one family of clients. Run drives it until ctx ends (the
// fault phase); Drain runs after the heal, until the workload has seen what
// it is owed or ctx ends.
type Workload interface {
	Name() string
	Run(ctx context.Context, env *Env)
	Drain(ctx context.Context, env *Env)
}

// Env is what workloads share: the history, the cluster and a seed.
type Env struct {
	Hist    *History
	Cluster *Cluster
	Seed    int64
	Scale   float64 // 1: normal rates
}

// Rand returns a generator for one client, derived from the run's seed.
// Client timing still depends on the cluster's answers: the seed replays
// the fault schedule exactly, the workload only its choices.
func (e *Env) Rand(name string) *rand.Rand {
	h := int64(0)
	for _, c := range name {
		h = h*31 + int64(c)
	}
	return rand.New(rand.NewSource(e.Seed ^ h))
}

// PickNode returns a random node that is up (any node when none is).
func (e *Env) PickNode(r *rand.Rand) *Node {
	live := e.Cluster.Live()
	if len(live) == 0 {
		return e.Cluster.Nodes[r.Intn(len(e.Cluster.Nodes))]
	}
	return live[r.Intn(len(live))]
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// jitter is d ± half of d.
func jitter(r *rand.Rand, d time.Duration) time.Duration {
	return d/2 + time.Duration(r.Int63n(int64(d)+1))
}

// Client is one client id across its connections, recording each in the
// history.
type Client struct {
	env      *Env
	workload string
	id       string
	proto    int
	conn     int
	node     int
	c        Conn
	mu       sync.Mutex
	closing  bool
}

// NewClient names a client of a workload.
func NewClient(env *Env, workload, id string, proto int) *Client {
	return &Client{env: env, workload: workload, id: id, proto: proto, node: -1}
}

func (cl *Client) base(f string) Op {
	return Op{F: f, Workload: cl.workload, Node: cl.node, Client: cl.id, Conn: cl.conn, Proto: cl.proto}
}

// Connect opens a new connection to node n, recording connect and, later,
// the connection's loss. o.OnDeliver is wrapped to record deliveries.
func (cl *Client) Connect(n *Node, o ConnOpts) (sessionPresent bool, err error) {
	cl.conn++
	cl.node = n.Index
	o.Proto, o.ClientID = cl.proto, cl.id
	op := cl.base("connect")
	op.CleanStart = o.CleanStart
	op.Expiry = int64(o.Expiry)
	if cl.proto == 4 {
		op.Expiry = -1
		if o.CleanStart {
			op.Expiry = 0
		}
	}
	if o.Will != nil {
		op.Topic, op.Payload, op.QoS = o.Will.Topic, o.Will.Payload, o.Will.QoS
	}
	done := cl.env.Hist.Invoke(op)
	inner := o.OnDeliver
	conn, node, hist := cl.conn, cl.node, cl.env.Hist
	o.OnDeliver = func(d Delivery) {
		hist.Add(Op{Type: "ok", F: "deliver", Workload: cl.workload, Node: node, Client: cl.id, Conn: conn, Proto: cl.proto,
			Topic: d.Topic, Payload: d.Payload, QoS: d.QoS, Dup: d.Dup, Retain: d.Retain, PacketID: d.PacketID})
		if inner != nil {
			inner(d)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	c, sp, err := Dial(ctx, n.Addr(), o)
	if err != nil {
		var ce ConnackError
		switch {
		case errors.As(err, &ce):
			done("fail", func(op *Op) { op.Reason, op.Error = reason(ce.Code), err.Error() })
		case ctx.Err() != nil:
			done("info", func(op *Op) { op.Error = err.Error() })
		default:
			done("fail", func(op *Op) { op.Error = err.Error() })
		}
		return false, err
	}
	done("ok", func(op *Op) { op.SessionPresent = boolp(sp) })
	cl.mu.Lock()
	cl.c, cl.closing = c, false
	cl.mu.Unlock()
	go func() {
		<-c.Done()
		cl.mu.Lock()
		closing := cl.closing && cl.c == c
		cl.mu.Unlock()
		if !closing {
			hist.Add(Op{Type: "info", F: "conn-lost", Workload: cl.workload, Node: node, Client: cl.id, Conn: conn, Proto: cl.proto})
		}
	}()
	return sp, nil
}

// Conn is the current connection (nil before the first).
func (cl *Client) Conn() Conn {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.c
}

// Alive reports whether the current connection is open.
func (cl *Client) Alive() bool {
	c := cl.Conn()
	if c == nil {
		return false
	}
	select {
	case <-c.Done():
		return false
	default:
		return true
	}
}

// Disconnect ends the connection normally (DISCONNECT 0), or aborts it
// (no DISCONNECT: the broker sees a lost connection).
func (cl *Client) Disconnect(abort bool) {
	cl.mu.Lock()
	c := cl.c
	cl.closing = true
	cl.mu.Unlock()
	if c == nil {
		return
	}
	f := "disconnect"
	if abort {
		f = "abort"
	}
	cl.env.Hist.Add(func() Op { op := cl.base(f); op.Type = "ok"; return op }())
	if abort {
		c.Abort()
	} else {
		c.Disconnect()
	}
}

// Subscribe records a subscribe; the reason is the granted QoS or a failure.
func (cl *Client) Subscribe(filter string, qos int) (int, error) {
	op := cl.base("subscribe")
	op.Topic, op.QoS = filter, qos
	done := cl.env.Hist.Invoke(op)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	code, err := cl.Conn().Subscribe(ctx, filter, qos)
	return code, complete(done, code, err)
}

// Unsubscribe records an unsubscribe.
func (cl *Client) Unsubscribe(filter string) (int, error) {
	op := cl.base("unsubscribe")
	op.Topic = filter
	done := cl.env.Hist.Invoke(op)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	code, err := cl.Conn().Unsubscribe(ctx, filter)
	return code, complete(done, code, err)
}

// Publish records a publish of payload id payload.
func (cl *Client) Publish(topic string, qos int, retain bool, payload string) (int, error) {
	op := cl.base("publish")
	op.Topic, op.QoS, op.Retain, op.Payload = topic, qos, retain, payload
	done := cl.env.Hist.Invoke(op)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code, err := cl.Conn().Publish(ctx, topic, qos, retain, []byte(payload))
	return code, complete(done, code, err)
}

// errRefused is a reason code >= 0x80.
var errRefused = errors.New("refused by the broker")

// complete records the outcome of a request: ok with its reason code,
// fail when the broker refused it, info when the answer never came.
func complete(done func(string, func(*Op)) Op, code int, err error) error {
	switch {
	case code >= 0x80:
		done("fail", func(op *Op) { op.Reason = reason(code) })
		return errRefused
	case code >= 0 && err == nil:
		done("ok", func(op *Op) { op.Reason = reason(code) })
		return nil
	default:
		done("info", func(op *Op) { op.Error = err.Error() })
		return err
	}
}
