package store

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker"
)

// TestDoneOrder: many goroutines commit concurrently, with empty and
// malformed commits among them. Every done is called once, from one
// goroutine at a time (the race detector checks the unsynchronised append),
// and each goroutine sees its dones in the order it called Commit.
func TestDoneOrder(t *testing.T) {
	s := openAt(t, tempPath(t), Options{NoSync: true, QueueSize: 16})
	mustCommit(t, s, putSession(sessionRecord("c")))
	const goroutines, perG = 16, 300
	type call struct{ g, i int }
	var order []call // appended by done only: the committer goroutine
	var wg sync.WaitGroup
	wg.Add(goroutines * perG)
	for g := range goroutines {
		go func() {
			for i := range perG {
				var ops []broker.StoreOp
				switch i % 5 {
				case 0: // empty commit
				case 1:
					ops = []broker.StoreOp{{Kind: 99}} // rejected
				default:
					seq := uint64(g*perG + i)
					ops = []broker.StoreOp{putMessage("c", storedMessage(seq, bareMessage("t")))}
				}
				s.Commit(ops, func(err error) {
					if (i%5 == 1) != errors.Is(err, ErrInvalidOp) {
						t.Errorf("commit %d/%d: %v", g, i, err)
					}
					order = append(order, call{g, i})
					wg.Done()
				})
			}
		}()
	}
	wg.Wait()
	if len(order) != goroutines*perG {
		t.Fatalf("%d dones, want %d", len(order), goroutines*perG)
	}
	next := make([]int, goroutines)
	for _, c := range order {
		if c.i != next[c.g] {
			t.Fatalf("goroutine %d: done of commit %d, want %d", c.g, c.i, next[c.g])
		}
		next[c.g]++
	}
	if n := len(load(t, s).Sessions[0].Messages); n != goroutines*perG*3/5 {
		t.Fatalf("%d messages stored, want %d", n, goroutines*perG*3/5)
	}
}

// TestDoneOrderSingleSubmitter: one submitter, so submission order is
// known exactly, across batches.
func TestDoneOrderSingleSubmitter(t *testing.T) {
	s := openAt(t, tempPath(t), Options{NoSync: true, QueueSize: 8, MaxBatchOps: 3})
	mustCommit(t, s, putSession(sessionRecord("c")))
	var got []int
	var wg sync.WaitGroup
	const n = 500
	wg.Add(n)
	for i := range n {
		var ops []broker.StoreOp
		for j := range i % 4 {
			ops = append(ops, addRel("c", uint16(i*4+j)))
		}
		s.Commit(ops, func(error) { got = append(got, i); wg.Done() })
	}
	wg.Wait()
	for i := range got {
		if got[i] != i {
			t.Fatalf("done %d was for commit %d", i, got[i])
		}
	}
}

// TestGroupCommit: commits that queue while a transaction is being written
// are applied together in the next one.
func TestGroupCommit(t *testing.T) {
	s := openAt(t, tempPath(t), Options{QueueSize: 2048}) // real fsync
	mustCommit(t, s, putSession(sessionRecord("c")))
	release := hold(t, s)
	before := s.Stats()
	const n = 1000
	var wg sync.WaitGroup
	var calls atomic.Int64
	wg.Add(n)
	for i := range n {
		go s.Commit([]broker.StoreOp{putMessage("c", storedMessage(uint64(i), bareMessage("t")))}, func(err error) {
			if err != nil {
				t.Error(err)
			}
			calls.Add(1)
			wg.Done()
		})
	}
	eventually(t, 10*time.Second, func() error {
		if q := s.queued(); q != n {
			return fmt.Errorf("%d commits queued, want %d", q, n)
		}
		return nil
	})
	release()
	wg.Wait()
	after := s.Stats()
	if txs := after.Transactions - before.Transactions; txs != 1 {
		t.Errorf("%d commits took %d transactions, want 1", n, txs)
	}
	if c := after.Commits - before.Commits; c != n+1 || calls.Load() != n {
		t.Errorf("stats count %d commits, %d dones called; want %d and %d", c, calls.Load(), n+1, n)
	}
	if got := len(load(t, s).Sessions[0].Messages); got != n {
		t.Errorf("%d messages stored, want %d", got, n)
	}
}

