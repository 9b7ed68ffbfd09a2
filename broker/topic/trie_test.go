package topic

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// The spec's matching examples hold for the trie as they do for Match.
func TestTrieMatchCases(t *testing.T) {
	for _, tc := range matchCases {
		t.Run(tc.desc, func(t *testing.T) {
			tr := New[int]()
			tr.Add(tc.filter, "", "c1", 1)
			got := tr.Match(tc.name, nil)
			if (len(got) == 1) != tc.want || len(got) > 1 {
				t.Errorf("Match(%q) with filter %q = %v, want match %v", tc.name, tc.filter, got, tc.want)
			}
			if has := tr.HasMatch(tc.name); has != tc.want {
				t.Errorf("HasMatch(%q) with filter %q = %v, want %v", tc.name, tc.filter, has, tc.want)
			}
		})
	}
}

// All the filters of the table in one trie: each name gets exactly the
// filters the table says match it.
func TestTrieMatchAllFiltersAtOnce(t *testing.T) {
	tr := New[int]()
	for _, tc := range matchCases {
		tr.Add(tc.filter, "", "c1", 0)
	}
	for _, tc := range matchCases {
		var want []string
		for _, f := range uniqueFilters() {
			if Match(f, tc.name) {
				want = append(want, f)
			}
		}
		if got := filtersOf(tr.Match(tc.name, nil)); !slices.Equal(got, want) {
			t.Errorf("Match(%q) = %q, want %q", tc.name, got, want)
		}
	}
}

func uniqueFilters() []string {
	var fs []string
	for _, tc := range matchCases {
		fs = append(fs, tc.filter)
	}
	slices.Sort(fs)
	return slices.Compact(fs)
}

func filtersOf(es []Entry[int]) []string {
	var fs []string
	for _, e := range es {
		fs = append(fs, e.Filter)
	}
	slices.Sort(fs)
	return fs
}

func TestTrieBookkeeping(t *testing.T) {
	type op struct {
		add                bool // Add, else Remove
		filter, group, sub string
		wantA, wantB       bool // replaced/firstForFilter or removed/lastForFilter
		wantLen            int
	}
	steps := []op{
		{true, "a/+", "", "c1", false, true, 1},
		{true, "a/+", "", "c1", true, false, 1},   // same key: value replaced
		{true, "a/+", "", "c2", false, false, 2},  // another subscriber on the filter
		{true, "a/+", "g", "c1", false, false, 3}, // same client in a share group: another entry
		{true, "a/+", "h", "c1", false, false, 4}, // and in another group
		{true, "a/#", "", "c1", false, true, 5},   // another filter
		{true, "a", "", "c1", false, true, 6},     // an inner node of "a/+" becomes a filter
		{false, "a/+", "", "c3", false, false, 6}, // never added
		{false, "a/+", "x", "c1", false, false, 6},
		{false, "a/b", "", "c1", false, false, 6}, // no such filter
		{false, "a/+", "", "c1", true, false, 5},
		{false, "a/+", "", "c1", false, false, 5}, // twice
		{false, "a/+", "g", "c1", true, false, 4},
		{false, "a/+", "", "c2", true, false, 3},
		{false, "a/+", "h", "c1", true, true, 2}, // last entry of the filter, whatever its group
		{true, "a/+", "", "c1", false, true, 3},  // first again
		{false, "a", "", "c1", true, true, 2},
		{false, "a/#", "", "c1", true, true, 1},
		{false, "a/+", "", "c1", true, true, 0},
	}
	tr := New[string]()
	for i, s := range steps {
		var a, b bool
		name := "Remove"
		if s.add {
			name = "Add"
			a, b = tr.Add(s.filter, s.group, s.sub, fmt.Sprint("v", i))
		} else {
			a, b = tr.Remove(s.filter, s.group, s.sub)
		}
		if a != s.wantA || b != s.wantB || tr.Len() != s.wantLen {
			t.Fatalf("step %d: %s(%q, %q, %q) = (%v, %v), Len %d; want (%v, %v), Len %d",
				i, name, s.filter, s.group, s.sub, a, b, tr.Len(), s.wantA, s.wantB, s.wantLen)
		}
	}
	if n := tr.nodeCount(); n != 0 {
		t.Errorf("nodes left after removing everything: %d", n)
	}
}

