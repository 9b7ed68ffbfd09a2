package bench

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// idleDialers is how many connections the idle scenario opens at once.
const idleDialers = 32

// runIdle opens conns idle MQTT connections (CONNECT with keep-alive 0,
// CONNACK received, then nothing) and reports how much the broker's resident
// memory grew, per connection.
func (r *runner) runIdle(ctx context.Context, t Target, conns int) (Result, error) {
	res := Result{Broker: t.Name, Scenario: "idle", Conns: conns}
	var before int64
	if t.PID > 0 {
		var err error
		if before, err = settledRSS(ctx, t.PID); err != nil {
			return res, err
		}
	}
	ncs := make([]net.Conn, conns)
	defer func() {
		for _, nc := range ncs {
			if nc != nil {
				nc.Close()
			}
		}
	}()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, idleDialers)
	for w := range idleDialers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= conns || ctx.Err() != nil {
					return
				}
				nc, err := r.d.dial(ctx, t.Addr)
				if err == nil {
					ncs[i] = nc
					err = connect(nc, nc, fmt.Sprintf("bench-idle-%d", i), 0)
				}
				if err != nil {
					errs[w] = fmt.Errorf("idle connection %d of %d: %w", i+1, conns, err)
					next.Store(int64(conns)) // stop the other dialers
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return res, err
		}
	}
	if t.PID > 0 {
		after, err := settledRSS(ctx, t.PID)
		if err != nil {
			return res, err
		}
		res.RSSBefore, res.RSSAfter = before, after
		res.KiBPerConn = float64(after-before) / 1024 / float64(conns)
	}
	closed := 0
	for _, nc := range ncs {
		if !alive(nc) {
			closed++
		}
	}
	if closed > 0 {
		res.Err = fmt.Sprintf("the broker closed %d of the %d idle connections", closed, conns)
	}
	return res, nil
}

// alive reports whether the broker still holds nc open: a peek at the
// socket that does not block finds neither end of stream nor an error.
func alive(nc net.Conn) bool {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var n int
	var rerr error
	var b [1]byte
	err = raw.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	return err == nil && (n > 0 || rerr == syscall.EAGAIN)
}

// settledRSS samples the resident memory of pid every 200 ms until two
// samples in a row agree within 0.5% (at most 5 s), and returns the last.
func settledRSS(ctx context.Context, pid int) (int64, error) {
	prev, err := rss(pid)
	if err != nil {
		return 0, err
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for range 25 {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tick.C:
		}
		cur, err := rss(pid)
		if err != nil {
			return 0, err
		}
		if d := cur - prev; d*200 <= cur && -d*200 <= cur {
			return cur, nil
		}
		prev = cur
	}
	return prev, nil
}
