package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// willsWorkload: clients with wills spread over the nodes, each ending
// its connection normally after a while unless its node ends it first
// (kill, pause); persistent 5.0 watchers subscribed at QoS 2 to will/#
// record every will published.
type willsWorkload struct {
	perNode  int
	watchers int
}

func newWillsWorkload() *willsWorkload { return &willsWorkload{perNode: 2, watchers: 2} }

func (w *willsWorkload) Name() string { return "wills" }

func (w *willsWorkload) Run(ctx context.Context, env *Env) {
	var wg sync.WaitGroup
	for i := 0; i < w.watchers; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); w.watcher(ctx, env, i, false) }()
	}
	sleep(ctx, 2*time.Second)
	k := 0
	for _, n := range env.Cluster.Nodes {
		for j := 0; j < w.perNode; j++ {
			wg.Add(1)
			id := fmt.Sprintf("will-n%d-%d", n.Index, j)
			proto := 5 - k%2
			k++
			go func() { defer wg.Done(); w.willClient(ctx, env, n, id, proto) }()
		}
	}
	wg.Wait()
}

// Drain keeps the watchers connected while the last wills fire.
func (w *willsWorkload) Drain(ctx context.Context, env *Env) {
	ctx, cancel := context.WithTimeout(ctx, 12*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < w.watchers; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); w.watcher(ctx, env, i, true) }()
	}
	wg.Wait()
}

func (w *willsWorkload) watcher(ctx context.Context, env *Env, i int, drain bool) {
	id := fmt.Sprintf("will-watch%d", i)
	r := env.Rand(id)
	cl := NewClient(env, "wills", id, 5)
	if drain {
		cl.conn = 1000
	}
	subscribed := drain
	for ctx.Err() == nil {
		present, err := cl.Connect(env.PickNode(r), ConnOpts{CleanStart: !subscribed, Expiry: 3600, Session: sessions.get(id)})
		if err != nil {
			sleep(ctx, 300*time.Millisecond)
			continue
		}
		if !present {
			subscribed = false
		}
		if !subscribed {
			if _, err := cl.Subscribe("will/#", 2); err != nil {
				cl.Disconnect(false)
				continue
			}
			subscribed = true
		}
		select {
		case <-ctx.Done():
			cl.Disconnect(false)
		case <-cl.Conn().Done():
		}
	}
}

// willClient stays on node n: connect with a will, hold the connection
// 3-15 s, DISCONNECT normally (only while its node runs, so the DISCONNECT
// is read), or lose it to a fault; then again.
func (w *willsWorkload) willClient(ctx context.Context, env *Env, n *Node, id string, proto int) {
	r := env.Rand(id)
	for k := 0; ctx.Err() == nil; k++ {
		if n.State() != stateUp {
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		// One client id per connection: a reconnect is never a takeover,
		// so each will has exactly one connection to answer for.
		cid := fmt.Sprintf("%s-c%d", id, k)
		cl := NewClient(env, "wills", cid, proto)
		will := &Will{Topic: "will/" + cid, Payload: cid, QoS: 2}
		if _, err := cl.Connect(n, ConnOpts{CleanStart: true, Will: will}); err != nil {
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		hold := time.After(time.Duration(3+r.Intn(12)) * time.Second)
		lost := false
	wait:
		for {
			select {
			case <-cl.Conn().Done():
				lost = true
				break wait
			case <-ctx.Done():
				break wait
			case <-hold:
				break wait
			}
		}
		if lost {
			continue
		}
		for n.State() != stateUp && cl.Alive() {
			time.Sleep(100 * time.Millisecond)
		}
		if cl.Alive() {
			cl.Disconnect(false)
		}
		sleep(ctx, time.Duration(r.Intn(1000))*time.Millisecond)
	}
}
