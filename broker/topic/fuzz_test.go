package topic

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// The reference functions below restate the specification as plainly as
// possible, with strings.Split and no concern for speed, so that the fuzz
// targets compare the package against the rules rather than against itself.

// refMatch: 4.7.1 and 4.7.2, level by level.
func refMatch(filter, name string) bool {
	f := strings.Split(filter, "/")
	n := strings.Split(name, "/")
	if strings.HasPrefix(name, "$") && (f[0] == "+" || f[0] == "#") {
		return false // [MQTT-4.7.2-1]
	}
	for i, level := range f {
		if level == "#" {
			return true // the rest of the name, including no level at all
		}
		if i >= len(n) || (level != "+" && level != n[i]) {
			return false
		}
	}
	return len(f) == len(n)
}

// refText: a UTF-8 Encoded String of a topic [MQTT-1.5.4-1], [MQTT-1.5.4-2],
// [MQTT-4.7.3-1], [MQTT-4.7.3-3].
func refText(s string) bool {
	return s != "" && len(s) <= 65535 && utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

func refLevelsOK(s string, maxLevels int) bool {
	return maxLevels <= 0 || strings.Count(s, "/")+1 <= maxLevels
}

// refName: a topic name has no wildcard at all [MQTT-3.3.2-2].
func refName(s string, maxLevels int) bool {
	return refText(s) && !strings.ContainsAny(s, "+#") && refLevelsOK(s, maxLevels)
}

// refFilter: '+' is a whole level, '#' is the whole last level.
func refFilter(s string, maxLevels int) bool {
	if !refText(s) || !refLevelsOK(s, maxLevels) {
		return false
	}
	if !strings.ContainsAny(s, "+#") {
		return true
	}
	levels := strings.Split(s, "/")
	for i, level := range levels {
		if !strings.ContainsAny(level, "+#") {
			continue
		}
		if level != "+" && (level != "#" || i != len(levels)-1) {
			return false
		}
	}
	return true
}

// refShare: $share/{ShareName}/{filter} [MQTT-4.8.2-1], [MQTT-4.8.2-2].
func refShare(s string) (group, filter string, shared, ok bool) {
	rest, shared := strings.CutPrefix(s, "$share/")
	if !shared {
		return "", s, false, true
	}
	group, filter, found := strings.Cut(rest, "/")
	ok = found && group != "" && filter != "" && !strings.ContainsAny(group, "+#") &&
		utf8.ValidString(group) && !strings.ContainsRune(group, 0)
	if !ok {
		return "", "", true, false
	}
	return group, filter, true, true
}

// maxFuzzLen bounds the inputs the fuzz targets look at. Longer inputs only
// add loop iterations, which the fuzzer's coverage counts as new, and the
// fuzzer's minimizer is cubic in the input length, so they would stall it
// for a minute each. Lengths up to 65,535 bytes are covered by the tables.
const maxFuzzLen = 512

var sentinels = []error{ErrEmpty, ErrTooLong, ErrInvalidUTF8, ErrNullChar, ErrWildcardInName,
	ErrBadWildcard, ErrTooManyLevels, ErrBadShare}

func FuzzValidateFilter(f *testing.F) {
	for _, s := range []string{"sport/tennis/+", "#", "a/#/b", "+a", "a+", "#a", "$share//x",
		"$share/g", "$share/g/", "$share/a+b/x", "$share/g/a/#", "a\x00b", "\xed\xa0\x80", "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > maxFuzzLen {
			return
		}
		for _, limit := range []int{0, 3} {
			check(t, "ValidateFilter", s, limit, ValidateFilter(s, limit), refFilter(s, limit))
			check(t, "ValidateName", s, limit, ValidateName(s, limit), refName(s, limit))
		}
		group, filter, shared, err := ParseShare(s)
		wg, wf, ws, ok := refShare(s)
		check(t, "ParseShare", s, 0, err, ok)
		if group != wg || filter != wf || shared != ws {
			t.Errorf("ParseShare(%q) = (%q, %q, %v), reference (%q, %q, %v)", s, group, filter, shared, wg, wf, ws)
		}
	})
}

// check fails when err and the reference disagree on accept/reject, or when
// a rejection wraps none of the package's sentinel errors.
func check(t *testing.T, fn, s string, limit int, err error, refOK bool) {
	t.Helper()
	if (err == nil) != refOK {
		t.Fatalf("%s(%q, %d): err = %v, reference accepts: %v", fn, s, limit, err, refOK)
	}
	if err != nil && !slices.ContainsFunc(sentinels, func(s error) bool { return errors.Is(err, s) }) {
		t.Fatalf("%s(%q, %d): err = %v wraps no sentinel error", fn, s, limit, err)
	}
}