// TestGroupCommitUnaided: without holding the committer, concurrent
// committers waiting for their fsync share transactions.
func TestGroupCommitUnaided(t *testing.T) {
	s := openAt(t, tempPath(t), Options{}) // real fsync
	mustCommit(t, s, putSession(sessionRecord("c")))
	before := s.Stats()
	const n = 1000
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		go func() {
			defer wg.Done()
			if err := commit(t, s, putMessage("c", storedMessage(uint64(i), bareMessage("t")))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	txs := s.Stats().Transactions - before.Transactions
	t.Logf("%d concurrent commits in %d transactions", n, txs)
	if txs > n/4 {
		t.Errorf("%d concurrent commits took %d transactions, want at most %d", n, txs, n/4)
	}
}

// TestMaxBatchOps bounds the ops of one transaction.
func TestMaxBatchOps(t *testing.T) {
	s := openAt(t, tempPath(t), Options{NoSync: true, QueueSize: 2048, MaxBatchOps: 100})
	mustCommit(t, s, putSession(sessionRecord("c")))
	release := hold(t, s)
	before := s.Stats().Transactions
	var wg sync.WaitGroup
	wg.Add(1000)
	for i := range 1000 {
		s.Commit([]broker.StoreOp{addRel("c", uint16(i))}, func(error) { wg.Done() })
	}
	// One commit above the bound is applied whole, in a transaction of its own.
	big := make([]broker.StoreOp, 250)
	for i := range big {
		big[i] = addRel("c", uint16(2000+i))
	}
	wg.Add(1)
	s.Commit(big, func(error) { wg.Done() })
	release()
	wg.Wait()
	if txs := s.Stats().Transactions - before; txs != 11 {
		t.Errorf("1000 single-op commits and one of 250 ops with MaxBatchOps 100 took %d transactions, want 11", txs)
	}
	if got := len(load(t, s).Sessions[0].AwaitingRel); got != 1250 {
		t.Errorf("%d ids stored, want 1250", got)
	}
}

// TestMaxBatchDelay: a batch is held open for commits arriving within the
// delay, and Close does not wait for the delay.
func TestMaxBatchDelay(t *testing.T) {
	s := openAt(t, tempPath(t), Options{NoSync: true, MaxBatchDelay: 500 * time.Millisecond})
	mustCommit(t, s, putSession(sessionRecord("c")))
	before := s.Stats().Transactions
	var wg sync.WaitGroup
	wg.Add(2)
	s.Commit([]broker.StoreOp{addRel("c", 1)}, func(error) { wg.Done() })
	s.Commit([]broker.StoreOp{addRel("c", 2)}, func(error) { wg.Done() })
	wg.Wait()
	if txs := s.Stats().Transactions - before; txs != 1 {
		t.Errorf("two commits within MaxBatchDelay took %d transactions, want 1", txs)
	}

	s2 := openAt(t, tempPath(t), Options{NoSync: true, MaxBatchDelay: time.Hour})
	errc := make(chan error, 1)
	s2.Commit([]broker.StoreOp{putRetained(bareMessage("r"))}, func(err error) { errc <- err })
	start := time.Now()
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("commit pending at Close: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Close waited %v for the batch delay", d)
	}
}

// TestClosePending: Close applies and acknowledges every commit queued
// before it; commits after it get ErrClosed at once.
func TestClosePending(t *testing.T) {
	path := tempPath(t)
	s := openAt(t, path, Options{NoSync: true, QueueSize: 200})
	mustCommit(t, s, putSession(sessionRecord("c")))
	release := hold(t, s)
	const n = 100
	var got []error // appended by done, from the committer
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		s.Commit([]broker.StoreOp{addRel("c", uint16(i))}, func(err error) { got = append(got, err); wg.Done() })
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	eventually(t, 10*time.Second, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if !s.closed {
			return errors.New("Close has not started")
		}
		return nil
	})
	var late error
	lateCalls := 0
	s.Commit([]broker.StoreOp{addRel("c", 999)}, func(err error) { late = err; lateCalls++ })
	if lateCalls != 1 || !errors.Is(late, ErrClosed) {
		t.Fatalf("Commit after Close: done called %d times with %v; want once with ErrClosed", lateCalls, late)
	}
	release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range got {
		if err != nil {
			t.Errorf("pending commit %d: %v", i, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Load(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Load after Close: %v, want ErrClosed", err)
	}
	s = openAt(t, path, testOptions)
	if ids := load(t, s).Sessions[0].AwaitingRel; len(ids) != n {
		t.Fatalf("%d of %d pending commits stored", len(ids), n)
	}
}

// TestCloseWithBlockedCommit: a Commit blocked on a full queue when Close
// starts gets its done called once.
func TestCloseWithBlockedCommit(t *testing.T) {
	s := openAt(t, tempPath(t), Options{NoSync: true, QueueSize: 2})
	release := hold(t, s)
	var calls [3]atomic.Int32
	for i := range 2 {
		s.Commit(nil, func(error) { calls[i].Add(1) })
	}
	blocked := make(chan struct{})
	go func() {
		s.Commit(nil, func(err error) {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("blocked commit: %v, want ErrClosed", err)
			}
			calls[2].Add(1)
		})
		close(blocked)
	}()
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	<-blocked // Close woke it
	release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	for i := range calls {
		if n := calls[i].Load(); n != 1 {
			t.Errorf("commit %d: done called %d times", i, n)
		}
	}
}

// TestCommitFromDone: a done function may commit even when the queue is
// full; the committer does not wait for itself.
func TestCommitFromDone(t *testing.T) {
	s := openAt(t, tempPath(t), Options{NoSync: true, QueueSize: 1})
	mustCommit(t, s, putSession(sessionRecord("c")))
	inner := make(chan error, 1)
	rel := make(chan struct{})
	entered := make(chan struct{})
	s.Commit([]broker.StoreOp{addRel("c", 1)}, func(error) {
		close(entered)
		<-rel
		s.Commit([]broker.StoreOp{addRel("c", 2)}, func(err error) { inner <- err })
	})
	<-entered
	s.Commit([]broker.StoreOp{addRel("c", 3)}, nil) // fills the queue
	close(rel)
	select {
	case err := <-inner:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Commit from inside done deadlocked")
	}
}
