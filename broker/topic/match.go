package topic

import "strings"

// Match reports whether the topic filter matches the topic name. Both are
// expected to be valid (ValidateFilter, ValidateName); for other input the
// answer is unspecified but Match does not panic.
//
//   - Levels are compared byte for byte, with no normalization
//     [MQTT-4.7.3-4]; an empty level is a level.
//   - '+' matches exactly one level, including an empty one: "+/+" matches
//     "/finance".
//   - '#' matches any number of levels, including none: "sport/#" matches
//     "sport" as well as "sport/tennis".
//   - A name starting with '$' is not matched by a filter whose first level
//     is '+' or '#' [MQTT-4.7.2-1]: "#" does not match "$SYS/uptime", while
//     "$SYS/#" does.
//
// Match walks both strings once, level by level, and allocates nothing.
func Match(filter, name string) bool {
	if name != "" && name[0] == '$' && filter != "" && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		fl, frest, fmore := cutLevel(filter)
		if fl == "#" {
			return true
		}
		nl, nrest, nmore := cutLevel(name)
		if fl != "+" && fl != nl {
			return false
		}
		switch {
		case !fmore:
			return !nmore
		case !nmore:
			// The name has no more levels: only a trailing "#", which also
			// matches its parent level, can still match.
			return frest == "#"
		}
		filter, name = frest, nrest
	}
}

// cutLevel splits s at its first '/': the first level, what follows the
// separator, and whether there was a separator.
func cutLevel(s string) (level, rest string, more bool) {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// Match appends to dst every entry whose filter matches the topic name, by the
// rules of the function Match, and returns the extended slice. Shared entries
// come with Group set; the caller picks one member per (Filter, Group). A
// client whose filters overlap appears once per matching filter.
//
// Match allocates nothing but what growing dst takes, and recurses once per
// level of the name along the branches of the trie that match.
func (t *Trie[V]) Match(name string, dst []Entry[V]) []Entry[V] {
	t.mu.RLock()
	dst = t.root.match(name, isDollar(name), dst)
	t.mu.RUnlock()
	return dst
}

// HasMatch reports whether any entry matches the topic name; it stops at the
// first one.
func (t *Trie[V]) HasMatch(name string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.root.hasMatch(name, isDollar(name))
}

func isDollar(name string) bool { return name != "" && name[0] == '$' }

// match collects the entries below n that match name, whose first level is
// the level below n. skipWild keeps the '+' and '#' children of the root
// away from names starting with '$' [MQTT-4.7.2-1].
func (n *node[V]) match(name string, skipWild bool, dst []Entry[V]) []Entry[V] {
	level, rest, more := cutLevel(name)
	if c := n.children[level]; c != nil {
		dst = c.matchAt(rest, more, dst)
	}
	if skipWild {
		return dst
	}
	if n.hash != nil {
		dst = append(dst, n.hash.entries...)
	}
	if n.plus != nil {
		dst = n.plus.matchAt(rest, more, dst)
	}
	return dst
}

// matchAt collects for node n, reached by one level of the name: with more
// levels to come it descends, otherwise the name ends here and n's own
// entries match, and so do those of its '#' child ("sport/#" matches "sport").
func (n *node[V]) matchAt(rest string, more bool, dst []Entry[V]) []Entry[V] {
	if more {
		return n.match(rest, false, dst)
	}
	dst = append(dst, n.entries...)
	if n.hash != nil {
		dst = append(dst, n.hash.entries...)
	}
	return dst
}

// hasMatch is match that stops at the first entry.
func (n *node[V]) hasMatch(name string, skipWild bool) bool {
	level, rest, more := cutLevel(name)
	if c := n.children[level]; c != nil && c.hasMatchAt(rest, more) {
		return true
	}
	if skipWild {
		return false
	}
	if n.hash != nil && len(n.hash.entries) > 0 {
		return true
	}
	return n.plus != nil && n.plus.hasMatchAt(rest, more)
}

func (n *node[V]) hasMatchAt(rest string, more bool) bool {
	if more {
		return n.hasMatch(rest, false)
	}
	return len(n.entries) > 0 || (n.hash != nil && len(n.hash.entries) > 0)
}
