package fsm

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/mqcluster/mqcluster/broker/topic"
	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

func TestRoutes(t *testing.T) {
	h := newHarness(t)
	h.must(
		routeSet("n1", "sport/+", "", 7), // non-shared: stored as present (1)
		routeSet("n2", "sport/+", "", 1),
		routeSet("n1", "sport/#", "g", 2),
		routeSet("n3", "sport/#", "g", 5),
		routeSet("n2", "news", "", 1),
		routeSet("n2", "#", "", 1),
	)
	r, ok := h.f.Route("sport/+", "")
	if !ok || !slices.Equal(r.Nodes, []RouteNode{{"n1", 1}, {"n2", 1}}) {
		t.Errorf("Route(sport/+) = %+v %v", r, ok)
	}
	got := sortedMatches(h.f.MatchRoutes("sport/tennis", nil))
	want := []RouteMatch{
		{NodeID: "n2", Filter: "#", Members: 1},
		{NodeID: "n1", Filter: "sport/#", Group: "g", Members: 2},
		{NodeID: "n3", Filter: "sport/#", Group: "g", Members: 5},
		{NodeID: "n1", Filter: "sport/+", Members: 1},
		{NodeID: "n2", Filter: "sport/+", Members: 1},
	}
	if !slices.Equal(got, want) {
		t.Errorf("MatchRoutes(sport/tennis) =\n%+v\nwant\n%+v", got, want)
	}
	if got := h.f.MatchRoutes("$SYS/x", nil); len(got) != 0 {
		t.Errorf("MatchRoutes($SYS/x) = %+v: '#' must not match '$' topics", got)
	}

	h.must(routeSet("n3", "sport/#", "g", 0), routeSet("n1", "sport/+", "", 0))
	got = sortedMatches(h.f.MatchRoutes("sport/tennis", got[:0]))
	want = []RouteMatch{
		{NodeID: "n2", Filter: "#", Members: 1},
		{NodeID: "n1", Filter: "sport/#", Group: "g", Members: 2},
		{NodeID: "n2", Filter: "sport/+", Members: 1},
	}
	if !slices.Equal(got, want) {
		t.Errorf("after removals MatchRoutes =\n%+v\nwant\n%+v", got, want)
	}
	of := h.f.RoutesOf("n2")
	wantOf := []Route{
		{Filter: "#", Nodes: []RouteNode{{"n2", 1}}},
		{Filter: "news", Nodes: []RouteNode{{"n2", 1}}},
		{Filter: "sport/+", Nodes: []RouteNode{{"n2", 1}}},
	}
	if fmt.Sprint(of) != fmt.Sprint(wantOf) {
		t.Errorf("RoutesOf(n2) = %+v, want %+v", of, wantOf)
	}
	h.must(routeSet("n2", "sport/+", "", 0))
	if _, ok := h.f.Route("sport/+", ""); ok {
		t.Error("a route without nodes is still there")
	}
	if s := h.f.Stats(); s.Routes != 3 || s.RouteEntries != 3 {
		t.Errorf("stats %+v", s)
	}
	dump(t, h.f) // indexes agree
}

