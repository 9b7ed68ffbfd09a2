package fsm

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// FormatVersion is the snapshot format this package writes. Restore reads
// every version up to it; fsm/testdata keeps a golden file of each.
// Version 2 added the wills fired lately (FiredWillRecord), a record kind
// that a reader of version 1 would refuse.
const FormatVersion = 2

// magic starts every snapshot, followed by the format version as a
// big-endian uint16.
const magic = "MQCFSM"

// Snapshot is a point-in-time copy of the state: the pointers to the
// (immutable) values of every map, taken under the read lock. It implements
// raft.FSMSnapshot; Persist sorts and encodes while Apply goes on.
type Snapshot struct {
	applied  uint64
	maxEpoch uint64
	routes   []*Route
	sessions []*Session
	wills    []*Will
	retained []*Retained
	nodes    []Node
	fired    []firedWill
}

// firedWill is a will fired lately (state.fired).
type firedWill struct {
	id    string
	index uint64
}

var _ raft.FSMSnapshot = (*Snapshot)(nil)

// Snapshot takes a point-in-time copy of the state. Raft calls it on the
// goroutine that calls Apply, so it must be quick: it copies pointers, and
// leaves sorting and encoding to Persist.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.haltedErr(); err != nil {
		return nil, err
	}
	return f.snapshot(), nil
}

func (f *FSM) snapshot() *Snapshot {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := f.st.Load()
	return &Snapshot{
		applied:  f.applied.Load(),
		maxEpoch: st.maxEpoch,
		routes:   slices.AppendSeq(make([]*Route, 0, len(st.routes)), maps.Values(st.routes)),
		sessions: slices.AppendSeq(make([]*Session, 0, len(st.sessions)), maps.Values(st.sessions)),
		wills:    slices.AppendSeq(make([]*Will, 0, len(st.wills)), maps.Values(st.wills)),
		retained: slices.AppendSeq(make([]*Retained, 0, len(st.retained)), maps.Values(st.retained)),
		nodes:    slices.AppendSeq(make([]Node, 0, len(st.nodes)), maps.Values(st.nodes)),
		fired:    firedWills(st.fired),
	}
}

func firedWills(m map[string]uint64) []firedWill {
	out := make([]firedWill, 0, len(m))
	for id, index := range m {
		out = append(out, firedWill{id, index})
	}
	return out
}

// Persist writes the snapshot to sink and closes it, or cancels it on error.
func (s *Snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := s.WriteTo(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	return sink.Close()
}

// Release does nothing: the snapshot holds only memory.
func (s *Snapshot) Release() {}

// WriteTo writes the snapshot in the current format: the magic and version,
// a SnapshotHeader, then one SnapshotRecord per route, session, will,
// retained message, node and fired will, each sorted by key, each
// length-delimited. The
// same state always gives the same bytes.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	s.sort()
	cw := &countingWriter{w: w}
	bw := bufio.NewWriterSize(cw, 64<<10)
	var hdr [len(magic) + 2]byte
	copy(hdr[:], magic)
	binary.BigEndian.PutUint16(hdr[len(magic):], FormatVersion)
	if _, err := bw.Write(hdr[:]); err != nil {
		return cw.n, err
	}
	enc := recordWriter{w: bw}
	enc.write(&pb.SnapshotHeader{
		FormatVersion: FormatVersion,
		AppliedIndex:  s.applied,
		MaxEpoch:      s.maxEpoch,
		Records:       uint64(len(s.routes) + len(s.sessions) + len(s.wills) + len(s.retained) + len(s.nodes) + len(s.fired)),
	})
	var rec pb.SnapshotRecord
	for _, r := range s.routes {
		rec.Record = &pb.SnapshotRecord_Route{Route: routeToProto(r)}
		enc.write(&rec)
	}
	for _, v := range s.sessions {
		rec.Record = &pb.SnapshotRecord_Session{Session: sessionToProto(v)}
		enc.write(&rec)
	}
	for _, v := range s.wills {
		rec.Record = &pb.SnapshotRecord_Will{Will: willToProto(v)}
		enc.write(&rec)
	}
	for _, v := range s.retained {
		rec.Record = &pb.SnapshotRecord_Retained{Retained: retainedToProto(v)}
		enc.write(&rec)
	}
	for _, v := range s.nodes {
		rec.Record = &pb.SnapshotRecord_Node{Node: nodeToProto(v)}
		enc.write(&rec)
	}
	for _, v := range s.fired {
		rec.Record = &pb.SnapshotRecord_FiredWill{FiredWill: &pb.FiredWillRecord{WillId: v.id, FiredAtIndex: v.index}}
		enc.write(&rec)
	}
	if enc.err == nil {
		enc.err = bw.Flush()
	}
	return cw.n, enc.err
}

