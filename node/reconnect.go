package node

import (
	"time"

	"github.com/mqcluster/mqcluster/fsm"
)

// reconnectInterval paces the attempts to reach members gossip has lost.
const reconnectInterval = 2 * time.Second

// reconnectLoop brings back members that gossip declared dead once they
// can be reached again. memberlist alone never does: a node it declared
// dead is no longer probed, and after a partition each side holds the
// other dead for good. So the node remembers where every member it has
// seen listens and tries to join those that are gone (and its seeds while
// it has no leader), as a serf-style reconnect.
func (n *Node) reconnectLoop() {
	defer n.wg.Done()
	t := time.NewTicker(reconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		var addrs []string
		for id, addr := range n.roster.lost(n.cfg.NodeID) {
			if nd, ok := n.fsm.Node(id); ok && nd.State == fsm.NodeRemoved {
				n.roster.forget(id) // left for good
				continue
			}
			addrs = append(addrs, addr)
		}
		if !n.inContact() {
			addrs = append(addrs, n.cfg.Join...)
		}
		if len(addrs) == 0 {
			continue
		}
		if k, err := n.ml.Join(addrs); k > 0 {
			n.log.Info("reached members gossip had lost", "reached", k)
		} else {
			n.log.Debug("lost members not reachable", "err", err)
		}
	}
}