// TestSessionEpochFencing: a claim must be above the stored epoch; every
// other session op must name the stored epoch; a stale proposer changes
// nothing.
func TestSessionEpochFencing(t *testing.T) {
	h := newHarness(t)
	h.must(claim("c", "n1", 1, 60), subs("c", 1, "a/b"))

	// n2 takes over with a higher epoch; subscriptions carry over.
	h.must(claim("c", "n2", h.f.NextEpoch(), 120))
	s, _ := h.f.Session("c")
	if s.Owner != "n2" || s.Epoch != 2 || !s.Connected || s.ExpirySeconds != 120 || len(s.Subscriptions) != 1 {
		t.Fatalf("after takeover %+v", s)
	}
	before := dump(t, h.f)

	// The old owner, not yet aware, keeps proposing at epoch 1: all fenced.
	for _, c := range []struct {
		name string
		resp any
	}{
		{"claim at the old epoch", h.apply(claim("c", "n1", 1, 60))},
		{"claim at the same epoch by another node", h.apply(claim("c", "n1", 2, 60))},
		{"subscriptions", h.apply(subs("c", 1, "x"))},
		{"release", h.apply(release("c", 1, 5))},
		{"delete", h.apply(sessionDelete("c", 1))},
	} {
		if err, _ := c.resp.(error); !errors.Is(err, ErrStaleEpoch) {
			t.Errorf("%s: %v, want ErrStaleEpoch", c.name, c.resp)
		}
	}
	if after := dump(t, h.f); after != before {
		t.Errorf("stale proposals changed the state:\n%s\n%s", before, after)
	}

	// The owner releases (the claim stays), reconnects elsewhere, deletes.
	h.must(releaseExpiry("c", 2, 1234, 30))
	s, _ = h.f.Session("c")
	if s.Owner != "n2" || s.Connected || s.DisconnectedAtUnixMs != 1234 || s.ExpirySeconds != 30 {
		t.Fatalf("after release %+v", s)
	}
	h.must(claim("c", "n3", 7, 30))
	h.must(sessionDelete("c", 7))
	if _, ok := h.f.Session("c"); ok {
		t.Fatal("session still there after delete")
	}
	// Epochs keep growing across the deletion.
	if e := h.f.NextEpoch(); e != 8 {
		t.Errorf("NextEpoch = %d, want 8", e)
	}
	if s := h.f.Stats(); s.MaxEpoch != 7 || s.Sessions != 0 {
		t.Errorf("stats %+v", s)
	}

	// Subscriptions on a session that is gone, and a fresh session.
	if err, _ := h.apply(subs("c", 7, "a")).(error); !errors.Is(err, ErrNoSession) {
		t.Errorf("subscriptions after delete: %v", err)
	}
	h.must(claim("c", "n1", 8, 0))
	if s, _ := h.f.Session("c"); len(s.Subscriptions) != 0 {
		t.Errorf("a new session inherited %v", s.Subscriptions)
	}

	// Clean start drops the subscriptions a takeover would keep.
	h.must(subs("c", 8, "p"), cleanClaim("c", "n2", 9, 0))
	if s, _ := h.f.Session("c"); len(s.Subscriptions) != 0 || s.Owner != "n2" {
		t.Errorf("after a clean-start claim %+v", s)
	}

	// Returned sessions are copies.
	h.must(subs("c", 9, "q"))
	s, _ = h.f.Session("c")
	s.Subscriptions[0].Filter = "changed"
	if s2, _ := h.f.Session("c"); s2.Subscriptions[0].Filter != "q" {
		t.Error("Session returned the state's own slice")
	}
}

// TestSessionHolders: each claim adds the previous owner to the nodes that
// may hold messages its new owner has not received; a holder leaves once
// it says it handed them on; a clean start keeps nothing of the old
// session, holders included.
func TestSessionHolders(t *testing.T) {
	h := newHarness(t)
	holders := func() []string {
		t.Helper()
		s, _ := h.f.Session("c")
		return s.Holders
	}
	h.must(claim("c", "n1", 1, 60))
	if got := holders(); len(got) != 0 {
		t.Fatalf("a new session has holders %v", got)
	}
	h.must(claim("c", "n2", 2, 60), claim("c", "n3", 3, 60))
	if got := holders(); !slices.Equal(got, []string{"n1", "n2"}) {
		t.Fatalf("after n1 -> n2 -> n3: holders %v, want [n1 n2]", got)
	}
	h.must(handedOn("c", "n1"), handedOn("c", "n9"))
	if got := holders(); !slices.Equal(got, []string{"n2"}) {
		t.Fatalf("after n1 handed on: holders %v, want [n2]", got)
	}
	// The client goes back to n2: n2's own copy is part of its claim.
	h.must(claim("c", "n2", 4, 60))
	if got := holders(); !slices.Equal(got, []string{"n3"}) {
		t.Fatalf("after n3 -> n2: holders %v, want [n3]", got)
	}
	h.must(cleanClaim("c", "n1", 5, 60))
	if got := holders(); len(got) != 0 {
		t.Fatalf("after a clean start: holders %v", got)
	}
	// Holders survive a snapshot.
	h.must(claim("c", "n2", 6, 60))
	g := restored(t, snapshotBytes(t, h.f))
	if s, _ := g.Session("c"); !slices.Equal(s.Holders, []string{"n1"}) {
		t.Fatalf("restored holders %v, want [n1]", s.Holders)
	}
}

// TestNodeRemove: a removed node loses its routes and wills, its sessions
// lose their owner (epoch kept), other nodes are untouched, and late
// commands from it are rejected until it rejoins.
// A node recorded as down that registers a will is back: the leader must
// not publish the wills of the connections it accepts since (jepsen-lite:
// a will published for a connection accepted 0.2 s after a pause ended,
// which went on to end normally), while the wills it registered before
// stay for it to publish or clear.
func TestWillFromANodeRecordedDownBringsItBack(t *testing.T) {
	h := newHarness(t)
	h.must(willSet("n1/1", "c1", "n1", "w", "before"), nodeDown("n1", 1000))
	if n, ok := h.f.Node("n1"); !ok || n.State != NodeDown {
		t.Fatalf("Node(n1) = %+v, %v: want down", n, ok)
	}
	h.must(willSet("n1/2", "c2", "n1", "w", "after"))
	if n, ok := h.f.Node("n1"); ok {
		t.Fatalf("Node(n1) = %+v: still recorded after it registered a will", n)
	}
	if got := h.f.WillsOf("n1"); len(got) != 2 {
		t.Fatalf("WillsOf(n1) = %+v, want both wills", got)
	}
	// A removed node stays removed.
	h.must(nodeRemove("n2", 0))
	if err, _ := h.f.Apply(h.entry(willSet("n2/1", "c3", "n2", "w", "x"))).(error); !errors.Is(err, ErrNodeRemoved) {
		t.Fatalf("will of a removed node: %v, want ErrNodeRemoved", err)
	}
}

