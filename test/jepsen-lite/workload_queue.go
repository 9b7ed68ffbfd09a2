package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho/session/state"
)

// queueWorkload: publishers with one sequence per publisher, on a few
// topics, at one QoS; persistent subscribers (5.0 clean start 0 with a
// session expiry, 3.1.1 clean session 0) that hop between random live
// nodes and stay subscribed for the whole run.
type queueWorkload struct {
	name     string // queue or qos2
	prefix   string // topic prefix
	qos      int
	pubs     []int // protocol of each publisher
	subs     []int // protocol of each subscriber
	expiry   []uint32
	interval time.Duration

	lastDeliver atomic.Int64
}

func newQueueWorkload() *queueWorkload {
	return &queueWorkload{name: "queue", prefix: "q", qos: 1, pubs: []int{5, 4, 5, 4}, subs: []int{5, 4, 5, 4, 5},
		// The last 5.0 subscriber has a short expiry and sometimes stays
		// away longer: its session may legitimately end.
		expiry: []uint32{3600, 0, 3600, 0, 8}, interval: 40 * time.Millisecond}
}

func newQoS2Workload() *queueWorkload {
	// QoS 2 subscribers are 5.0 clients: their session state drops a
	// PUBLISH re-sent with an id they have received and not seen released.
	return &queueWorkload{name: "qos2", prefix: "e", qos: 2, pubs: []int{5, 4}, subs: []int{5, 5},
		expiry: []uint32{3600, 3600}, interval: 60 * time.Millisecond}
}

func (w *queueWorkload) Name() string { return w.name }

func (w *queueWorkload) Run(ctx context.Context, env *Env) {
	var wg sync.WaitGroup
	for i, proto := range w.subs {
		wg.Add(1)
		go func() { defer wg.Done(); w.subscriber(ctx, env, i, proto, false) }()
	}
	// Publishers start once the subscribers had a moment to subscribe.
	sleep(ctx, 2*time.Second)
	for i, proto := range w.pubs {
		wg.Add(1)
		go func() { defer wg.Done(); w.publisher(ctx, env, i, proto) }()
	}
	wg.Wait()
}

// Drain connects every subscriber once more and waits until deliveries
// stop for a few seconds.
func (w *queueWorkload) Drain(ctx context.Context, env *Env) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.lastDeliver.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	for i, proto := range w.subs {
		wg.Add(1)
		go func() { defer wg.Done(); w.subscriber(ctx, env, i, proto, true) }()
	}
	for ctx.Err() == nil && time.Since(time.Unix(0, w.lastDeliver.Load())) < 6*time.Second {
		sleep(ctx, 200*time.Millisecond)
	}
	cancel()
	wg.Wait()
}

func (w *queueWorkload) publisher(ctx context.Context, env *Env, i, proto int) {
	id := fmt.Sprintf("%s-pub%d", w.name, i)
	r := env.Rand(id)
	cl := NewClient(env, w.name, id, proto)
	seq := 0
	for ctx.Err() == nil {
		if _, err := cl.Connect(env.PickNode(r), ConnOpts{CleanStart: true}); err != nil {
			sleep(ctx, 300*time.Millisecond)
			continue
		}
		stay := time.Now().Add(jitter(r, 8*time.Second))
		for ctx.Err() == nil && time.Now().Before(stay) && cl.Alive() {
			seq++
			topic := fmt.Sprintf("%s/%d", w.prefix, r.Intn(3))
			payload := fmt.Sprintf("%s#%d#%d", id, cl.conn, seq)
			if _, err := cl.Publish(topic, w.qos, false, payload); err != nil && err != errRefused {
				break // unknown outcome: a new connection, elsewhere
			}
			sleep(ctx, w.interval)
		}
		cl.Disconnect(false)
	}
}

// subscriber keeps one persistent session. In the drain it connects once,
// to a live node, and stays until ctx ends.
func (w *queueWorkload) subscriber(ctx context.Context, env *Env, i, proto int, drain bool) {
	id := fmt.Sprintf("%s-sub%d", w.name, i)
	r := env.Rand(id)
	if drain {
		r = env.Rand(id + "-drain")
	}
	cl := NewClient(env, w.name, id, proto)
	if drain {
		cl.conn = 1000 // connection numbers of the drain stand apart
	}
	sess := sessions.get(id)
	expiry := w.expiry[i]
	filter := w.prefix + "/#"
	subscribed := drain
	onDeliver := func(Delivery) { w.lastDeliver.Store(time.Now().UnixNano()) }
	for ctx.Err() == nil {
		// Clean start only for the first 5.0 connection of the run (a
		// 3.1.1 clean session would end with its connection).
		o := ConnOpts{CleanStart: !subscribed && !drain && proto == 5, Expiry: expiry, Session: sess, OnDeliver: onDeliver}
		present, err := cl.Connect(env.PickNode(r), o)
		if err != nil {
			sleep(ctx, 300*time.Millisecond)
			continue
		}
		if !present {
			subscribed = false
		}
		if !subscribed {
			if _, err := cl.Subscribe(filter, w.qos); err != nil {
				cl.Disconnect(false)
				sleep(ctx, 300*time.Millisecond)
				continue
			}
			subscribed = true
		}
		stay := jitter(r, 6*time.Second)
		if drain {
			stay = time.Hour
		}
		select {
		case <-ctx.Done():
		case <-cl.Conn().Done():
			continue
		case <-time.After(stay):
		}
		cl.Disconnect(!drain && r.Intn(4) == 0)
		if drain {
			return
		}
		away := time.Duration(r.Intn(1500)) * time.Millisecond
		if expiry < 60 && r.Intn(5) == 0 {
			away = time.Duration(expiry+4) * time.Second // long enough for the session to expire
		}
		sleep(ctx, away)
	}
}

// sessionStates keeps each 5.0 client's session state across connections
// and phases.
type sessionStates struct {
	mu sync.Mutex
	m  map[string]*state.State
}

var sessions = &sessionStates{m: map[string]*state.State{}}

func (s *sessionStates) get(id string) *state.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.m[id]; ok {
		return st
	}
	st := state.NewInMemory()
	s.m[id] = st
	return st
}
