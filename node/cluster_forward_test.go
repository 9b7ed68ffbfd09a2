package node

import (
	"testing"

	"github.com/hashicorp/raft"

	"github.com/mqcluster/mqcluster/fsm"
	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// A cached route match is used at the applied index it was made at only:
// a route set or removed by the next entry is seen at once.
func TestRouteCacheFollowsAppliedIndex(t *testing.T) {
	f, err := fsm.New(fsm.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	index := uint64(0)
	setRoute := func(node, filter string, members uint32) {
		t.Helper()
		index++
		cmd, err := fsm.Encode(&pb.Command{Op: &pb.Command_RouteSet{RouteSet: &pb.RouteSet{
			NodeId: node, Filter: filter, Members: members}}})
		if err != nil {
			t.Fatal(err)
		}
		if resp := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: cmd}); resp != nil {
			t.Fatalf("apply: %v", resp)
		}
	}
	nodes := func(ms []fsm.RouteMatch) map[string]bool {
		out := map[string]bool{}
		for _, m := range ms {
			if m.Members > 0 {
				out[m.NodeID] = true
			}
		}
		return out
	}
	c := &routeCache{m: map[string][]fsm.RouteMatch{}}
	setRoute("n1", "a/+", 1)
	if got := nodes(c.match(f, "a/b")); len(got) != 1 || !got["n1"] {
		t.Fatalf("a/b routes to %v, want n1", got)
	}
	if got := nodes(c.match(f, "a/b")); len(got) != 1 || !got["n1"] { // from the cache
		t.Fatalf("a/b routes to %v, want n1", got)
	}
	setRoute("n2", "a/#", 1)
	if got := nodes(c.match(f, "a/b")); len(got) != 2 || !got["n2"] {
		t.Fatalf("after a route to n2: a/b routes to %v, want n1 and n2", got)
	}
	setRoute("n1", "a/+", 0)
	if got := nodes(c.match(f, "a/b")); len(got) != 1 || !got["n2"] {
		t.Fatalf("after n1 left: a/b routes to %v, want n2", got)
	}
	// Another state machine (another node in this process) does not see
	// this one's matches.
	g, err := fsm.New(fsm.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if got := nodes(c.match(g, "a/b")); len(got) != 0 {
		t.Fatalf("an empty state machine routes a/b to %v", got)
	}
	// The cache stays bounded.
	for i := range routeCacheTopics + 10 {
		c.match(f, "t/"+string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	if len(c.m) > routeCacheTopics {
		t.Fatalf("%d topics cached, bound %d", len(c.m), routeCacheTopics)
	}
}

func TestOwnedTopicPayload(t *testing.T) {
	topic, payload := []byte("a/b"), []byte{1, 2, 3}
	gotT, gotP := ownedTopicPayload(topic, payload)
	topic[0], payload[0] = 'x', 9 // the batch buffer is reused
	if gotT != "a/b" || string(gotP) != "\x01\x02\x03" {
		t.Fatalf("got %q %v", gotT, gotP)
	}
	if _, p := ownedTopicPayload([]byte("t"), nil); p != nil {
		t.Fatalf("empty payload: %v, want nil", p)
	}
	if tt, p := ownedTopicPayload(nil, nil); tt != "" || p != nil {
		t.Fatalf("nothing: %q %v", tt, p)
	}
}
