package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// subsWorkload: a clean-session client subscribes to a fresh topic on a
// random node; a probe publisher on every node publishes to it (QoS 1);
// then it unsubscribes and every node probes again. After its SUBACK every
// probe must reach it; after its UNSUBACK none may.
type subsWorkload struct{ workers int }

func newSubsWorkload() *subsWorkload { return &subsWorkload{workers: 2} }

func (w *subsWorkload) Name() string { return "subs" }

func (w *subsWorkload) Run(ctx context.Context, env *Env) {
	var wg sync.WaitGroup
	for i := 0; i < w.workers; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); w.worker(ctx, env, i) }()
	}
	wg.Wait()
}

func (w *subsWorkload) Drain(context.Context, *Env) {}

// probe publishes payload to topic from node n with a fresh client.
func probe(env *Env, workload string, n *Node, id, topic, payload string) {
	cl := NewClient(env, workload, id, 5)
	if _, err := cl.Connect(n, ConnOpts{CleanStart: true}); err != nil {
		return
	}
	cl.Publish(topic, 1, false, payload)
	cl.Disconnect(false)
}

// probeAll probes from every node that is up, concurrently.
func probeAll(env *Env, workload, tag, topic string) {
	var wg sync.WaitGroup
	for _, n := range env.Cluster.Nodes {
		if n.State() != stateUp {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("%s-n%d", tag, n.Index)
			probe(env, workload, n, id, topic, id)
		}()
	}
	wg.Wait()
}

func (w *subsWorkload) worker(ctx context.Context, env *Env, i int) {
	name := fmt.Sprintf("subs-w%d", i)
	r := env.Rand(name)
	for k := 0; ctx.Err() == nil; k++ {
		id := fmt.Sprintf("%s-c%d", name, k)
		topic := fmt.Sprintf("s/%d/%d", i, k)
		cl := NewClient(env, "subs", id, 5-k%2)
		if _, err := cl.Connect(env.PickNode(r), ConnOpts{CleanStart: true}); err != nil {
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		if _, err := cl.Subscribe(topic, 1); err != nil {
			cl.Disconnect(false)
			sleep(ctx, 500*time.Millisecond)
			continue
		}
		probeAll(env, "subs", id+"-in", topic)
		time.Sleep(3 * time.Second) // late deliveries land before the unsubscribe
		if !cl.Alive() {
			continue
		}
		if _, err := cl.Unsubscribe(topic); err == nil {
			probeAll(env, "subs", id+"-out", topic)
			time.Sleep(time.Second)
		}
		cl.Disconnect(false)
		sleep(ctx, jitter(r, time.Second))
	}
}
