package store

import (
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
)

// testOptions skip fsync: most tests are about semantics, not durability.
var testOptions = Options{NoSync: true}

func tempPath(t testing.TB) string { return filepath.Join(t.TempDir(), "store.db") }

// openAt opens the store at path and closes it at the end of the test.
func openAt(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// reopen closes s and opens its file again.
func reopen(t testing.TB, s *Store) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return openAt(t, s.path, s.opts)
}

// commit commits ops and waits for done.
func commit(t testing.TB, s *Store, ops ...broker.StoreOp) error {
	t.Helper()
	ch := make(chan error, 1)
	s.Commit(ops, func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("done not called within 30s")
		return nil
	}
}

func mustCommit(t testing.TB, s *Store, ops ...broker.StoreOp) {
	t.Helper()
	if err := commit(t, s, ops...); err != nil {
		t.Fatalf("commit: %v", err)
	}
}

func load(t testing.TB, s *Store) *broker.Snapshot {
	t.Helper()
	snap, err := s.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return snap
}

func checkSnapshot(t testing.TB, got, want *broker.Snapshot) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("snapshot mismatch\n got: %s\nwant: %s", dump(got), dump(want))
	}
}

// dump formats a snapshot with its pointers followed, for failure messages.
func dump(snap *broker.Snapshot) string {
	var b strings.Builder
	for _, ss := range snap.Sessions {
		msgs, rec := ss.Messages, ss
		rec.Messages = nil
		fmt.Fprintf(&b, "\n  session %+v", rec)
		for _, m := range msgs {
			msg := m.Msg
			m.Msg = nil
			fmt.Fprintf(&b, "\n    msg %+v %s", m, dumpMessage(msg))
		}
	}
	for _, m := range snap.Retained {
		fmt.Fprintf(&b, "\n  retained %s", dumpMessage(m))
	}
	return b.String()
}

func dumpMessage(m *broker.Message) string {
	if m == nil {
		return "<nil>"
	}
	var has []string
	for _, id := range []packet.PropID{packet.PropPayloadFormat, packet.PropContentType, packet.PropResponseTopic, packet.PropCorrelationData, packet.PropUserProperty} {
		if m.Props.Has(id) {
			has = append(has, fmt.Sprint(id))
		}
	}
	return fmt.Sprintf("%+v has=%v", *m, has)
}

// eventually calls f until it returns nil, failing the test after timeout.
func eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// queued is the number of commits waiting for the committer.
func (s *Store) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue)
}

// hold parks the committer before it applies its next batch until release
// is called, so that a test can queue commits behind it and know that they
// form the following batches.
func hold(t testing.TB, s *Store) (release func()) {
	t.Helper()
	entered, rel := make(chan struct{}), make(chan struct{})
	h := func() {
		s.beforeBatch.Store(nil)
		close(entered)
		<-rel
	}
	s.beforeBatch.Store(&h)
	s.Commit(nil, nil)
	<-entered
	release = sync.OnceFunc(func() { close(rel) })
	t.Cleanup(release)
	return release
}

// fullMessage sets every field a Message stores, every property present.
func fullMessage(topic string) *broker.Message {
	m := &broker.Message{
		Topic:     topic,
		Payload:   []byte("payload of " + topic),
		QoS:       2,
		Retain:    true,
		ExpiresAt: 1_700_000_000_123_456_789,
		Origin:    "publisher-1",
	}
	p := &m.Props
	p.PayloadFormat = 1
	p.Set(packet.PropPayloadFormat)
	p.ContentType = "text/plain"
	p.Set(packet.PropContentType)
	p.ResponseTopic = "reply/" + topic
	p.Set(packet.PropResponseTopic)
	p.CorrelationData = []byte{0, 1, 2, 0xFF}
	p.Set(packet.PropCorrelationData)
	p.UserProperties = []packet.UserProperty{{Key: "k", Value: "v1"}, {Key: "k", Value: "v2"}, {Key: "", Value: ""}}
	return m
}

// presentButEmpty has properties present with zero values, which must stay
// present.
func presentButEmpty(topic string) *broker.Message {
	m := &broker.Message{Topic: topic, QoS: 1}
	m.Props.Set(packet.PropPayloadFormat)
	m.Props.Set(packet.PropContentType)
	m.Props.Set(packet.PropResponseTopic)
	m.Props.Set(packet.PropCorrelationData)
	return m
}

// bareMessage has no payload and no properties.
func bareMessage(topic string) *broker.Message {
	return &broker.Message{Topic: topic}
}

func sessionRecord(id string) *broker.SessionRecord {
	return &broker.SessionRecord{
		ClientID:       id,
		Version:        5,
		Expiry:         0xFFFFFFFF,
		Username:       "user-" + id,
		DisconnectedAt: 1_700_000_000_000_000_001,
		Subscriptions: []broker.Subscription{
			{Filter: "a/+", Real: "a/+", Opts: packet.SubOptions{QoS: 1, NoLocal: true}, SubID: 7},
			{Filter: "$share/g/b/#", Group: "g", Real: "b/#", Opts: packet.SubOptions{QoS: 2, RetainAsPublished: true, RetainHandling: 2}, SubID: 268_435_455},
			{Filter: "c", Real: "c"},
		},
	}
}

func storedMessage(seq uint64, m *broker.Message) *broker.StoredMessage {
	return &broker.StoredMessage{
		Seq:         seq,
		PacketID:    uint16(seq),
		QoS:         m.QoS,
		Retain:      seq%2 == 0,
		SubIDs:      []uint32{1, 268_435_455},
		ShareFilter: "$share/g/b/#",
		ShareGroup:  "g",
		Msg:         m,
	}
}

// Op builders.

func putSession(rec *broker.SessionRecord) broker.StoreOp {
	return broker.StoreOp{Kind: broker.OpPutSession, ClientID: rec.ClientID, Session: rec}
}

func deleteSession(id string) broker.StoreOp {
	return broker.StoreOp{Kind: broker.OpDeleteSession, ClientID: id}
}

func putMessage(id string, m *broker.StoredMessage) broker.StoreOp {
	return broker.StoreOp{Kind: broker.OpPutMessage, ClientID: id, Message: m}
}

func deleteMessage(id string, seq uint64) broker.StoreOp {
	return broker.StoreOp{Kind: broker.OpDeleteMessage, ClientID: id, Seq: seq}
}

func releaseMessage(id string, seq uint64) broker.StoreOp {
	return broker.StoreOp{Kind: broker.OpReleaseMessage, ClientID: id, Seq: seq}
}

func addRel(id string, pid uint16) broker.StoreOp {
	return broker.StoreOp{Kind: broker.OpAddRel, ClientID: id, PacketID: pid}
}

func clearRel(id string, pid uint16) broker.StoreOp {
	return broker.StoreOp{Kind: broker.OpClearRel, ClientID: id, PacketID: pid}
}

func putRetained(m *broker.Message) broker.StoreOp {
	return broker.StoreOp{Kind: broker.OpPutRetained, Retained: m}
}

func deleteRetained(topic string) broker.StoreOp {
	return broker.StoreOp{Kind: broker.OpDeleteRetained, Topic: topic}
}
