package fsm

import "strings"

// retainedTree indexes retained messages by the levels of their topics, so
// that the retained messages matching a subscription's filter are found by
// walking the branches the filter allows instead of testing every topic.
// It is an index of state.retained, guarded by the FSM's lock, and never
// snapshotted.
type retainedTree struct {
	root rnode
}

type rnode struct {
	children map[string]*rnode
	msg      *Retained
}

func newRetainedTree() *retainedTree { return &retainedTree{} }

// set stores r at the node of its topic.
func (t *retainedTree) set(r *Retained) {
	n := &t.root
	for rest, more := r.Topic, true; more; {
		var level string
		level, rest, more = cutLevel(rest)
		c := n.children[level]
		if c == nil {
			c = &rnode{}
			if n.children == nil {
				n.children = make(map[string]*rnode, 1)
			}
			n.children[level] = c
		}
		n = c
	}
	n.msg = r
}

// remove deletes the message of topicName and prunes the nodes it empties.
func (t *retainedTree) remove(topicName string) {
	t.root.remove(topicName)
}

// remove deletes the message at name below n and reports whether n is
// empty afterwards. It recurses once per level; topic names have at most a
// few hundred levels in practice (the broker limits them).
func (n *rnode) remove(name string) bool {
	level, rest, more := cutLevel(name)
	c := n.children[level]
	if c == nil {
		return false
	}
	if more {
		if c.remove(rest) {
			delete(n.children, level)
		}
	} else {
		c.msg = nil
		if len(c.children) == 0 {
			delete(n.children, level)
		}
	}
	if len(n.children) == 0 {
		n.children = nil
	}
	return n.msg == nil && len(n.children) == 0
}

// match appends to dst the retained messages whose topics match filter, by
// the rules of topic.Match, including [MQTT-4.7.2-1]: a filter starting with
// a wildcard does not match topics starting with '$'. The order is that of
// map iteration; callers sort.
func (t *retainedTree) match(filter string, dst []*Retained) []*Retained {
	return t.root.match(filter, true, dst)
}

func (n *rnode) match(filter string, root bool, dst []*Retained) []*Retained {
	level, rest, more := cutLevel(filter)
	switch level {
	case "#":
		if !root && n.msg != nil {
			dst = append(dst, n.msg) // "a/#" matches "a"
		}
		for name, c := range n.children {
			if root && strings.HasPrefix(name, "$") {
				continue
			}
			dst = c.all(dst)
		}
	case "+":
		for name, c := range n.children {
			if root && strings.HasPrefix(name, "$") {
				continue
			}
			dst = c.matchAt(rest, more, dst)
		}
	default:
		if c := n.children[level]; c != nil {
			dst = c.matchAt(rest, more, dst)
		}
	}
	return dst
}

// matchAt continues a match at n, reached by one level of the filter.
func (n *rnode) matchAt(rest string, more bool, dst []*Retained) []*Retained {
	if more {
		return n.match(rest, false, dst)
	}
	if n.msg != nil {
		dst = append(dst, n.msg)
	}
	return dst
}

// all appends every message at and below n.
func (n *rnode) all(dst []*Retained) []*Retained {
	if n.msg != nil {
		dst = append(dst, n.msg)
	}
	for _, c := range n.children {
		dst = c.all(dst)
	}
	return dst
}

// cutLevel splits s at its first '/': the first level, what follows the
// separator, and whether there was a separator.
func cutLevel(s string) (level, rest string, more bool) {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}
