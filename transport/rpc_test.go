package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// fakeCluster implements Proposer, SessionHandler, Membership and
// StatusProvider, recording what it is asked and who asked.
type fakeCluster struct {
	mu      sync.Mutex
	callers []string
	cmds    [][]byte
	joined  []*pb.JoinRequest
	left    []string
	panicky bool
}

func (f *fakeCluster) record(ctx context.Context) {
	f.mu.Lock()
	f.callers = append(f.callers, CallerID(ctx))
	f.mu.Unlock()
}

type reasoned struct{ error }

func (reasoned) Reason() string  { return "stale_epoch" }
func (r reasoned) Unwrap() error { return r.error }

func (f *fakeCluster) ProposeLocal(ctx context.Context, cmd []byte) (uint64, error) {
	f.record(ctx)
	if f.panicky {
		panic("proposer bug")
	}
	switch string(cmd) {
	case "follower":
		return 0, fmt.Errorf("raft: %w", ErrNotLeader)
	case "stale":
		return 12, reasoned{fmt.Errorf("%w: epoch 3 is stale", ErrRejected)}
	case "slow":
		<-ctx.Done()
		return 0, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, bytes.Clone(cmd))
	return uint64(len(f.cmds)), nil
}

func (f *fakeCluster) TakeOver(ctx context.Context, req *pb.TakeOverRequest) ([]byte, error) {
	f.record(ctx)
	switch req.ClientId {
	case "here":
		return []byte("queued:" + req.NewOwner), nil
	case "stale":
		return nil, ErrRejected
	case "empty":
		return nil, nil
	case "big":
		state := make([]byte, 200<<10)
		for i := range state {
			state[i] = byte(i * 7)
		}
		return state, nil
	}
	return nil, fmt.Errorf("client %q: %w", req.ClientId, ErrNotFound)
}

