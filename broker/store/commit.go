package store

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mqcluster/mqcluster/broker"
)

// request is one Commit waiting for the committer.
type request struct {
	done func(error)
	err  error    // the ops were rejected by encode: nothing to apply
	enc  *encoded // nil when there is nothing to apply
}

func (r *request) nops() int {
	if r.enc == nil {
		return 0
	}
	return len(r.enc.ops)
}

// Commit applies ops atomically and durably and then calls done, from the
// committer goroutine, in the order of the Commit calls; done is called
// exactly once and may be nil. A Commit without ops is acknowledged in order
// too, without a transaction.
//
// Commit encodes ops before it returns: the caller may reuse the slice and
// the records it points to at once. It blocks while QueueSize commits are
// waiting, except while the committer is calling done functions, so that a
// done function may commit. done must not block for long (it holds up every
// later commit) and must not call Close. After Close, Commit calls
// done(ErrClosed) itself before returning.
func (s *Store) Commit(ops []broker.StoreOp, done func(error)) {
	r := request{done: done}
	if len(ops) > 0 {
		r.enc, r.err = encode(ops)
	}
	s.mu.Lock()
	for len(s.queue) >= s.opts.QueueSize && !s.closed && !s.inDone {
		s.notFull.Wait()
	}
	if s.closed {
		s.mu.Unlock()
		r.enc.release()
		if done != nil {
			done(ErrClosed)
		}
		return
	}
	s.queue = append(s.queue, r)
	s.mu.Unlock()
	s.signal()
}

// signal wakes the committer without blocking.
func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run is the committer: the only goroutine that writes to the file and
// calls the done functions of accepted commits. It returns when the store is closed and its queue
// is empty.
func (s *Store) run() {
	defer close(s.stopped)
	var batch []request
	var timer *time.Timer
	for {
		batch = s.next(batch[:0], &timer)
		if len(batch) == 0 {
			return
		}
		if h := s.beforeBatch.Load(); h != nil {
			(*h)()
		}
		err := s.apply(batch)
		s.commits.Add(uint64(len(batch)))
		s.mu.Lock()
		s.inDone = true
		s.mu.Unlock()
		for i := range batch {
			r := &batch[i]
			e := r.err
			if e == nil {
				e = err
			}
			if r.done != nil {
				r.done(e)
			}
			r.enc.release()
			batch[i] = request{}
		}
		s.mu.Lock()
		s.inDone = false
		s.mu.Unlock()
	}
}

// next waits for the next batch: the first waiting request and every one
// queued behind it, up to MaxBatchOps ops, held open for MaxBatchDelay
// when that is set. It returns an empty batch when the store is closed and
// nothing is left.
func (s *Store) next(batch []request, timer **time.Timer) []request {
	nops := 0
	waiting := false // the MaxBatchDelay timer runs
	for {
		s.mu.Lock()
		took := len(s.queue) > 0
		batch, nops = s.takeLocked(batch, nops)
		closed := s.closed
		s.mu.Unlock()
		if took {
			s.notFull.Broadcast()
		}
		switch {
		case len(batch) == 0 && closed:
			return batch
		case len(batch) == 0:
			<-s.wake
			continue
		case nops >= s.opts.MaxBatchOps || s.opts.MaxBatchDelay == 0 || closed:
			if waiting {
				(*timer).Stop()
			}
			return batch
		}
		if !waiting {
			if *timer == nil {
				*timer = time.NewTimer(s.opts.MaxBatchDelay)
			} else {
				(*timer).Reset(s.opts.MaxBatchDelay)
			}
			waiting = true
		}
		select {
		case <-s.wake:
		case <-(*timer).C:
			return batch
		}
	}
}

// takeLocked moves requests from the head of the queue to batch while the
// batch holds fewer than MaxBatchOps ops. Caller holds mu.
func (s *Store) takeLocked(batch []request, nops int) ([]request, int) {
	k := 0
	for k < len(s.queue) && (len(batch)+k == 0 || nops < s.opts.MaxBatchOps) {
		nops += s.queue[k].nops()
		k++
	}
	if k == 0 {
		return batch, nops
	}
	if len(batch) == 0 && k == len(s.queue) {
		// Take everything: swap the slices, the old batch becomes the queue.
		batch, s.queue = s.queue, batch[:0]
		return batch, nops
	}
	batch = append(batch, s.queue[:k]...)
	n := copy(s.queue, s.queue[k:])
	clear(s.queue[n:])
	s.queue = s.queue[:n]
	return batch, nops
}

// apply writes the ops of batch in one transaction. A batch without ops
// writes nothing.
func (s *Store) apply(batch []request) error {
	nops := 0
	for i := range batch {
		nops += batch[i].nops()
	}
	if nops == 0 {
		return nil
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		t := txn{sessions: tx.Bucket(bucketSessions), retained: tx.Bucket(bucketRetained)}
		for i := range batch {
			e := batch[i].enc
			if e == nil {
				continue
			}
			for j := range e.ops {
				if err := t.apply(e, &e.ops[j]); err != nil {
					return err
				}
			}
		}
		return nil
	})
	s.txs.Add(1)
	if err != nil {
		s.log.Error("commit failed", "err", err, "commits", len(batch), "ops", nops)
		return fmt.Errorf("%w: %w", ErrCommit, err)
	}
	s.ops.Add(uint64(nops))
	return nil
}