// A fired will is remembered for firedKeep entries: a second claim of it
// is told it was published (ErrWillFired), not that it was never there
// (ErrNoWill), which is what lets the node that held its connection, unsure
// whether the registration landed, publish it only when no one did; and a
// registration retried after the fire does not bring it back to be
// published again. Snapshots keep the record; past the window it goes.
func TestFiredWillIsRemembered(t *testing.T) {
	h := newHarness(t)
	h.must(willSet("n1/1", "c1", "n1", "w", "gone"), willFire("n1/1"))
	rejected := func(c *pb.Command, want error) {
		t.Helper()
		if err, _ := h.f.Apply(h.entry(c)).(error); !errors.Is(err, want) {
			t.Fatalf("%v: %v, want %v", c, err, want)
		}
	}
	rejected(willFire("n1/1"), ErrWillFired)
	rejected(willSet("n1/1", "c1", "n1", "w", "gone"), ErrWillFired)
	if _, ok := h.f.Will("n1/1"); ok {
		t.Fatal("a fired will registered again")
	}
	rejected(willFire("n1/2"), ErrNoWill)
	// Cleared without fire (a normal DISCONNECT): nothing to remember.
	h.must(willSet("n1/3", "c3", "n1", "w", "x"), willClear("n1/3"))
	rejected(willFire("n1/3"), ErrNoWill)

	g := restored(t, snapshotBytes(t, h.f))
	gh := &harness{t: t, f: g, idx: h.idx}
	if err, _ := g.Apply(gh.entry(willFire("n1/1"))).(error); !errors.Is(err, ErrWillFired) {
		t.Fatalf("after a snapshot: %v, want ErrWillFired", err)
	}
	h.idx += firedKeep
	rejected(willFire("n1/1"), ErrNoWill)
	h.must(willSet("n1/1", "c1", "n1", "w", "again"))
}

