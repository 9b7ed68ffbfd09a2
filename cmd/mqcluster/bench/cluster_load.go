package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// runSubRate has conns connections, spread round-robin over addrs, each
// subscribe to distinct filters one SUBSCRIBE at a time (QoS 1, the next
// after the SUBACK) until total subscribes are done; it reports subscribes
// per second and the SUBACK latency. Every filter is new to the cluster, so
// every subscribe sets a route through Raft.
func (r *runner) runSubRate(ctx context.Context, name string, addrs []string, conns, total int) (Result, error) {
	res := Result{Broker: name, Scenario: "subrate", Conns: conns}
	clients := make([]*client, conns)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.close()
			}
		}
	}()
	for i := range clients {
		nc, err := r.d.dial(ctx, addrs[i%len(addrs)])
		if err != nil {
			return res, err
		}
		clients[i] = newLeanClient(nc)
		if err := connect(nc, clients[i].r, fmt.Sprintf("bench-subrate-%d", i), 0); err != nil {
			return res, fmt.Errorf("subrate connection %d: %w", i, err)
		}
	}
	var next atomic.Int64
	hists := make([]histogram, conns)
	errs := make([]error, conns)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i, c := range clients {
		wg.Go(func() {
			for {
				k := next.Add(1) - 1
				if k >= int64(total) || ctx.Err() != nil {
					return
				}
				s := time.Now()
				if err := c.subscribe(fmt.Sprintf("bench/subrate/%d/%d", i, k), 1); err != nil {
					errs[i] = fmt.Errorf("subrate connection %d: %w", i, err)
					return
				}
				hists[i].record(time.Since(s))
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(t0)
	var h histogram
	for i := range hists {
		h.merge(&hists[i])
	}
	res.Ops = int64(h.n)
	res.OpsPerSec = float64(res.Ops) / res.Elapsed.Seconds()
	res.P50, res.P99, res.Max = h.quantile(0.50), h.quantile(0.99), h.max
	return res, errors.Join(errs...)
}

// runStorm has n clients, client i on addrs[i%len(addrs)], each CONNECT and
// then SUBSCRIBE (QoS 1) to a topic of its own, at most inFlight at once;
// it reports the time until every one has its SUBACK and the latency of
// each CONNECT+SUBSCRIBE. The connections stay open until all are done.
func (r *runner) runStorm(ctx context.Context, name string, addrs []string, n, inFlight int) (Result, error) {
	res := Result{Broker: name, Scenario: "storm", Conns: n}
	ncs := make([]net.Conn, n)
	defer func() {
		for _, nc := range ncs {
			if nc != nil {
				nc.Close()
			}
		}
	}()
	var next atomic.Int64
	hists := make([]histogram, inFlight)
	errs := make([]error, inFlight)
	var wg sync.WaitGroup
	t0 := time.Now()
	for w := range inFlight {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				s := time.Now()
				nc, err := r.d.dial(ctx, addrs[i%len(addrs)])
				if err == nil {
					ncs[i] = nc
					c := newLeanClient(nc)
					if err = connect(nc, c.r, fmt.Sprintf("bench-storm-%d", i), 0); err == nil {
						err = c.subscribe(fmt.Sprintf("bench/storm/%d", i), 1)
					}
				}
				if err != nil {
					errs[w] = fmt.Errorf("storm client %d of %d: %w", i+1, n, err)
					next.Store(int64(n)) // stop the other workers
					return
				}
				hists[w].record(time.Since(s))
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(t0)
	var h histogram
	for i := range hists {
		h.merge(&hists[i])
	}
	res.Ops = int64(h.n)
	res.OpsPerSec = float64(res.Ops) / res.Elapsed.Seconds()
	res.P50, res.P99, res.Max = h.quantile(0.50), h.quantile(0.99), h.max
	return res, errors.Join(errs...)
}

// failoverAttempt bounds one CONNECT+SUBSCRIBE try after the leader died.
const failoverAttempt = 500 * time.Millisecond

// failoverTimeout is how long the failover scenario waits for a granted
// subscribe before it gives up.
const failoverTimeout = 60 * time.Second

// runFailover kills the Raft leader of c with SIGKILL and measures the time
// until a subscribe to a new filter on a surviving node is granted again.
// Each try is a fresh connection, bounded by failoverAttempt, and tries
// follow each other without pause.
func (r *runner) runFailover(ctx context.Context, name string, c *cluster) (Result, error) {
	res := Result{Broker: name, Scenario: "failover"}
	l, err := c.leader()
	if err != nil {
		return res, err
	}
	res.Leader = c.ids[l]
	survivor := (l + 1) % len(c.nodes)
	res.Survivor = c.ids[survivor]
	addr := c.nodes[survivor].addr
	// The survivor grants subscribes before the kill.
	if err := subscribeOnce(ctx, &r.d, addr, "bench-failover-pre", "bench/failover/pre", 1, 5*time.Second); err != nil {
		return res, fmt.Errorf("failover: subscribe on %s before the kill: %w", res.Survivor, err)
	}
	t0 := time.Now()
	c.kill(l)
	var last error
	for k := 0; ; k++ {
		s := time.Now()
		last = subscribeOnce(ctx, &r.d, addr, fmt.Sprintf("bench-failover-%d", k), fmt.Sprintf("bench/failover/%d", k), 1, failoverAttempt)
		res.Ops++
		if last == nil {
			res.Elapsed = time.Since(t0)
			res.P50 = time.Since(s) // the granted try alone
			return res, nil
		}
		if ctx.Err() != nil || time.Since(t0) > failoverTimeout {
			return res, fmt.Errorf("failover: no subscribe granted on %s within %v of killing %s: %w",
				res.Survivor, failoverTimeout, res.Leader, last)
		}
		if d := time.Since(s); d < 10*time.Millisecond {
			// A refusal that came back at once: do not spin.
			time.Sleep(10*time.Millisecond - d)
		}
	}
}
