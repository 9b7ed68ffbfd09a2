package broker

import (
	"cmp"
	"slices"
)

// Queue order across nodes. A publisher's messages reach a session in the
// order its node received them ([MQTT-4.6.0-6]) when they take one path:
// one forwarding stream per peer keeps it. Messages that take another
// path (handed on by a node the session left, brought by the second step
// of a move, held back while the session arrived) can come after younger
// ones. Every node numbers the messages it receives from publishers in
// increasing order (Message.ID), and a publisher's connection is on one
// node: ordering each node's queued messages by their ids restores every
// publisher's order, whatever the path. Messages already sent cannot be
// taken back; a message older than one sent goes as soon as it can.

// orderQueueLocked puts the queued messages of each node back in the order
// that node received them, each node's messages keeping the places in the
// queue that its messages held; messages from different nodes (different
// publishers) keep their places. Moved messages of a stored session take
// new store sequences, so that a restart restores this order (requeueLocked).
// Caller holds ss.mu.
func (ss *session) orderQueueLocked(ops []StoreOp) []StoreOp {
	if !ss.queueDisordered() {
		return ops
	}
	all := ss.takeQueueLocked()
	sorted := slices.Clone(all)
	places := make(map[string][]int)
	for i := range sorted {
		if m := sorted[i].msg; m.ID != 0 {
			places[m.Node] = append(places[m.Node], i)
		}
	}
	for _, idx := range places {
		msgs := make([]outMsg, len(idx))
		for k, i := range idx {
			msgs[k] = all[i]
		}
		slices.SortStableFunc(msgs, func(a, b outMsg) int { return cmp.Compare(a.msg.ID, b.msg.ID) })
		for k, i := range idx {
			sorted[i] = msgs[k]
		}
	}
	// What keeps its place keeps its store sequence too.
	k := 0
	for k < len(all) && all[k].msg == sorted[k].msg {
		ss.queue.push(all[k])
		k++
	}
	return ss.requeueLocked(sorted[k:], ops)
}

// queueDisordered reports whether a queued message is younger than a
// later one from the same node. Caller holds ss.mu.
func (ss *session) queueDisordered() bool {
	if ss.queue.len() < 2 {
		return false
	}
	var last map[string]uint64
	disordered := false
	ss.queue.each(func(o *outMsg) {
		m := o.msg
		if disordered || m.ID == 0 {
			return
		}
		if last == nil {
			last = make(map[string]uint64, 2)
		}
		if m.ID < last[m.Node] {
			disordered = true
			return
		}
		last[m.Node] = m.ID
	})
	return disordered
}
