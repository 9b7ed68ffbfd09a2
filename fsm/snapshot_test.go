package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

var update = flag.Bool("update", false, "rewrite the golden snapshot of the current format version in testdata")

// TestSnapshotRoundTrip: restore(snapshot(f)) has the state of f, and
// snapshots to the same bytes.
func TestSnapshotRoundTrip(t *testing.T) {
	h := newHarness(t)
	for _, c := range randomCommands(1, 2000) {
		h.apply(c)
	}
	data := snapshotBytes(t, h.f)
	g := restored(t, data)
	if dump(t, g) != dump(t, h.f) {
		t.Fatalf("restored state differs:\n%s\nwant\n%s", dump(t, g), dump(t, h.f))
	}
	if g.AppliedIndex() != h.f.AppliedIndex() {
		t.Errorf("applied index %d, want %d", g.AppliedIndex(), h.f.AppliedIndex())
	}
	if !bytes.Equal(snapshotBytes(t, g), data) {
		t.Error("snapshot of the restored FSM differs")
	}
	if g.Stats().Restores != 1 {
		t.Error("restore not counted")
	}
	// The restored FSM goes on applying like the original.
	h2 := &harness{t: t, f: g, idx: h.idx}
	for _, c := range randomCommands(2, 500) {
		r1, r2 := h.apply(c), h2.apply(c)
		if fmt.Sprint(r1) != fmt.Sprint(r2) {
			t.Fatalf("responses differ after restore: %v / %v", r1, r2)
		}
	}
	if !bytes.Equal(snapshotBytes(t, g), snapshotBytes(t, h.f)) {
		t.Error("states diverged after restore")
	}
}

// TestDeterminism: FSMs fed the same log write byte-identical snapshots,
// whichever way they got there (straight, or through a snapshot and restore
// half way), whatever order Go iterates their maps in.
func TestDeterminism(t *testing.T) {
	for seed := uint64(1); seed <= 5; seed++ {
		log := randomCommands(seed, 1500)
		a, b := newHarness(t), newHarness(t)
		for _, c := range log {
			a.apply(c)
		}
		for i, c := range log {
			b.apply(c)
			if i == len(log)/2 {
				b = &harness{t: t, f: restored(t, snapshotBytes(t, b.f)), idx: b.idx}
			}
		}
		sa, sb := snapshotBytes(t, a.f), snapshotBytes(t, b.f)
		if !bytes.Equal(sa, sb) {
			t.Fatalf("seed %d: snapshots differ:\n%s\n---\n%s", seed, dump(t, a.f), dump(t, b.f))
		}
		if st := a.f.Stats(); st.Routes == 0 || st.Sessions == 0 || st.Wills == 0 || st.Retained == 0 || st.Rejected == 0 {
			t.Errorf("seed %d: the log exercises too little: %+v", seed, st)
		}
	}
}

// TestSnapshotUnderConcurrentApply follows raft's contract: Snapshot is
// taken between two Applies, then Persist runs while Apply goes on (and the
// node queries). The persisted bytes must be the state at the snapshot
// point. Run with -race.
func TestSnapshotUnderConcurrentApply(t *testing.T) {
	log := randomCommands(7, 3000)
	h := newHarness(t)
	ref := newHarness(t)

	type taken struct {
		snap *Snapshot
		want []byte
	}
	persist := make(chan taken, 8)
	var wg sync.WaitGroup
	var failures []string
	var mu sync.Mutex
	wg.Add(1)
	go func() { // persister
		defer wg.Done()
		for tk := range persist {
			var buf bytes.Buffer
			if _, err := tk.snap.WriteTo(&buf); err != nil {
				mu.Lock()
				failures = append(failures, err.Error())
				mu.Unlock()
				continue
			}
			if !bytes.Equal(buf.Bytes(), tk.want) {
				mu.Lock()
				failures = append(failures, "persisted snapshot is not the state at the snapshot point")
				mu.Unlock()
			}
		}
	}()
	stop := make(chan struct{})
	wg.Add(1)
	go func() { // queries, as the node makes them
		defer wg.Done()
		var m []RouteMatch
		for {
			select {
			case <-stop:
				return
			default:
			}
			m = h.f.MatchRoutes("a/b", m[:0])
			_ = h.f.Sessions()
			_ = h.f.RetainedMatching("#")
			_ = h.f.WillsOf("n1")
			_ = h.f.Stats()
		}
	}()

	for i, c := range log {
		h.apply(c)
		ref.apply(c)
		if i%300 == 0 {
			s, err := h.f.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			persist <- taken{s.(*Snapshot), snapshotBytes(t, ref.f)}
		}
	}
	close(persist)
	close(stop)
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
}

