package store

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/mqcluster/mqcluster/broker"
)

// BenchmarkCommit measures durable commits of one 64-byte message each,
// with real fsync, by goroutines that each wait for their done before the
// next commit (a client waiting for its PUBACK). With more waiters, more
// commits share an fsync: commits/fsync is the average group size.
//
//	go test -run '^$' -bench BenchmarkCommit -benchmem ./broker/store/
func BenchmarkCommit(b *testing.B) {
	for _, parallelism := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("waiters=%dxGOMAXPROCS", parallelism), func(b *testing.B) {
			s := openAt(b, tempPath(b), Options{})
			mustCommit(b, s, putSession(sessionRecord("bench")))
			msg := &broker.Message{Topic: "bench/topic", Payload: make([]byte, 64), QoS: 1}
			var seq atomic.Uint64
			before := s.Stats()
			b.SetParallelism(parallelism)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				sm := broker.StoredMessage{QoS: 1, Msg: msg}
				ops := []broker.StoreOp{{Kind: broker.OpPutMessage, ClientID: "bench", Message: &sm}}
				ch := make(chan error, 1)
				done := func(err error) { ch <- err }
				for pb.Next() {
					sm.Seq = seq.Add(1)
					sm.PacketID = uint16(sm.Seq)
					s.Commit(ops, done) // encodes ops before it returns: reusing them is fine
					if err := <-ch; err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			st := s.Stats()
			b.ReportMetric(float64(st.Commits-before.Commits)/float64(st.Transactions-before.Transactions), "commits/fsync")
		})
	}
}