// sort puts every slice in the order of the stream: routes by filter then
// group, the others by their id.
func (s *Snapshot) sort() {
	slices.SortFunc(s.routes, func(a, b *Route) int {
		return cmp.Or(strings.Compare(a.Filter, b.Filter), strings.Compare(a.Group, b.Group))
	})
	slices.SortFunc(s.sessions, func(a, b *Session) int { return strings.Compare(a.ClientID, b.ClientID) })
	slices.SortFunc(s.wills, func(a, b *Will) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(s.retained, func(a, b *Retained) int { return strings.Compare(a.Topic, b.Topic) })
	slices.SortFunc(s.nodes, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(s.fired, func(a, b firedWill) int { return strings.Compare(a.id, b.id) })
}

// recordWriter writes length-delimited messages (a uvarint size, then the
// message, as protodelim does) through one reused buffer, and keeps the
// first error.
type recordWriter struct {
	w   io.Writer
	buf []byte
	err error
}

func (e *recordWriter) write(m proto.Message) {
	if e.err != nil {
		return
	}
	opts := proto.MarshalOptions{Deterministic: true}
	e.buf = binary.AppendUvarint(e.buf[:0], uint64(opts.Size(m)))
	opts.UseCachedSize = true // Size just computed them
	e.buf, e.err = opts.MarshalAppend(e.buf, m)
	if e.err == nil {
		_, e.err = e.w.Write(e.buf)
	}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Restore replaces the state with the snapshot read from rc, and closes rc.
// It builds the new state aside and swaps it in only when the whole stream
// has been read and checked, so a bad snapshot leaves the state as it was.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.haltedErr(); err != nil {
		return err
	}
	st, hdr, err := readSnapshot(rc, f.cfg.MaxRecordSize)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.st.Store(st)
	f.applied.Store(hdr.GetAppliedIndex())
	f.mu.Unlock()
	f.restores.Add(1)
	for k := range f.changed {
		f.changed[k].notify()
	}
	f.cfg.Logger.Info("restored snapshot", "raft_index", hdr.GetAppliedIndex(),
		"routes", len(st.routes), "sessions", len(st.sessions), "wills", len(st.wills),
		"retained", len(st.retained), "nodes", len(st.nodes), "fired_wills", len(st.fired))
	return nil
}

// readSnapshot decodes a whole snapshot stream into a fresh state.
func readSnapshot(r io.Reader, maxRecord int) (*state, *pb.SnapshotHeader, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var head [len(magic) + 2]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		return nil, nil, fmt.Errorf("%w: reading magic: %w", ErrBadSnapshot, err)
	}
	if !bytes.Equal(head[:len(magic)], []byte(magic)) {
		return nil, nil, fmt.Errorf("%w: not an mqcluster fsm snapshot (starts with %q)", ErrBadSnapshot, head[:])
	}
	version := binary.BigEndian.Uint16(head[len(magic):])
	switch {
	case version == 0:
		return nil, nil, fmt.Errorf("%w: format version 0", ErrBadSnapshot)
	case version > FormatVersion:
		return nil, nil, fmt.Errorf("%w: snapshot format version %d is newer than this binary reads (up to %d): upgrade this node",
			ErrSnapshotVersion, version, FormatVersion)
	}
	dec := recordReader{r: br, max: maxRecord}
	hdr := &pb.SnapshotHeader{}
	if err := dec.read(hdr); err != nil {
		return nil, nil, fmt.Errorf("%w: header: %w", ErrBadSnapshot, err)
	}
	if hdr.GetFormatVersion() != uint32(version) {
		return nil, nil, fmt.Errorf("%w: header says format version %d, magic says %d", ErrBadSnapshot, hdr.GetFormatVersion(), version)
	}
	b := builder{st: newState()}
	b.st.maxEpoch = hdr.GetMaxEpoch()
	for i := uint64(0); i < hdr.GetRecords(); i++ {
		var rec pb.SnapshotRecord
		if err := dec.read(&rec); err != nil {
			return nil, nil, fmt.Errorf("%w: record %d of %d: %w", ErrBadSnapshot, i+1, hdr.GetRecords(), err)
		}
		if err := b.add(&rec); err != nil {
			return nil, nil, fmt.Errorf("%w: record %d: %w", ErrBadSnapshot, i+1, err)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return nil, nil, fmt.Errorf("%w: data after the last of %d records", ErrBadSnapshot, hdr.GetRecords())
	}
	// Pruning takes the fired wills in the order they were fired.
	st := b.st
	slices.SortFunc(st.firedOrder, func(a, b string) int {
		return cmp.Or(cmp.Compare(st.fired[a], st.fired[b]), strings.Compare(a, b))
	})
	return st, hdr, nil
}

// recordReader reads length-delimited messages through one reused buffer
// (Unmarshal copies what it keeps).
type recordReader struct {
	r   *bufio.Reader
	max int
	buf []byte
}

func (d *recordReader) read(m proto.Message) error {
	size, err := binary.ReadUvarint(d.r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	if size > uint64(d.max) {
		return fmt.Errorf("record of %d bytes exceeds the limit of %d", size, d.max)
	}
	if uint64(cap(d.buf)) < size {
		d.buf = make([]byte, size)
	}
	d.buf = d.buf[:size]
	if _, err := io.ReadFull(d.r, d.buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return proto.Unmarshal(d.buf, m)
}

// builder adds snapshot records to a fresh state, checking that they come
// in the order WriteTo writes them: by kind, then strictly increasing keys
// (which also rules out duplicates). A route's key is (filter, group).
type builder struct {
	st      *state
	kind    int
	last    routeKey
	started bool
}

func (b *builder) order(kind int, key routeKey) error {
	if kind < b.kind || kind == b.kind && b.started &&
		cmp.Or(strings.Compare(key.filter, b.last.filter), strings.Compare(key.group, b.last.group)) <= 0 {
		return fmt.Errorf("record out of order or duplicate (kind %d, key %q %q)", kind, key.filter, key.group)
	}
	b.kind, b.last, b.started = kind, key, true
	return nil
}

func (b *builder) add(rec *pb.SnapshotRecord) error {
	st := b.st
	switch r := rec.GetRecord().(type) {
	case *pb.SnapshotRecord_Route:
		return b.addRoute(r.Route)
	case *pb.SnapshotRecord_Session:
		v := r.Session
		if v.GetClientId() == "" {
			return errors.New("session without client_id")
		}
		if err := b.order(2, routeKey{filter: v.GetClientId()}); err != nil {
			return err
		}
		subs, err := subscriptionsFromProto(v.GetSubscriptions())
		if err != nil {
			return err
		}
		st.sessions[v.GetClientId()] = &Session{
			ClientID: v.GetClientId(), Owner: v.GetOwnerNodeId(), Epoch: v.GetEpoch(),
			ExpirySeconds: v.GetExpirySeconds(), Connected: v.GetConnected(),
			DisconnectedAtUnixMs: v.GetDisconnectedAtUnixMs(), Subscriptions: subs,
			Holders: slices.Clone(v.GetHolders()), ClaimedAtUnixMs: v.GetClaimedAtUnixMs(),
		}
	case *pb.SnapshotRecord_Will:
		v := r.Will
		if v.GetWillId() == "" {
			return errors.New("will without will_id")
		}
		if err := b.order(3, routeKey{filter: v.GetWillId()}); err != nil {
			return err
		}
		st.wills[v.GetWillId()] = &Will{
			ID: v.GetWillId(), ClientID: v.GetClientId(), NodeID: v.GetNodeId(),
			DelaySeconds: v.GetDelaySeconds(), SessionExpirySeconds: v.GetSessionExpirySeconds(),
			Topic: v.GetTopic(), Payload: v.GetPayload(), QoS: byte(v.GetQos()), Retain: v.GetRetain(),
			Properties: v.GetProperties(),
		}
	case *pb.SnapshotRecord_Retained:
		v := r.Retained
		if v.GetTopic() == "" {
			return errors.New("retained message without topic")
		}
		if err := b.order(4, routeKey{filter: v.GetTopic()}); err != nil {
			return err
		}
		st.putRetained(&Retained{
			Topic: v.GetTopic(), Payload: v.GetPayload(), QoS: byte(v.GetQos()), Properties: v.GetProperties(),
			ExpiresAtUnixMs: v.GetExpiresAtUnixMs(), SetAtUnixMs: v.GetSetAtUnixMs(),
		})
	case *pb.SnapshotRecord_Node:
		v := r.Node
		if v.GetNodeId() == "" {
			return errors.New("node without node_id")
		}
		if err := b.order(5, routeKey{filter: v.GetNodeId()}); err != nil {
			return err
		}
		var state NodeState
		switch v.GetState() {
		case pb.NodeState_NODE_STATE_DOWN:
			state = NodeDown
		case pb.NodeState_NODE_STATE_REMOVED:
			state = NodeRemoved
		default:
			return fmt.Errorf("node %q in state %v", v.GetNodeId(), v.GetState())
		}
		st.nodes[v.GetNodeId()] = Node{ID: v.GetNodeId(), State: state, DownAtUnixMs: v.GetDownAtUnixMs()}
	case *pb.SnapshotRecord_FiredWill:
		v := r.FiredWill
		if v.GetWillId() == "" || v.GetFiredAtIndex() == 0 {
			return errors.New("fired will without will_id or index")
		}
		if err := b.order(6, routeKey{filter: v.GetWillId()}); err != nil {
			return err
		}
		st.fired[v.GetWillId()] = v.GetFiredAtIndex()
		st.firedOrder = append(st.firedOrder, v.GetWillId())
	default:
		return errors.New("record of an unknown kind")
	}
	return nil
}

func (b *builder) addRoute(v *pb.RouteRecord) error {
	if v.GetFilter() == "" || len(v.GetMembers()) == 0 {
		return errors.New("route without filter or members")
	}
	key := routeKey{v.GetFilter(), v.GetGroup()}
	if err := b.order(1, key); err != nil {
		return err
	}
	for i, m := range v.GetMembers() {
		if m.GetNodeId() == "" || m.GetMembers() == 0 {
			return fmt.Errorf("route %q: member without node_id or count", v.GetFilter())
		}
		if i > 0 && m.GetNodeId() <= v.GetMembers()[i-1].GetNodeId() {
			return fmt.Errorf("route %q: members out of order", v.GetFilter())
		}
		b.st.setRoute(key, m.GetNodeId(), m.GetMembers())
	}
	return nil
}

func routeToProto(r *Route) *pb.RouteRecord {
	members := make([]*pb.RouteMember, len(r.Nodes))
	for i, n := range r.Nodes {
		members[i] = &pb.RouteMember{NodeId: n.NodeID, Members: n.Members}
	}
	return &pb.RouteRecord{Filter: r.Filter, Group: r.Group, Members: members}
}

func sessionToProto(v *Session) *pb.SessionRecord {
	return &pb.SessionRecord{
		ClientId: v.ClientID, OwnerNodeId: v.Owner, Epoch: v.Epoch, ExpirySeconds: v.ExpirySeconds,
		Connected: v.Connected, DisconnectedAtUnixMs: v.DisconnectedAtUnixMs,
		Subscriptions: subscriptionsToProto(v.Subscriptions), Holders: v.Holders,
		ClaimedAtUnixMs: v.ClaimedAtUnixMs,
	}
}

func willToProto(v *Will) *pb.WillRecord {
	return &pb.WillRecord{
		WillId: v.ID, ClientId: v.ClientID, NodeId: v.NodeID, DelaySeconds: v.DelaySeconds,
		SessionExpirySeconds: v.SessionExpirySeconds, Topic: v.Topic, Payload: v.Payload,
		Qos: uint32(v.QoS), Retain: v.Retain, Properties: v.Properties,
	}
}

func retainedToProto(v *Retained) *pb.RetainedRecord {
	return &pb.RetainedRecord{
		Topic: v.Topic, Payload: v.Payload, Qos: uint32(v.QoS), Properties: v.Properties,
		ExpiresAtUnixMs: v.ExpiresAtUnixMs, SetAtUnixMs: v.SetAtUnixMs,
	}
}

func nodeToProto(v Node) *pb.NodeRecord {
	state := pb.NodeState_NODE_STATE_DOWN
	if v.State == NodeRemoved {
		state = pb.NodeState_NODE_STATE_REMOVED
	}
	return &pb.NodeRecord{NodeId: v.ID, State: state, DownAtUnixMs: v.DownAtUnixMs}
}
