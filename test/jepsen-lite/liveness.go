package main

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// probeNode checks that node i accepts a connect and a subscribe, and that
// a publish made on another node reaches the subscriber, recording one
// "probe" operation.
func probeNode(env *Env, tag string, i, k int) bool {
	nodes := env.Cluster.Nodes
	n := nodes[i]
	other := nodes[(i+1)%len(nodes)]
	topic := fmt.Sprintf("live/%s/%d/%d", tag, i, k)
	id := fmt.Sprintf("%s-n%d-%d", tag, i, k)
	done := env.Hist.Invoke(Op{F: "probe", Workload: tag, Node: i, Client: id, Topic: topic})
	fail := func(err error) bool {
		done("fail", func(op *Op) { op.Error = err.Error() })
		return false
	}
	got := make(chan struct{}, 1)
	sub := NewClient(env, tag, id, 5)
	if _, err := sub.Connect(n, ConnOpts{CleanStart: true, OnDeliver: func(Delivery) {
		select {
		case got <- struct{}{}:
		default:
		}
	}}); err != nil {
		return fail(err)
	}
	defer sub.Disconnect(false)
	if _, err := sub.Subscribe(topic, 1); err != nil {
		return fail(err)
	}
	pub := NewClient(env, tag, id+"-pub", 5)
	if _, err := pub.Connect(other, ConnOpts{CleanStart: true}); err != nil {
		return fail(err)
	}
	defer pub.Disconnect(false)
	if _, err := pub.Publish(topic, 1, false, id); err != nil {
		return fail(err)
	}
	select {
	case <-got:
		done("ok", nil)
		return true
	case <-time.After(3 * time.Second):
		return fail(fmt.Errorf("publish from %s not delivered on %s", other.ID, n.ID))
	}
}

// probeAllNodes probes every node until each has passed once or ctx ends;
// it returns the nodes that never passed.
func probeAllNodes(ctx context.Context, env *Env, tag string) []int {
	var mu sync.Mutex
	var failed []int
	var wg sync.WaitGroup
	for i := range env.Cluster.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; ; k++ {
				if probeNode(env, tag, i, k) {
					return
				}
				if !sleep(ctx, 300*time.Millisecond) {
					mu.Lock()
					failed = append(failed, i)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return failed
}