// sink is a raft.SnapshotSink in memory.
type sink struct {
	bytes.Buffer
	closed, canceled bool
}

func (s *sink) ID() string    { return "test" }
func (s *sink) Close() error  { s.closed = true; return nil }
func (s *sink) Cancel() error { s.canceled = true; return nil }

type failingSink struct{ sink }

func (s *failingSink) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestPersist(t *testing.T) {
	h := newHarness(t)
	h.must(routeSet("n1", "a", "", 1), retainedSet("t", "p", 0))
	s, _ := h.f.Snapshot()
	var ok sink
	if err := s.Persist(&ok); err != nil || !ok.closed || ok.canceled {
		t.Fatalf("Persist: %v, closed %v canceled %v", err, ok.closed, ok.canceled)
	}
	if !bytes.Equal(ok.Bytes(), snapshotBytes(t, h.f)) {
		t.Error("Persist and WriteTo differ")
	}
	var bad failingSink
	if err := s.Persist(&bad); err == nil || !bad.canceled || bad.closed {
		t.Fatalf("Persist to a failing sink: %v, closed %v canceled %v", err, bad.closed, bad.canceled)
	}
	var _ raft.SnapshotSink = &ok
}

// TestRestoreRejects: streams that are not whole, valid snapshots of a
// format this binary reads are rejected with a clear error, and leave the
// state as it was.
func TestRestoreRejects(t *testing.T) {
	h := newHarness(t)
	for _, c := range randomCommands(3, 300) {
		h.apply(c)
	}
	good := snapshotBytes(t, h.f)

	newer := bytes.Clone(good)
	binary.BigEndian.PutUint16(newer[len(magic):], FormatVersion+1)
	withTrailer := append(bytes.Clone(good), 0)

	cases := []struct {
		name string
		data []byte
		want error
		text string
	}{
		{"empty", nil, ErrBadSnapshot, "magic"},
		{"not a snapshot", []byte("hello world, not a snapshot"), ErrBadSnapshot, "not an mqcluster fsm snapshot"},
		{"newer version", newer, ErrSnapshotVersion, fmt.Sprintf("format version %d is newer than this binary reads (up to %d)", FormatVersion+1, FormatVersion)},
		{"version 0", append([]byte(magic), 0, 0), ErrBadSnapshot, "version 0"},
		{"trailing data", withTrailer, ErrBadSnapshot, "after the last"},
		{"out of order", handMade(t, routeRec("b", "n1"), routeRec("a", "n1")), ErrBadSnapshot, "out of order"},
		{"duplicate", handMade(t, routeRec("a", "n1"), routeRec("a", "n1")), ErrBadSnapshot, "duplicate"},
		{"kinds out of order", handMade(t, &pb.SnapshotRecord{Record: &pb.SnapshotRecord_Node{Node: &pb.NodeRecord{NodeId: "n", State: pb.NodeState_NODE_STATE_DOWN}}}, routeRec("a", "n1")), ErrBadSnapshot, "out of order"},
		{"empty record", handMade(t, &pb.SnapshotRecord{}), ErrBadSnapshot, "unknown kind"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newHarness(t)
			g.must(routeSet("keep", "me", "", 1))
			before := dump(t, g.f)
			err := g.f.Restore(io.NopCloser(bytes.NewReader(tc.data)))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("Restore: %v, want %v containing %q", err, tc.want, tc.text)
			}
			if dump(t, g.f) != before || g.f.AppliedIndex() != 1 {
				t.Error("a rejected snapshot changed the state")
			}
		})
	}
	t.Run("every truncation", func(t *testing.T) {
		g := newFSM(t)
		for n := range len(good) {
			err := g.Restore(io.NopCloser(bytes.NewReader(good[:n])))
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("truncated to %d of %d bytes: %v", n, len(good), err)
			}
		}
	})
}

func routeRec(filter, node string) *pb.SnapshotRecord {
	return &pb.SnapshotRecord{Record: &pb.SnapshotRecord_Route{Route: &pb.RouteRecord{
		Filter: filter, Members: []*pb.RouteMember{{NodeId: node, Members: 1}}}}}
}

// handMade writes a version-1 snapshot with the given records.
func handMade(t *testing.T, recs ...*pb.SnapshotRecord) []byte {
	var buf bytes.Buffer
	buf.WriteString(magic)
	buf.Write([]byte{0, 1})
	w := recordWriter{w: &buf}
	w.write(&pb.SnapshotHeader{FormatVersion: 1, AppliedIndex: 5, Records: uint64(len(recs))})
	for _, r := range recs {
		w.write(r)
	}
	if w.err != nil {
		t.Fatal(w.err)
	}
	return buf.Bytes()
}

