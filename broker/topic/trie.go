package topic

import (
	"cmp"
	"slices"
	"sync"
)

// Entry is one subscription held by a Trie: who subscribed, to which filter,
// in which share group, with what value (subscription options, or whatever
// the owner of the trie keeps per subscription).
type Entry[V any] struct {
	Subscriber string // client id (or node id in a route table)
	Filter     string // the filter without any $share prefix
	Group      string // share group name; "" for a non-shared subscription
	Value      V      // e.g. subscription options
}

// Trie maps topic names to the subscriptions whose filters match them. An
// entry is keyed by (filter, group, subscriber): the same client may hold a
// filter once unshared and once in each share group.
//
// A Trie is safe for concurrent use: Match, HasMatch, Get, Len and Walk take
// a read lock, Add and Remove a write lock. It keeps the strings it is given
// and does not validate them; callers pass filters that passed ParseShare and
// ValidateFilter, and names that passed ValidateName.
//
// The zero value is not usable; call New.
type Trie[V any] struct {
	mu    sync.RWMutex
	root  *node[V]
	count int // entries
	nodes int // nodes below the root, for tests of pruning
}

// node is one level of a filter. The child for a literal level is in
// children, the child for '+' in plus and the child for '#' in hash. entries
// holds the subscriptions whose filter ends at this node; index, built only
// once a node has more than indexMin entries, maps (group, subscriber) to the
// position in entries so that Add and Remove stay O(1) however many clients
// share a filter.
type node[V any] struct {
	children map[string]*node[V]
	plus     *node[V]
	hash     *node[V]
	filter   string // the filter of entries, shared by their Filter fields
	entries  []Entry[V]
	index    map[entryKey]int
}

type entryKey struct{ group, subscriber string }

// indexMin is the number of entries up to which a node finds an entry by
// scanning, without an index.
const indexMin = 8

// New returns an empty Trie.
func New[V any]() *Trie[V] {
	return &Trie[V]{root: &node[V]{}}
}

// Add inserts or replaces the entry for (filter, group, subscriber).
// replaced: an entry for that key existed (its value was replaced).
// firstForFilter: before this call no entry at all (any subscriber, any
// group) existed for the filter.
func (t *Trie[V]) Add(filter, group, subscriber string, v V) (replaced, firstForFilter bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.root
	for rest, more := filter, true; more; {
		var level string
		level, rest, more = cutLevel(rest)
		c := n.child(level)
		if c == nil {
			c = &node[V]{}
			n.setChild(level, c)
			t.nodes++
		}
		n = c
	}
	if i, ok := n.find(group, subscriber); ok {
		n.entries[i].Value = v
		return true, false
	}
	firstForFilter = len(n.entries) == 0
	if firstForFilter {
		n.filter = filter
	}
	n.entries = append(n.entries, Entry[V]{Subscriber: subscriber, Filter: n.filter, Group: group, Value: v})
	switch {
	case n.index != nil:
		n.index[entryKey{group, subscriber}] = len(n.entries) - 1
	case len(n.entries) > indexMin:
		n.index = make(map[entryKey]int, 2*len(n.entries))
		for i, e := range n.entries {
			n.index[entryKey{e.Group, e.Subscriber}] = i
		}
	}
	t.count++
	return false, firstForFilter
}

// Remove deletes the entry for (filter, group, subscriber) and prunes the
// nodes it leaves empty, so memory returns.
// removed: such an entry existed. lastForFilter: it existed and after this
// call no entry at all remains for the filter.
func (t *Trie[V]) Remove(filter, group, subscriber string) (removed, lastForFilter bool) {
	type step struct {
		parent *node[V]
		level  string
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var buf [16]step // the path for pruning; on the stack for up to 16 levels
	path := buf[:0]
	n := t.root
	for rest, more := filter, true; more; {
		var level string
		level, rest, more = cutLevel(rest)
		c := n.child(level)
		if c == nil {
			return false, false
		}
		path = append(path, step{n, level})
		n = c
	}
	i, ok := n.find(group, subscriber)
	if !ok {
		return false, false
	}
	n.removeAt(i)
	t.count--
	lastForFilter = len(n.entries) == 0
	for j := len(path) - 1; j >= 0 && n.empty(); j-- {
		p := path[j]
		p.parent.setChild(p.level, nil)
		t.nodes--
		n = p.parent
	}
	return true, lastForFilter
}

// Get returns the value of the entry for (filter, group, subscriber).
func (t *Trie[V]) Get(filter, group, subscriber string) (V, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	n := t.root
	for rest, more := filter, true; more && n != nil; {
		var level string
		level, rest, more = cutLevel(rest)
		n = n.child(level)
	}
	if n != nil {
		if i, ok := n.find(group, subscriber); ok {
			return n.entries[i].Value, true
		}
	}
	var zero V
	return zero, false
}

// Len returns the number of entries.
func (t *Trie[V]) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.count
}