// FuzzTrieMatch builds a trie from the valid filters among NUL-separated
// candidates (NUL never occurs in a valid filter), some of them shared, and
// checks Match and HasMatch against refMatch for the name; then it removes
// every entry and checks that the trie is empty down to its nodes.
func FuzzTrieMatch(f *testing.F) {
	f.Add("sport/tennis/player1/#\x00sport/+\x00+/+\x00#\x00$share/g/sport/#", "sport/tennis/player1")
	f.Add("+/monitor/Clients\x00$SYS/#\x00#\x00$SYS/monitor/+", "$SYS/monitor/Clients")
	f.Add("/+\x00+/+\x00+\x00/#", "/finance")
	f.Add("a/b\x00a/b\x00$share/g/a/b\x00$share/h/a/+", "a/b")
	f.Fuzz(func(t *testing.T, filters, name string) {
		if len(filters)+len(name) > maxFuzzLen || ValidateName(name, levelLimit) != nil {
			return
		}
		type key struct{ filter, group, subscriber string }
		tr := New[int]()
		added := map[key]int{}
		perFilter := map[string]int{} // entries per filter, any group or subscriber
		for i, raw := range strings.Split(filters, "\x00") {
			group, filter, _, err := ParseShare(raw)
			if err != nil || ValidateFilter(filter, levelLimit) != nil {
				continue
			}
			// Few subscriber ids, so that some additions replace an entry.
			k := key{filter, group, fmt.Sprint("c", i%3)}
			_, existed := added[k]
			replaced, first := tr.Add(k.filter, k.group, k.subscriber, i)
			if replaced != existed || first != (perFilter[filter] == 0) {
				t.Fatalf("Add(%q, %q, %q) = (%v, %v), want (%v, %v)",
					k.filter, k.group, k.subscriber, replaced, first, existed, perFilter[filter] == 0)
			}
			if !existed {
				perFilter[filter]++
			}
			added[k] = i
		}
		for k, v := range added {
			if got, ok := tr.Get(k.filter, k.group, k.subscriber); !ok || got != v {
				t.Errorf("Get(%q, %q, %q) = (%d, %v), want (%d, true)", k.filter, k.group, k.subscriber, got, ok, v)
			}
		}
		want := map[key]int{}
		for k, v := range added {
			ref := refMatch(k.filter, name)
			if ref {
				want[k] = v
			}
			if got := Match(k.filter, name); got != ref {
				t.Errorf("Match(%q, %q) = %v, reference %v", k.filter, name, got, ref)
			}
		}
		got := map[key]int{}
		for _, e := range tr.Match(name, nil) {
			k := key{e.Filter, e.Group, e.Subscriber}
			if _, dup := got[k]; dup {
				t.Errorf("Match(%q) returned %+v twice", name, k)
			}
			got[k] = e.Value
		}
		if !maps.Equal(got, want) {
			t.Errorf("Trie.Match(%q) = %v, reference %v", name, got, want)
		}
		if has := tr.HasMatch(name); has != (len(want) > 0) {
			t.Errorf("HasMatch(%q) = %v, reference %v", name, has, len(want) > 0)
		}
		if tr.Len() != len(added) {
			t.Errorf("Len() = %d, want %d", tr.Len(), len(added))
		}
		keys := slices.SortedFunc(maps.Keys(added), func(a, b key) int {
			return cmp.Or(cmp.Compare(a.filter, b.filter), cmp.Compare(a.group, b.group), cmp.Compare(a.subscriber, b.subscriber))
		})
		for i, k := range keys {
			// Remove in a deterministic order that interleaves filters.
			if i%2 == 1 {
				k = keys[len(keys)-1-i/2]
			} else {
				k = keys[i/2]
			}
			perFilter[k.filter]--
			removed, last := tr.Remove(k.filter, k.group, k.subscriber)
			if !removed || last != (perFilter[k.filter] == 0) {
				t.Errorf("Remove(%q, %q, %q) = (%v, %v), want (true, %v)", k.filter, k.group, k.subscriber, removed, last, perFilter[k.filter] == 0)
			}
		}
		if tr.Len() != 0 || tr.nodeCount() != 0 || tr.HasMatch(name) {
			t.Errorf("after removing everything: Len %d, nodes %d, HasMatch %v", tr.Len(), tr.nodeCount(), tr.HasMatch(name))
		}
	})
}