func TestTrieGetAndReplace(t *testing.T) {
	tr := New[int]()
	tr.Add("a/b", "", "c1", 1)
	tr.Add("a/b", "g", "c1", 2)
	if replaced, _ := tr.Add("a/b", "", "c1", 3); !replaced {
		t.Fatal("second Add of the same key did not replace")
	}
	for _, tc := range []struct {
		filter, group, sub string
		want               int
		ok                 bool
	}{
		{"a/b", "", "c1", 3, true},
		{"a/b", "g", "c1", 2, true},
		{"a/b", "", "c2", 0, false},
		{"a", "", "c1", 0, false},     // an inner node, not a filter
		{"a/b/c", "", "c1", 0, false}, // below the filter
		{"a/+", "", "c1", 0, false},   // '+' is a filter level, not a pattern here
	} {
		if v, ok := tr.Get(tc.filter, tc.group, tc.sub); v != tc.want || ok != tc.ok {
			t.Errorf("Get(%q, %q, %q) = (%d, %v), want (%d, %v)", tc.filter, tc.group, tc.sub, v, ok, tc.want, tc.ok)
		}
	}
	if got := tr.Match("a/b", nil); len(got) != 2 {
		t.Errorf("Match(a/b) = %v, want the entry once per group", got)
	}
}

// Shared subscriptions come back with their group, one entry per member; the
// caller picks one member per (Filter, Group) [MQTT-4.8.2-1].
func TestTrieSharedGroups(t *testing.T) {
	tr := New[int]()
	tr.Add("sport/+", "g1", "c1", 0)
	tr.Add("sport/+", "g1", "c2", 0)
	tr.Add("sport/+", "g2", "c3", 0)
	tr.Add("sport/#", "g1", "c1", 0)
	tr.Add("sport/+", "", "c1", 0)
	tr.Add("#", "g3", "c4", 0)
	tr.Add("news", "g1", "c1", 0)

	var got []string
	for _, e := range tr.Match("sport/tennis", nil) {
		got = append(got, e.Filter+" "+e.Group+" "+e.Subscriber)
	}
	slices.Sort(got)
	want := []string{"# g3 c4", "sport/# g1 c1", "sport/+  c1", "sport/+ g1 c1", "sport/+ g1 c2", "sport/+ g2 c3"}
	if !slices.Equal(got, want) {
		t.Errorf("Match(sport/tennis) = %q, want %q", got, want)
	}
	// '$' names stay out of reach of a shared '#' as well [MQTT-4.7.2-1].
	if tr.HasMatch("$SYS/x") {
		t.Error("HasMatch($SYS/x) = true with only '#' as a candidate")
	}
}

// A node with many subscribers (past the indexed threshold) keeps every
// entry reachable through swap-removes.
func TestTrieManySubscribersOnOneFilter(t *testing.T) {
	const n = 200
	tr := New[int]()
	for i := range n {
		tr.Add("hot/topic", "", fmt.Sprint("c", i), i)
	}
	for i := 0; i < n; i += 2 {
		if removed, last := tr.Remove("hot/topic", "", fmt.Sprint("c", i)); !removed || last {
			t.Fatalf("Remove c%d = (%v, %v), want (true, false)", i, removed, last)
		}
	}
	for i := range n {
		v, ok := tr.Get("hot/topic", "", fmt.Sprint("c", i))
		if want := i%2 == 1; ok != want || (ok && v != i) {
			t.Fatalf("Get c%d = (%d, %v), want present %v", i, v, ok, want)
		}
	}
	if got := tr.Match("hot/topic", nil); len(got) != n/2 {
		t.Fatalf("Match returned %d entries, want %d", len(got), n/2)
	}
	for i := 1; i < n; i += 2 {
		removed, last := tr.Remove("hot/topic", "", fmt.Sprint("c", i))
		if !removed || last != (i == n-1) {
			t.Fatalf("Remove c%d = (%v, %v)", i, removed, last)
		}
	}
	if tr.Len() != 0 || tr.nodeCount() != 0 {
		t.Errorf("Len %d, nodes %d after removing all", tr.Len(), tr.nodeCount())
	}
}