// Walk calls fn for every entry, sorted by filter, then group, then
// subscriber, and stops when fn returns false. It works on a copy taken under
// the read lock, so it sees one point in time and fn may call into the trie.
func (t *Trie[V]) Walk(fn func(e Entry[V]) bool) {
	t.mu.RLock()
	all := make([]Entry[V], 0, t.count)
	stack := []*node[V]{t.root}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		all = append(all, n.entries...)
		for _, c := range n.children {
			stack = append(stack, c)
		}
		if n.plus != nil {
			stack = append(stack, n.plus)
		}
		if n.hash != nil {
			stack = append(stack, n.hash)
		}
	}
	t.mu.RUnlock()
	slices.SortFunc(all, func(a, b Entry[V]) int {
		return cmp.Or(cmp.Compare(a.Filter, b.Filter), cmp.Compare(a.Group, b.Group),
			cmp.Compare(a.Subscriber, b.Subscriber))
	})
	for _, e := range all {
		if !fn(e) {
			return
		}
	}
}

// nodeCount returns the number of nodes below the root.
func (t *Trie[V]) nodeCount() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.nodes
}

func (n *node[V]) child(level string) *node[V] {
	switch level {
	case "+":
		return n.plus
	case "#":
		return n.hash
	}
	return n.children[level]
}

// setChild sets or, with c == nil, deletes the child for level.
func (n *node[V]) setChild(level string, c *node[V]) {
	switch {
	case level == "+":
		n.plus = c
	case level == "#":
		n.hash = c
	case c != nil:
		if n.children == nil {
			n.children = make(map[string]*node[V], 1)
		}
		n.children[level] = c
	default:
		delete(n.children, level)
		if len(n.children) == 0 {
			n.children = nil // a map never shrinks; drop it
		}
	}
}

func (n *node[V]) empty() bool {
	return len(n.entries) == 0 && len(n.children) == 0 && n.plus == nil && n.hash == nil
}

func (n *node[V]) find(group, subscriber string) (int, bool) {
	if n.index != nil {
		i, ok := n.index[entryKey{group, subscriber}]
		return i, ok
	}
	for i := range n.entries {
		if n.entries[i].Subscriber == subscriber && n.entries[i].Group == group {
			return i, true
		}
	}
	return 0, false
}

// removeAt deletes entries[i] by moving the last entry into its place, and
// gives memory back when the node has shrunk.
func (n *node[V]) removeAt(i int) {
	last := len(n.entries) - 1
	if n.index != nil {
		delete(n.index, entryKey{n.entries[i].Group, n.entries[i].Subscriber})
		if i != last {
			n.index[entryKey{n.entries[last].Group, n.entries[last].Subscriber}] = i
		}
	}
	n.entries[i] = n.entries[last]
	n.entries[last] = Entry[V]{}
	n.entries = n.entries[:last]
	switch {
	case last == 0:
		n.entries, n.index, n.filter = nil, nil, ""
		return
	case n.index != nil && last <= indexMin/2:
		n.index = nil
	}
	if cap(n.entries) > 4*indexMin && last < cap(n.entries)/4 {
		// Neither the slice nor the map shrinks by itself.
		n.entries = append(make([]Entry[V], 0, 2*last), n.entries...)
		if n.index != nil {
			n.index = make(map[entryKey]int, 2*last)
			for j, e := range n.entries {
				n.index[entryKey{e.Group, e.Subscriber}] = j
			}
		}
	}
}
