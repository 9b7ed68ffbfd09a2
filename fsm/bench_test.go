package fsm

import (
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
)

var big struct {
	once sync.Once
	f    *FSM
}

// bigFSM returns an FSM holding 100k routes (filters over three nodes, a
// tenth of them shared), 100k retained messages of 100 bytes and 10k
// sessions with three subscriptions each, built once per test binary.
// Benchmarks must not change it.
func bigFSM(b *testing.B) *FSM {
	big.once.Do(func() {
		h := newHarness(b)
		payload := string(make([]byte, 100))
		for i := range 100_000 {
			group := ""
			if i%10 == 0 {
				group = "g"
			}
			h.must(routeSet(fmt.Sprintf("n%d", i%3), fmt.Sprintf("site/%d/dev/%d/+", i%100, i), group, 1))
			h.must(retainedSet(fmt.Sprintf("site/%d/dev/%d/state", i%100, i), payload, 0))
		}
		for i := range 10_000 {
			id := fmt.Sprintf("client-%d", i)
			h.must(claim(id, fmt.Sprintf("n%d", i%3), uint64(i+1), 3600),
				subs(id, uint64(i+1), "a/b", fmt.Sprintf("site/%d/#", i%100), "$share/g/jobs/+"))
		}
		big.f = h.f
	})
	return big.f
}

// BenchmarkApplyRouteSet: decode, dispatch and apply of one RouteSet that
// adds a route and one that removes it, on a fresh FSM.
func BenchmarkApplyRouteSet(b *testing.B) {
	f := newFSM(b)
	var logs [2][]*raft.Log
	for i := range 1024 {
		for j, members := range []uint32{1, 0} {
			data, _ := Encode(routeSet("node-1", fmt.Sprintf("site/%d/dev/+/temperature", i), "", members))
			logs[j] = append(logs[j], &raft.Log{Type: raft.LogCommand, Data: data})
		}
	}
	b.ReportAllocs()
	var idx uint64
	for i := 0; b.Loop(); i++ {
		l := logs[i%2][(i/2)%1024]
		idx++
		l.Index = idx
		if resp := f.Apply(l); resp != nil {
			b.Fatal(resp)
		}
	}
}

// BenchmarkSnapshotCopy: the part of a snapshot raft waits for (Apply is
// blocked meanwhile), at 100k routes + 100k retained + 10k sessions.
func BenchmarkSnapshotCopy(b *testing.B) {
	f := bigFSM(b)
	b.ReportAllocs()
	for b.Loop() {
		s, err := f.Snapshot()
		if err != nil {
			b.Fatal(err)
		}
		s.Release()
	}
}

// BenchmarkSnapshotPersist: sorting and encoding the same state (runs
// beside Apply).
func BenchmarkSnapshotPersist(b *testing.B) {
	f := bigFSM(b)
	b.ReportAllocs()
	var n int64
	for b.Loop() {
		s, _ := f.Snapshot()
		n, _ = s.(*Snapshot).WriteTo(io.Discard)
	}
	b.ReportMetric(float64(n)/(1<<20), "MiB/snapshot")
}

// BenchmarkRestore: reading the same state back, indexes included.
func BenchmarkRestore(b *testing.B) {
	f := bigFSM(b)
	data := snapshotBytes(b, f)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := readSnapshot(bytesReader(data), 1<<30); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMatchRoutes: the publish path's query against 100k routes.
func BenchmarkMatchRoutes(b *testing.B) {
	f := bigFSM(b)
	topics := make([]string, 4096)
	for i := range topics {
		j := i * 24 // spread over the 100k devices
		topics[i] = fmt.Sprintf("site/%d/dev/%d/temp", j%100, j)
	}
	var dst []RouteMatch
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		dst = f.MatchRoutes(topics[i%len(topics)], dst[:0])
		if len(dst) != 1 {
			b.Fatalf("%d matches", len(dst))
		}
	}
}

// BenchmarkApplyRouteSetBig: the same RouteSet on the 100k-route state
// (add then remove, so the state is unchanged afterwards).
func BenchmarkApplyRouteSetBig(b *testing.B) {
	f := bigFSM(b)
	var logs [2]*raft.Log
	for j, members := range []uint32{1, 0} {
		data, _ := Encode(routeSet("n9", "site/1/dev/+/x", "", members))
		logs[j] = &raft.Log{Type: raft.LogCommand, Data: data}
	}
	idx := f.AppliedIndex()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		idx++
		l := logs[i%2]
		l.Index = idx
		if resp := f.Apply(l); resp != nil {
			b.Fatal(resp)
		}
	}
	logs[1].Index = idx + 1
	f.Apply(logs[1]) // leave the route removed
}