// Removing entries prunes the nodes they leave empty, so that the trie's
// memory returns; nodes still holding other filters stay.
func TestTriePrunes(t *testing.T) {
	tr := New[int]()
	filters := []string{"a/b/c/d", "a/b/c", "a/+/c/#", "+/+/+", "#", "a/b/#", "/", "//", "a//b", "$SYS/x", "$share/x"}
	for _, f := range filters {
		tr.Add(f, "", "c1", 0)
		tr.Add(f, "g", "c2", 0)
	}
	before := tr.nodeCount()
	for _, f := range []string{"x/y/z", "a/b/c/d/e", "a/b/c/+"} {
		if removed, _ := tr.Remove(f, "", "c1"); removed || tr.nodeCount() != before {
			t.Errorf("Remove(%q) of an absent filter: removed %v, nodes %d -> %d", f, removed, before, tr.nodeCount())
		}
	}
	tr.Remove("a/b/c/d", "", "c1")
	if tr.nodeCount() != before {
		t.Errorf("a/b/c/d still has an entry, but nodes %d -> %d", before, tr.nodeCount())
	}
	tr.Remove("a/b/c/d", "g", "c2")
	if tr.nodeCount() != before-1 {
		t.Errorf("removing the last entry of a/b/c/d: nodes %d -> %d, want %d", before, tr.nodeCount(), before-1)
	}
	if !tr.HasMatch("a/b/c") {
		t.Error("a/b/c lost its entries with a/b/c/d")
	}
	for _, f := range filters {
		tr.Remove(f, "", "c1")
		tr.Remove(f, "g", "c2")
	}
	if tr.Len() != 0 || tr.nodeCount() != 0 {
		t.Errorf("Len %d, nodes %d after removing all", tr.Len(), tr.nodeCount())
	}
	if r := tr.root; r.children != nil || r.plus != nil || r.hash != nil {
		t.Errorf("root still holds children: %+v", r)
	}
}

func TestTrieWalk(t *testing.T) {
	tr := New[int]()
	// Level order and byte order differ ('!' sorts before '/'): Walk follows
	// the filter strings.
	for i, k := range [][3]string{
		{"a/x", "", "c2"}, {"a!", "", "c1"}, {"a/x", "", "c1"}, {"a/x", "g", "c0"},
		{"#", "", "c9"}, {"+/b", "", "c1"}, {"a", "", "c1"},
	} {
		tr.Add(k[0], k[1], k[2], i)
	}
	var got []string
	tr.Walk(func(e Entry[int]) bool {
		got = append(got, e.Filter+"|"+e.Group+"|"+e.Subscriber)
		return true
	})
	want := []string{"#||c9", "+/b||c1", "a||c1", "a!||c1", "a/x||c1", "a/x||c2", "a/x|g|c0"}
	if !slices.Equal(got, want) {
		t.Errorf("Walk order = %q, want %q", got, want)
	}

	n := 0
	tr.Walk(func(Entry[int]) bool { n++; return n < 3 })
	if n != 3 {
		t.Errorf("Walk called fn %d times after it returned false on the 3rd", n)
	}

	// fn may change the trie: Walk works on a copy.
	tr.Walk(func(e Entry[int]) bool {
		tr.Remove(e.Filter, e.Group, e.Subscriber)
		return true
	})
	if tr.Len() != 0 {
		t.Errorf("Len = %d after removing every walked entry", tr.Len())
	}
}