// goldenLog builds a state with every kind of record and every field set.
func goldenLog() []*pb.Command {
	sub := &pb.Command{Op: &pb.Command_SessionSubscriptions{SessionSubscriptions: &pb.SessionSubscriptions{
		ClientId: "sensor-1", Epoch: 3, Subscriptions: []*pb.Subscription{
			{Filter: "cmd/sensor-1/#", Qos: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2, SubscriptionId: 42},
			{Filter: "$share/workers/jobs/+", Qos: 1},
		}}}}
	return []*pb.Command{
		routeSet("node-0", "sport/+/score", "", 1),
		routeSet("node-1", "sport/+/score", "", 1),
		routeSet("node-1", "jobs/+", "workers", 3),
		routeSet("node-2", "jobs/+", "workers", 1),
		routeSet("node-2", "#", "", 1),
		routeSet("node-2", "gone", "", 1),
		claim("sensor-1", "node-0", 3, 3600),
		sub,
		claim("dashboard", "node-1", 4, 86400),
		release("dashboard", 4, 1_700_000_123_456),
		claim("orphan", "node-2", 5, 600),
		willSet("node-0/17", "sensor-1", "node-0", "status/sensor-1", "offline"),
		willSet("node-2/3", "orphan", "node-2", "status/orphan", "gone"),
		willSet("node-0/18", "sensor-1", "node-0", "status/sensor-1", "lost"),
		willFire("node-0/18"),
		retainedSet("status/sensor-1", "online", 0),
		retainedSet("weather/today", "sunny", 1_800_000_000_000),
		retainedSet("$SYS/version", "1", 0),
		nodeDown("node-2", 1_700_000_200_000),
		nodeRemove("node-2", 0),
		nodeDown("node-1", 1_700_000_300_000),
	}
}

// TestGoldenSnapshot: the golden snapshot of every format version in
// testdata restores to the state recorded next to it, and the current
// version still writes its golden file byte for byte (a change of the
// encoding must come with a new FormatVersion and a new golden file).
// go test -run TestGoldenSnapshot -update ./fsm/ rewrites the current
// version's files from goldenLog.
func TestGoldenSnapshot(t *testing.T) {
	h := newHarness(t)
	h.must(goldenLog()...)
	current := snapshotBytes(t, h.f)
	if *update {
		bin := filepath.Join("testdata", fmt.Sprintf("snapshot-v%d.bin", FormatVersion))
		txt := filepath.Join("testdata", fmt.Sprintf("snapshot-v%d.txt", FormatVersion))
		state := fmt.Sprintf("applied %d\n%s", h.f.AppliedIndex(), dump(t, h.f))
		if err := os.WriteFile(bin, current, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(txt, []byte(state), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var v1 *FSM
	for v := 1; v <= FormatVersion; v++ {
		data, err := os.ReadFile(filepath.Join("testdata", fmt.Sprintf("snapshot-v%d.bin", v)))
		if err != nil {
			t.Fatalf("golden snapshot of version %d: %v", v, err)
		}
		want, err := os.ReadFile(filepath.Join("testdata", fmt.Sprintf("snapshot-v%d.txt", v)))
		if err != nil {
			t.Fatal(err)
		}
		g := restored(t, data)
		if v == 1 {
			v1 = g
		}
		if got := fmt.Sprintf("applied %d\n%s", g.AppliedIndex(), dump(t, g)); got != string(want) {
			t.Errorf("snapshot-v%d.bin restores to\n%s\nwant\n%s", v, got, want)
		}
		if v == FormatVersion && !bytes.Equal(data, current) {
			t.Errorf("the current encoder no longer writes snapshot-v%d.bin: bump FormatVersion and add a golden file", v)
		}
	}
	// Spot checks of version 1 through the queries, independent of dump.
	g := v1
	if s, _ := g.Session("orphan"); s.Owner != "" || s.Epoch != 5 || s.DisconnectedAtUnixMs != 1_700_000_200_000 {
		t.Errorf("orphan = %+v", s)
	}
	if r, _ := g.Route("jobs/+", "workers"); len(r.Nodes) != 1 || r.Nodes[0] != (RouteNode{"node-1", 3}) {
		t.Errorf("jobs/+ workers = %+v", r)
	}
	if w := g.Wills(); len(w) != 1 || w[0].ID != "node-0/17" {
		t.Errorf("wills = %+v", w)
	}
}
