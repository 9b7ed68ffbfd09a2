package auth

import (
	"strings"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/topic"
)

// decide walks the rules that apply to the client (those for all clients,
// those of its user section, those of its client section) in file order
// and returns the verdict of the first rule whose access includes acc and
// that matches; when none does, the answer is no. It allocates nothing.
func (s *aclSet) decide(c *broker.ClientInfo, acc access, match func(*aclRule) bool) bool {
	all := s.all
	var user []int32
	if c.Username != "" {
		user = s.users[c.Username]
	}
	client := s.clients[c.ClientID]
	for {
		i := int32(-1)
		var from *[]int32
		for _, l := range [...]*[]int32{&all, &user, &client} {
			if len(*l) > 0 && (i < 0 || (*l)[0] < i) {
				i, from = (*l)[0], l
			}
		}
		if from == nil {
			return false
		}
		*from = (*from)[1:]
		r := &s.rules[i]
		if r.access&acc != 0 && match(r) {
			return r.allow
		}
	}
}

// canTopic decides a PUBLISH (acc accPublish) or a delivery (accReceive)
// of the topic name.
func (s *aclSet) canTopic(c *broker.ClientInfo, acc access, name string) bool {
	return s.decide(c, acc, func(r *aclRule) bool {
		if r.subst && !r.usable(c) {
			return !r.allow
		}
		return matchLevels(r.levels, name, r.subst, c.Username, c.ClientID)
	})
}

// canSubscribe decides a SUBSCRIBE to filter (of a shared subscription,
// its topic filter). An allow rule matches only when its filter covers
// every topic the subscribed filter can match; a deny rule matches as soon
// as the two have one topic in common. So "allow read sensors/alice/#"
// does not admit "sensors/#", and "deny subscribe secret/#" refuses "#".
func (s *aclSet) canSubscribe(c *broker.ClientInfo, filter string) bool {
	_, real, _, err := topic.ParseShare(filter)
	if err != nil {
		return false
	}
	f := strings.Split(real, "/")
	return s.decide(c, accSubscribe, func(r *aclRule) bool {
		levels := r.levels
		if r.subst {
			if !r.usable(c) {
				return !r.allow
			}
			levels = substitute(levels, c.Username, c.ClientID)
		}
		if r.allow {
			return covers(levels, f)
		}
		return overlaps(levels, f)
	})
}

// usable reports whether the values a pattern rule substitutes can stand
// in a topic level: not empty, no '+', '#' or '/' (which would widen the
// rule or reach into another client's levels), not starting with '$' (which
// would reach $SYS). A pattern rule with an unusable value never allows and
// always denies.
func (r *aclRule) usable(c *broker.ClientInfo) bool {
	return (!r.useU || safeValue(c.Username)) && (!r.useC || safeValue(c.ClientID))
}

func safeValue(v string) bool {
	return v != "" && v[0] != '$' && !strings.ContainsAny(v, "+#/")
}

// substitute returns levels with %u and %c replaced, in one pass so that a
// value containing "%c" is not substituted again.
func substitute(levels []string, u, c string) []string {
	out := make([]string, len(levels))
	for i, l := range levels {
		if !strings.Contains(l, "%") {
			out[i] = l
			continue
		}
		var b strings.Builder
		for j := 0; j < len(l); j++ {
			if l[j] == '%' && j+1 < len(l) {
				switch l[j+1] {
				case 'u':
					b.WriteString(u)
					j++
					continue
				case 'c':
					b.WriteString(c)
					j++
					continue
				}
			}
			b.WriteByte(l[j])
		}
		out[i] = b.String()
	}
	return out
}

func isWild(level string) bool { return level == "+" || level == "#" }

func isDollar(level string) bool { return level != "" && level[0] == '$' }

// matchLevels reports whether the rule filter levels match the topic name,
// with the rules of topic.Match, including [MQTT-4.7.2-1]: a filter whose
// first level is a wildcard does not match a name starting with '$', so
// "allow read #" does not reach $SYS. With subst, %u and %c in a level
// stand for u and c. It allocates nothing.
func matchLevels(levels []string, name string, subst bool, u, c string) bool {
	if isDollar(name) && isWild(levels[0]) {
		return false
	}
	rest := name
	for i, pl := range levels {
		if pl == "#" {
			return true
		}
		nl, nrest, more := cutLevel(rest)
		if pl != "+" && !levelEq(pl, nl, subst, u, c) {
			return false
		}
		switch {
		case i == len(levels)-1:
			return !more
		case !more:
			// The name ends here: only a trailing "#", which also matches
			// its parent level, can still match.
			return i+2 == len(levels) && levels[i+1] == "#"
		}
		rest = nrest
	}
	return false
}

// levelEq compares one literal rule level with one name level.
func levelEq(pl, nl string, subst bool, u, c string) bool {
	if !subst {
		return pl == nl
	}
	for {
		i := strings.IndexByte(pl, '%')
		if i < 0 || i+1 == len(pl) {
			return pl == nl
		}
		if !strings.HasPrefix(nl, pl[:i]) {
			return false
		}
		nl = nl[i:]
		v := c
		if pl[i+1] == 'u' {
			v = u
		}
		if !strings.HasPrefix(nl, v) {
			return false
		}
		nl, pl = nl[len(v):], pl[i+2:]
	}
}

func cutLevel(s string) (level, rest string, more bool) {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// covers reports whether rule filter p matches every topic name that
// subscribed filter f matches. A wildcard in f needs a wildcard in p at the
// same level ('#' only by '#'); a literal level of f needs the same literal
// or '+'; '#' in p covers whatever follows, including nothing.
func covers(p, f []string) bool {
	if isWild(p[0]) && isDollar(f[0]) {
		return false // p reaches no '$' topic, f only '$' topics
	}
	for i := 0; ; i++ {
		if i < len(p) && p[i] == "#" {
			return true
		}
		if i == len(f) {
			return i == len(p)
		}
		if i == len(p) {
			return false
		}
		switch f[i] {
		case "#":
			// Only "+/#" is as wide as a whole-filter "#": a name has at
			// least one level. Deeper, f's '#' also matches the parent.
			return i == 0 && len(p) == 2 && p[0] == "+" && p[1] == "#"
		case "+":
			if p[i] != "+" {
				return false
			}
		default:
			if p[i] != "+" && p[i] != f[i] {
				return false
			}
		}
	}
}

// overlaps reports whether some topic name matches both p and f.
func overlaps(p, f []string) bool {
	if isWild(p[0]) && isDollar(f[0]) || isWild(f[0]) && isDollar(p[0]) {
		return false
	}
	for i := 0; ; i++ {
		if i < len(p) && p[i] == "#" || i < len(f) && f[i] == "#" {
			return true
		}
		if i == len(p) || i == len(f) {
			return i == len(p) && i == len(f)
		}
		if p[i] != "+" && f[i] != "+" && p[i] != f[i] {
			return false
		}
	}
}