func TestTrieMatchAllocatesNothing(t *testing.T) {
	tr := New[byte]()
	for i := range 50 {
		tr.Add(fmt.Sprintf("sport/%d/+", i), "", "c1", 1)
		tr.Add(fmt.Sprintf("sport/%d/#", i), "g", "c2", 1)
	}
	tr.Add("+/+/+", "", "c3", 1)
	dst := make([]Entry[byte], 0, 16)
	allocs := testing.AllocsPerRun(100, func() {
		dst = tr.Match("sport/7/x", dst[:0])
		if len(dst) != 3 || !tr.HasMatch("sport/7/x") {
			t.Fatalf("Match = %v", dst)
		}
	})
	if allocs != 0 {
		t.Errorf("allocs per run = %v, want 0", allocs)
	}
}

// A name with as many levels as the trie is deep does not recurse past the
// trie: a 65,536-level name against shallow filters is cheap.
func TestTrieMatchDeepName(t *testing.T) {
	tr := New[int]()
	tr.Add("#", "", "c1", 0)
	tr.Add("+/+", "", "c2", 0)
	deep := strings.Repeat("/", 65535)
	if got := tr.Match(deep, nil); len(got) != 1 || got[0].Subscriber != "c1" {
		t.Errorf("Match(65,535 separators) = %v, want only '#'", got)
	}
	long := strings.Repeat("+/", 300) + "#" // unvalidated on purpose: deep trie
	tr.Add(long, "", "c3", 0)
	if got := tr.Match(deep, nil); len(got) != 2 {
		t.Errorf("Match(65,535 separators) with a 301-level filter = %d entries, want 2", len(got))
	}
	tr.Remove(long, "", "c3")
	tr.Remove("#", "", "c1")
	tr.Remove("+/+", "", "c2")
	if tr.nodeCount() != 0 {
		t.Errorf("nodes = %d after removing all", tr.nodeCount())
	}
}

// Concurrent writers and readers; run with -race. Each writer owns its
// subscriber id, so the final state is known: everything removed.
func TestTrieConcurrent(t *testing.T) {
	tr := New[int]()
	tr.Add("sport/#", "", "resident", 0) // stays throughout
	filters := []string{"sport/tennis/+", "sport/+/player1", "+/+/player1", "sport/#", "#", "sport/tennis/player1"}
	const writers, readers, rounds = 4, 4, 300
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			sub := fmt.Sprint("w", w)
			for i := range rounds {
				f := filters[i%len(filters)]
				group := []string{"", "g"}[i%2]
				tr.Add(f, group, sub, i)
				if i%3 == 2 {
					tr.Remove(f, group, sub)
				}
			}
			for i := range rounds {
				tr.Remove(filters[i%len(filters)], []string{"", "g"}[i%2], sub)
			}
		})
	}
	for range readers {
		wg.Go(func() {
			var dst []Entry[int]
			for range rounds {
				dst = tr.Match("sport/tennis/player1", dst[:0])
				if !slices.ContainsFunc(dst, func(e Entry[int]) bool { return e.Subscriber == "resident" }) {
					t.Error("the resident subscription went missing during concurrent writes")
					return
				}
				if !tr.HasMatch("sport/tennis/player1") {
					t.Error("HasMatch = false while a subscription matches")
					return
				}
				tr.Walk(func(Entry[int]) bool { return true })
			}
		})
	}
	wg.Wait()
	if tr.Len() != 1 {
		t.Errorf("Len = %d, want only the resident entry", tr.Len())
	}
	tr.Remove("sport/#", "", "resident")
	if tr.Len() != 0 || tr.nodeCount() != 0 {
		t.Errorf("Len %d, nodes %d after removing all", tr.Len(), tr.nodeCount())
	}
}