func (f *fakeCluster) Join(ctx context.Context, req *pb.JoinRequest) error {
	f.record(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.joined = append(f.joined, req)
	return nil
}

func (f *fakeCluster) Leave(ctx context.Context, req *pb.LeaveRequest) error {
	f.record(ctx)
	if req.NodeId == "unknown" {
		return ErrNotFound
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.left = append(f.left, req.NodeId)
	return nil
}

func (f *fakeCluster) Status(ctx context.Context) (*pb.StatusResponse, error) {
	f.record(ctx)
	return &pb.StatusResponse{
		NodeId: "b", LeaderId: "b", Term: 3, AppliedIndex: 99, RaftState: "leader",
		Peers: []*pb.PeerStatus{{NodeId: "a", Voter: true, State: "alive"}},
	}, nil
}

// seen returns copies of what f recorded.
func (f *fakeCluster) seen() (callers []string, cmds [][]byte, joined []*pb.JoinRequest, left []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.callers...), append([][]byte(nil), f.cmds...),
		append([]*pb.JoinRequest(nil), f.joined...), append([]string(nil), f.left...)
}

func clusterHandlers(f *fakeCluster) Handlers {
	return Handlers{Proposer: f, Sessions: f, Membership: f, Status: f}
}

func TestPropose(t *testing.T) {
	f := &fakeCluster{}
	b := startNode(t, testConfig("b"), clusterHandlers(f))
	a := startNode(t, testConfig("a"), Handlers{})
	ctx := context.Background()

	for i, cmd := range []string{"one", "two"} {
		idx, err := a.Propose(ctx, b.addr, []byte(cmd))
		if err != nil || idx != uint64(i+1) {
			t.Fatalf("propose %q: %d, %v", cmd, idx, err)
		}
	}
	if callers, cmds, _, _ := f.seen(); len(cmds) != 2 || string(cmds[1]) != "two" || callers[0] != "a" {
		t.Fatalf("leader saw %q from %v", cmds, callers)
	}

	_, err := a.Propose(ctx, b.addr, []byte("follower"))
	var pe *ProposeError
	if !errors.Is(err, ErrNotLeader) || !errors.As(err, &pe) || !strings.Contains(pe.Message, "raft") {
		t.Fatalf("not leader: %v", err)
	}
	idx, err := a.Propose(ctx, b.addr, []byte("stale"))
	if !errors.Is(err, ErrRejected) || !errors.As(err, &pe) || pe.Reason != "stale_epoch" || idx != 12 || pe.Index != 12 {
		t.Fatalf("rejected: %d, %v (%+v)", idx, err, pe)
	}
	if _, err := a.Propose(ctx, b.addr, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("empty command: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := a.Propose(short, b.addr, []byte("slow")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow: %v", err)
	}
	if _, err := a.Propose(ctx, freeAddr(t), []byte("x")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("nobody there: %v", err)
	}
	// A node without a Proposer.
	if _, err := b.Propose(ctx, a.addr, []byte("x")); !errors.Is(err, ErrRemote) {
		t.Fatalf("no proposer: %v", err)
	}
}

func TestTakeOver(t *testing.T) {
	f := &fakeCluster{}
	b := startNode(t, testConfig("b"), clusterHandlers(f))
	a := startNode(t, testConfig("a"), Handlers{})
	ctx := context.Background()

	state, err := a.TakeOver(ctx, b.addr, &pb.TakeOverRequest{ClientId: "here", NewOwner: "a", Epoch: 7})
	if err != nil || string(state) != "queued:a" {
		t.Fatalf("take over: %q, %v", state, err)
	}
	if _, err := a.TakeOver(ctx, b.addr, &pb.TakeOverRequest{ClientId: "gone", NewOwner: "a"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("not here: %v", err)
	}
	if _, err := a.TakeOver(ctx, b.addr, &pb.TakeOverRequest{ClientId: "stale", NewOwner: "a"}); !errors.Is(err, ErrRejected) {
		t.Fatalf("stale: %v", err)
	}
	if _, err := a.TakeOver(ctx, b.addr, &pb.TakeOverRequest{NewOwner: "a"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no client id: %v", err)
	}
	if state, err := a.TakeOver(ctx, b.addr, &pb.TakeOverRequest{ClientId: "empty", NewOwner: "a"}); err != nil || len(state) != 0 {
		t.Fatalf("empty state: %d bytes, %v", len(state), err)
	}
}

// TestTakeOverLargeState: a session state many times the message limit
// arrives whole, in chunks; one over MaxTakeOverBytes is refused.
func TestTakeOverLargeState(t *testing.T) {
	f := &fakeCluster{}
	cfg := testConfig("b")
	cfg.MaxMsgSize = 64 << 10
	cfg.MaxBatchBytes = 32 << 10
	b := startNode(t, cfg, clusterHandlers(f))
	cfgA := testConfig("a")
	cfgA.MaxMsgSize = 64 << 10
	cfgA.MaxBatchBytes = 32 << 10
	a := startNode(t, cfgA, Handlers{})
	ctx := context.Background()
	state, err := a.TakeOver(ctx, b.addr, &pb.TakeOverRequest{ClientId: "big", NewOwner: "a"})
	if err != nil || len(state) != 200<<10 {
		t.Fatalf("big state: %d bytes, %v", len(state), err)
	}
	for i, c := range state {
		if c != byte(i*7) {
			t.Fatalf("byte %d is %d, want %d", i, c, byte(i*7))
		}
	}
	cfgC := testConfig("c")
	cfgC.MaxTakeOverBytes = 100 << 10
	c := startNode(t, cfgC, Handlers{})
	if _, err := c.TakeOver(ctx, b.addr, &pb.TakeOverRequest{ClientId: "big", NewOwner: "c"}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("state over the limit: %v", err)
	}
}

func TestJoinLeave(t *testing.T) {
	f := &fakeCluster{}
	members := map[string]bool{"a": true}
	var mu sync.Mutex
	h := clusterHandlers(f)
	h.AllowPeer = func(id string) bool { mu.Lock(); defer mu.Unlock(); return members[id] }
	b := startNode(t, testConfig("b"), h)
	c := startNode(t, testConfig("c"), Handlers{}) // not a member yet
	ctx := context.Background()

	// Join is open to a node that is not a member; the handler sees who.
	req := &pb.JoinRequest{NodeId: "c", RaftAddr: "127.0.0.1:1", GrpcAddr: c.addr, Voter: true}
	if err := c.Join(ctx, b.addr, req); err != nil {
		t.Fatal(err)
	}
	if callers, _, joined, _ := f.seen(); len(joined) != 1 || joined[0].GrpcAddr != c.addr || !joined[0].Voter || callers[0] != "c" {
		t.Fatalf("joined %v by %v", joined, callers)
	}
	if err := c.Join(ctx, b.addr, &pb.JoinRequest{NodeId: "c"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("join without addresses: %v", err)
	}
	// Everything else is not, until the node says c is a member.
	if err := c.Leave(ctx, b.addr, &pb.LeaveRequest{NodeId: "c"}); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("leave by a non-member: %v", err)
	}
	mu.Lock()
	members["c"] = true
	mu.Unlock()
	if err := c.Leave(ctx, b.addr, &pb.LeaveRequest{NodeId: "c"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Leave(ctx, b.addr, &pb.LeaveRequest{NodeId: "unknown"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("leave of an unknown node: %v", err)
	}
	if _, _, _, left := f.seen(); len(left) != 1 || left[0] != "c" {
		t.Fatalf("left %v", left)
	}
}

func TestStatus(t *testing.T) {
	f := &fakeCluster{}
	b := startNode(t, testConfig("b"), clusterHandlers(f))
	a := startNode(t, testConfig("a"), Handlers{})
	b.SetPeer("a", a.addr)
	b.SetPeer("z", freeAddr(t)) // known to the transport only
	a.SetAppliedIndex(5)
	eventually(t, 5*time.Second, func() error {
		if !b.PeerConnected("a") || b.PeerApplied("a") != 5 {
			return errors.New("b→a not up")
		}
		return nil
	})
	st, err := a.Status(context.Background(), b.addr)
	if err != nil {
		t.Fatal(err)
	}
	if st.NodeId != "b" || st.Term != 3 || st.AppliedIndex != 99 || len(st.Peers) != 2 {
		t.Fatalf("status %v", st)
	}
	pa, pz := st.Peers[0], st.Peers[1]
	if pa.NodeId != "a" || !pa.Voter || !pa.StreamConnected || pa.AppliedIndex != 5 ||
		pz.NodeId != "z" || pz.StreamConnected {
		t.Fatalf("peers %v", st.Peers)
	}
	// Without a StatusProvider: the transport's own view.
	st, err = b.Status(context.Background(), a.addr)
	if err != nil || st.NodeId != "a" {
		t.Fatalf("bare status %v, %v", st, err)
	}
}

func TestHandlerPanicRecovered(t *testing.T) {
	var logs logBuffer
	f := &fakeCluster{panicky: true}
	cfg := testConfig("b")
	cfg.Logger = slogTo(&logs)
	b := startNode(t, cfg, clusterHandlers(f))
	a := startNode(t, testConfig("a"), Handlers{})
	if _, err := a.Propose(context.Background(), b.addr, []byte("x")); !errors.Is(err, ErrRemote) {
		t.Fatalf("panicking handler: %v", err)
	}
	if !strings.Contains(logs.String(), "handler panic") || !strings.Contains(logs.String(), "proposer bug") {
		t.Fatalf("panic not logged: %s", logs.String())
	}
	// The server goes on.
	if _, err := a.Status(context.Background(), b.addr); err != nil {
		t.Fatal(err)
	}

	// A Deliverer that panics once: that stream ends, the batch is resent
	// on the next, delivered once.
	var once sync.Once
	b.fd.setHook(func(context.Context, int, []*pb.ForwardedMessage) (bool, error) {
		once.Do(func() { panic("deliverer bug") })
		return true, nil
	})
	a.SetPeer("b", b.addr)
	o := newOutcomes()
	a.Send("b", msg(1, 8), o.done(1))
	eventually(t, 5*time.Second, func() error {
		if o.count() != 1 {
			return errors.New("not done")
		}
		return nil
	})
	if err, _ := o.get(1); err != nil {
		t.Fatal(err)
	}
	if err := checkDelivered(b.fd.from("a"), 1); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "deliverer bug") {
		t.Fatalf("deliverer panic not logged: %s", logs.String())
	}
}