func TestNodeRemove(t *testing.T) {
	h := newHarness(t)
	h.must(
		routeSet("n1", "a/+", "", 1), routeSet("n2", "a/+", "", 1), routeSet("n2", "b", "g", 3),
		willSet("n1/1", "c1", "n1", "w", "1"), willSet("n2/1", "c2", "n2", "w", "2"), willSet("n2/2", "c3", "n2", "w", "3"),
		claim("c1", "n1", 1, 60), claim("c2", "n2", 2, 60), claim("c3", "n2", 3, 60), release("c3", 3, 500),
		nodeDown("n2", 1000),
	)
	if got := h.f.WillsOf("n2"); len(got) != 2 || got[0].ID != "n2/1" || got[1].ID != "n2/2" {
		t.Fatalf("WillsOf(n2) = %+v", got)
	}
	if n, ok := h.f.Node("n2"); !ok || n.State != NodeDown || n.DownAtUnixMs != 1000 {
		t.Fatalf("Node(n2) = %+v", n)
	}
	// Down keeps everything.
	if len(h.f.RoutesOf("n2")) != 2 || len(h.f.WillsOf("n2")) != 2 {
		t.Fatal("NodeDown dropped state")
	}

	h.must(nodeRemove("n2", 0))
	if got := h.f.RoutesOf("n2"); len(got) != 0 {
		t.Errorf("routes of n2 after removal: %+v", got)
	}
	if r, _ := h.f.Route("a/+", ""); !slices.Equal(r.Nodes, []RouteNode{{"n1", 1}}) {
		t.Errorf("route a/+ = %+v", r)
	}
	if _, ok := h.f.Route("b", "g"); ok {
		t.Error("route b/g still there")
	}
	if got := h.f.Wills(); len(got) != 1 || got[0].ID != "n1/1" {
		t.Errorf("wills after removal: %+v", got)
	}
	c2, _ := h.f.Session("c2")
	c3, _ := h.f.Session("c3")
	c1, _ := h.f.Session("c1")
	if c2.Owner != "" || c2.Epoch != 2 || c2.Connected || c2.DisconnectedAtUnixMs != 1000 {
		t.Errorf("c2 = %+v: want no owner, epoch 2, disconnected at the down time", c2)
	}
	if c3.Owner != "" || c3.Epoch != 3 || c3.DisconnectedAtUnixMs != 500 {
		t.Errorf("c3 = %+v: want no owner, epoch 3, disconnected when it was released", c3)
	}
	if c1.Owner != "n1" || !c1.Connected {
		t.Errorf("c1 = %+v: another node's session changed", c1)
	}
	if n, _ := h.f.Node("n2"); n.State != NodeRemoved || n.DownAtUnixMs != 1000 {
		t.Errorf("Node(n2) = %+v", n)
	}

	// Late commands from the removed node.
	for _, c := range []any{
		h.apply(routeSet("n2", "late", "", 1)),
		h.apply(willSet("n2/3", "c4", "n2", "w", "x")),
		h.apply(claim("c4", "n2", 9, 60)),
	} {
		if err, _ := c.(error); !errors.Is(err, ErrNodeRemoved) {
			t.Errorf("late command from removed node: %v", c)
		}
	}
	h.must(routeSet("n2", "late", "", 0)) // removing is harmless
	h.must(nodeDown("n2", 5000))          // removed stays removed
	if n, _ := h.f.Node("n2"); n.State != NodeRemoved {
		t.Errorf("NodeDown revived a removed node: %+v", n)
	}
	// The session can be claimed above its kept epoch only.
	if err, _ := h.apply(claim("c2", "n1", 2, 60)).(error); !errors.Is(err, ErrStaleEpoch) {
		t.Errorf("claim at the kept epoch: %v", err)
	}
	h.must(claim("c2", "n1", 10, 60))

	// Rejoin.
	h.must(nodeUp("n2"), routeSet("n2", "late", "", 1))
	if _, ok := h.f.Node("n2"); ok {
		t.Error("NodeUp left a record")
	}
	if s := h.f.Stats(); s.NodesRemoved != 0 || s.NodesDown != 0 || s.Wills != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestRetainedExpire(t *testing.T) {
	h := newHarness(t)
	h.must(
		retainedSet("a", "1", 100),
		retainedSet("b", "2", 200),
		retainedSet("c", "3", 0),
		retainedSet("d", "4", 150),
		retainedSet("d", "4", 0), // replaced without an expiry
	)
	h.must(retainedExpire(99))
	if s := h.f.Stats(); s.Retained != 4 || s.Expiring != 2 {
		t.Fatalf("before any expiry: %+v", s)
	}
	h.must(retainedExpire(100)) // expires_at <= now
	if _, ok := h.f.Retained("a"); ok {
		t.Error("a did not expire at its expiry time")
	}
	if _, ok := h.f.Retained("b"); !ok {
		t.Error("b expired early")
	}
	h.must(retainedExpire(1 << 62))
	var left []string
	for _, r := range h.f.RetainedMatching("#") {
		left = append(left, r.Topic)
	}
	if !slices.Equal(left, []string{"c", "d"}) {
		t.Errorf("left %v, want [c d]: messages without an expiry never expire", left)
	}
	if s := h.f.Stats(); s.Expiring != 0 {
		t.Errorf("stats %+v", s)
	}
	dump(t, h.f)
}

// TestRetainedMatching compares the retained tree with topic.Match over
// random topics and filters.
func TestRetainedMatching(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	levels := []string{"a", "b", "", "$SYS", "c"}
	name := func() string {
		n := 1 + rng.IntN(4)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = levels[rng.IntN(len(levels))]
		}
		return strings.Join(parts, "/")
	}
	filter := func() string {
		n := 1 + rng.IntN(4)
		parts := make([]string, n)
		for i := range parts {
			switch rng.IntN(4) {
			case 0:
				parts[i] = "+"
			default:
				parts[i] = levels[rng.IntN(len(levels))]
			}
		}
		if rng.IntN(3) == 0 {
			parts[n-1] = "#"
		}
		return strings.Join(parts, "/")
	}
	h := newHarness(t)
	var topics []string
	for range 300 {
		tn := name()
		if topic.ValidateName(tn, 0) != nil {
			continue
		}
		if rng.IntN(4) == 0 {
			h.must(retainedClear(tn))
			topics = slices.DeleteFunc(topics, func(s string) bool { return s == tn })
			continue
		}
		h.must(retainedSet(tn, "x", 0))
		if !slices.Contains(topics, tn) {
			topics = append(topics, tn)
		}
	}
	slices.Sort(topics)
	dump(t, h.f)
	for range 500 {
		fl := filter()
		if topic.ValidateFilter(fl, 0) != nil {
			continue
		}
		var want, got []string
		for _, tn := range topics {
			if topic.Match(fl, tn) {
				want = append(want, tn)
			}
		}
		for _, r := range h.f.RetainedMatching(fl) {
			got = append(got, r.Topic)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("RetainedMatching(%q) = %q, want %q", fl, got, want)
		}
	}
}
