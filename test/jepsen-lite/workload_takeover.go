package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// takeoverWorkload: persistent 5.0 clients whose id hops to another node
// every few seconds while the old connection is still open (a session
// takeover across nodes), with a publisher feeding each one's topic.
type takeoverWorkload struct{ clients int }

func newTakeoverWorkload() *takeoverWorkload { return &takeoverWorkload{clients: 2} }

func (w *takeoverWorkload) Name() string { return "takeover" }

func (w *takeoverWorkload) Run(ctx context.Context, env *Env) {
	var wg sync.WaitGroup
	for i := 0; i < w.clients; i++ {
		wg.Add(2)
		go func() { defer wg.Done(); w.hopper(ctx, env, i) }()
		go func() { defer wg.Done(); w.feeder(ctx, env, i) }()
	}
	wg.Wait()
}

// Drain connects each hopper once more, to a live node, and waits for
// its queue.
func (w *takeoverWorkload) Drain(ctx context.Context, env *Env) {
	var wg sync.WaitGroup
	for i := 0; i < w.clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("hop%d", i)
			r := env.Rand(id + "-drain")
			cl := NewClient(env, "takeover", id, 5)
			cl.conn = 1000
			for ctx.Err() == nil {
				present, err := cl.Connect(env.PickNode(r), ConnOpts{Expiry: 3600})
				if err != nil {
					sleep(ctx, 300*time.Millisecond)
					continue
				}
				if !present {
					cl.Subscribe(fmt.Sprintf("h/%d", i), 1)
				}
				if sleep(ctx, 8*time.Second) && !cl.Alive() {
					continue
				}
				cl.Disconnect(false)
				return
			}
		}()
	}
	wg.Wait()
}

func (w *takeoverWorkload) feeder(ctx context.Context, env *Env, i int) {
	id := fmt.Sprintf("hop%d-pub", i)
	r := env.Rand(id)
	cl := NewClient(env, "takeover", id, 5)
	sleep(ctx, 2*time.Second)
	seq := 0
	for ctx.Err() == nil {
		if _, err := cl.Connect(env.PickNode(r), ConnOpts{CleanStart: true}); err != nil {
			sleep(ctx, 300*time.Millisecond)
			continue
		}
		for ctx.Err() == nil && cl.Alive() {
			seq++
			payload := fmt.Sprintf("%s#%d#%d", id, cl.conn, seq)
			if _, err := cl.Publish(fmt.Sprintf("h/%d", i), 1, false, payload); err != nil && err != errRefused {
				break
			}
			sleep(ctx, 50*time.Millisecond)
		}
		cl.Disconnect(false)
	}
}

// hopper opens connection after connection with one client id, each on a
// node other than the last, without closing the previous one: the broker
// must end it (5.0 DISCONNECT 0x8E).
func (w *takeoverWorkload) hopper(ctx context.Context, env *Env, i int) {
	id := fmt.Sprintf("hop%d", i)
	r := env.Rand(id)
	topic := fmt.Sprintf("h/%d", i)
	var prev *Client
	subscribed := false
	last := -1
	for k := 1; ctx.Err() == nil; k++ {
		n := env.PickNode(r)
		for tries := 0; n.Index == last && tries < 5; tries++ {
			n = env.PickNode(r)
		}
		cl := NewClient(env, "takeover", id, 5)
		cl.conn = k - 1
		present, err := cl.Connect(n, ConnOpts{CleanStart: !subscribed, Expiry: 3600})
		if err != nil {
			sleep(ctx, 300*time.Millisecond)
			continue
		}
		last = n.Index
		if !present {
			subscribed = false
		}
		if !subscribed {
			if _, err := cl.Subscribe(topic, 1); err == nil {
				subscribed = true
			}
		}
		if prev != nil {
			go closeLater(prev, 10*time.Second)
		}
		prev = cl
		sleep(ctx, jitter(r, 3*time.Second))
	}
	if prev != nil {
		prev.Disconnect(false)
	}
}

// closeLater aborts a connection the broker has not ended within d.
func closeLater(cl *Client, d time.Duration) {
	c := cl.Conn()
	select {
	case <-c.Done():
	case <-time.After(d):
		cl.Disconnect(true)
	}
}
