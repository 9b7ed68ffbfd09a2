package fsm

import (
	"fmt"
	"math/rand/v2"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// randomCommands returns n commands of every kind over small id spaces, so
// that they collide: routes added and removed, claims fenced, wills
// replaced, retained messages expired, nodes removed and rejoining. Some are
// rejected by the FSM; all are deterministic for a seed.
func randomCommands(seed uint64, n int) []*pb.Command {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	nodes := []string{"n1", "n2", "n3", "n4"}
	node := func() string { return nodes[rng.IntN(len(nodes))] }
	filters := []string{"a", "a/+", "a/#", "#", "+/b", "sport/tennis/+", "$SYS/#", "x/y/z"}
	topics := []string{"a", "a/b", "x/y/z", "sport/tennis/p1", "$SYS/up", "/lead", "b"}
	client := func() string { return fmt.Sprintf("c%d", rng.IntN(12)) }
	epochs := map[string]uint64{}
	var now int64 = 1_700_000_000_000
	out := make([]*pb.Command, 0, n)
	for range n {
		now += int64(rng.IntN(1000))
		var c *pb.Command
		switch k := rng.IntN(20); {
		case k < 6:
			group := ""
			if rng.IntN(3) == 0 {
				group = fmt.Sprintf("g%d", rng.IntN(2))
			}
			c = routeSet(node(), filters[rng.IntN(len(filters))], group, uint32(rng.IntN(4)))
		case k < 8:
			id := client()
			e := epochs[id] + uint64(rng.IntN(3)) // sometimes stale or repeated
			epochs[id] = max(epochs[id], e)
			c = claim(id, node(), e, uint32(rng.IntN(100)))
			if rng.IntN(4) == 0 {
				c.GetSessionClaim().CleanStart = true
			}
			if e%2 == 0 { // no draw: the seeds' logs stay as they were
				c.GetSessionClaim().ClaimedAtUnixMs = 1_700_000_000_000 + int64(e)
			}
		case k == 8:
			id := client()
			fs := make([]string, rng.IntN(4))
			for i := range fs {
				fs[i] = filters[rng.IntN(len(filters))]
			}
			c = subs(id, epochs[id], fs...)
		case k == 9:
			id := client()
			c = release(id, epochs[id], now)
			if rng.IntN(2) == 0 {
				e := uint32(rng.IntN(50))
				c.GetSessionRelease().ExpirySeconds = &e
			}
		case k == 10:
			id := client()
			c = sessionDelete(id, epochs[id])
		case k < 13:
			c = willSet(fmt.Sprintf("%s/%d", node(), rng.IntN(6)), client(), node(), topics[rng.IntN(len(topics))], fmt.Sprint(rng.IntN(5)))
		case k == 13:
			n := rng.IntN(6)
			c = willClear(fmt.Sprintf("%s/%d", node(), n))
			c.GetWillClear().Fire = n%2 == 0 // no draw of its own: the seeds keep their logs
		case k < 16:
			var exp int64
			if rng.IntN(2) == 0 {
				exp = now + int64(rng.IntN(5000))
			}
			payload := fmt.Sprint(rng.IntN(5))
			if rng.IntN(8) == 0 {
				payload = ""
			}
			c = retainedSet(topics[rng.IntN(len(topics))], payload, exp)
		case k == 16:
			if rng.IntN(2) == 0 {
				c = retainedClear(topics[rng.IntN(len(topics))])
			} else {
				c = retainedExpire(now)
			}
		case k == 17:
			c = nodeDown(node(), now)
		case k == 18:
			c = nodeUp(node())
		default:
			if rng.IntN(3) == 0 {
				c = nodeRemove(node(), 0)
			} else {
				c = nodeUp(node())
			}
		}
		out = append(out, c)
	}
	return out
}
