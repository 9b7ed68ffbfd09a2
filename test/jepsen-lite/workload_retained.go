package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// retainedWorkload: one writer per topic sets unique retained values
// (QoS 1) and sometimes deletes them (an empty retained payload); readers
// connect fresh to every node and record the retained set they are sent.
type retainedWorkload struct {
	topics int
}

func newRetainedWorkload() *retainedWorkload { return &retainedWorkload{topics: 4} }

func (w *retainedWorkload) Name() string { return "retained" }

const retainedPrefix = "r/"

func (w *retainedWorkload) Run(ctx context.Context, env *Env) {
	var wg sync.WaitGroup
	for t := 0; t < w.topics; t++ {
		wg.Add(1)
		go func() { defer wg.Done(); w.writer(ctx, env, t) }()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := env.Rand("retained-reader")
		for k := 0; sleep(ctx, jitter(r, 1500*time.Millisecond)); k++ {
			n := env.Cluster.Nodes[k%len(env.Cluster.Nodes)]
			if n.State() == stateUp {
				readRetained(env, n, fmt.Sprintf("retained-read%d", k), 4+k%2)
			}
		}
	}()
	wg.Wait()
}

// Drain reads every node twice, a few seconds apart: the final reads the
// convergence checker compares.
func (w *retainedWorkload) Drain(ctx context.Context, env *Env) {
	for round := 0; round < 2; round++ {
		if round > 0 && !sleep(ctx, 3*time.Second) {
			return
		}
		var wg sync.WaitGroup
		for _, n := range env.Cluster.Nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				readRetained(env, n, fmt.Sprintf("retained-final%d-n%d", round, n.Index), 5)
			}()
		}
		wg.Wait()
	}
}

func (w *retainedWorkload) writer(ctx context.Context, env *Env, t int) {
	id := fmt.Sprintf("retained-w%d", t)
	r := env.Rand(id)
	topic := fmt.Sprintf("%s%d", retainedPrefix, t)
	cl := NewClient(env, "retained", id, 5-t%2)
	seq := 0
	for ctx.Err() == nil {
		if _, err := cl.Connect(env.PickNode(r), ConnOpts{CleanStart: true}); err != nil {
			sleep(ctx, 300*time.Millisecond)
			continue
		}
		for k := 0; k < 5 && ctx.Err() == nil && cl.Alive(); k++ {
			seq++
			payload := fmt.Sprintf("%s#%d", id, seq)
			if r.Intn(4) == 0 {
				payload = "" // delete
			}
			if _, err := cl.Publish(topic, 1, true, payload); err != nil && err != errRefused {
				break
			}
			sleep(ctx, jitter(r, 400*time.Millisecond))
		}
		cl.Disconnect(false)
	}
}

// readRetained connects a fresh client to node n, subscribes to r/# and
// records, as one read, the retained values it was sent within a second.
func readRetained(env *Env, n *Node, id string, proto int) {
	cl := NewClient(env, "retained", id, proto)
	var mu sync.Mutex
	values := map[string]string{}
	o := ConnOpts{CleanStart: true, OnDeliver: func(d Delivery) {
		if d.Retain {
			mu.Lock()
			values[d.Topic] = d.Payload
			mu.Unlock()
		}
	}}
	op := Op{F: "read", Workload: "retained", Node: n.Index, Client: id, Proto: proto}
	done := env.Hist.Invoke(op)
	if _, err := cl.Connect(n, o); err != nil {
		done("fail", func(op *Op) { op.Error = err.Error() })
		return
	}
	defer cl.Disconnect(false)
	if _, err := cl.Subscribe(retainedPrefix+"#", 1); err != nil {
		done("fail", func(op *Op) { op.Error = err.Error() })
		return
	}
	time.Sleep(time.Second)
	if !cl.Alive() {
		done("fail", func(op *Op) { op.Error = "connection lost while reading" })
		return
	}
	mu.Lock()
	defer mu.Unlock()
	done("ok", func(op *Op) {
		op.Values = map[string]string{}
		for k, v := range values {
			op.Values[k] = v
		}
	})
}
