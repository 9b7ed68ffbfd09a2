package auth

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mqcluster/mqcluster/broker/topic"
)

// access is what a rule grants or refuses.
type access uint8

const (
	accPublish   access = 1 << iota // PUBLISH to a topic (and a will topic)
	accSubscribe                    // SUBSCRIBE to a filter
	accReceive                      // a delivery, live or retained, of a topic
	accAll       = accPublish | accSubscribe | accReceive
)

// accessWords are the access names of a rule line.
var accessWords = map[string]access{
	"publish":   accPublish,
	"write":     accPublish,
	"subscribe": accSubscribe,
	"receive":   accReceive,
	"read":      accSubscribe | accReceive,
	"readwrite": accAll,
}

// aclRule is one allow or deny line.
type aclRule struct {
	allow  bool
	access access
	levels []string // the topic filter, split at '/'
	// subst marks a pattern rule: %u and %c in levels stand for the user
	// name and the client id, and the rule applies to every client.
	subst bool
	useU  bool // levels contain %u
	useC  bool // levels contain %c
	line  int
}

// aclSet is a parsed ACL file: the rules in file order and, for each
// client a rule can apply to, the indexes of its rules in ascending order.
type aclSet struct {
	file    string
	rules   []aclRule
	all     []int32            // rules for every client, pattern rules included
	users   map[string][]int32 // rules of a "user" section, by user name
	clients map[string][]int32 // rules of a "client" section, by client id
}

// scope is the section a rule line belongs to.
type scope struct {
	kind byte // 'a' all, 'u' user, 'c' client
	name string
}

// parseACL reads an ACL file (see docs/security.md for the grammar). Any
// error is a *FileError naming the line.
func parseACL(name string, data []byte) (*aclSet, error) {
	s := &aclSet{file: name, users: make(map[string][]int32), clients: make(map[string][]int32)}
	cur := scope{kind: 'a'}
	for i, line := range strings.Split(string(data), "\n") {
		if err := s.parseLine(line, i+1, &cur); err != nil {
			return nil, &FileError{File: name, Line: i + 1, Err: err}
		}
	}
	return s, nil
}

// parseLine reads one line into s; cur is the section so far.
func (s *aclSet) parseLine(line string, n int, cur *scope) error {
	t := strings.TrimSpace(line)
	if t == "" || t[0] == '#' {
		return nil
	}
	word, rest := cutWord(t)
	switch word {
	case "user", "client":
		if rest == "" {
			return fmt.Errorf("%q needs a name", word)
		}
		*cur = scope{kind: word[0], name: rest}
		return nil
	case "all":
		if rest != "" {
			return errors.New(`"all" takes no argument`)
		}
		*cur = scope{kind: 'a'}
		return nil
	case "pattern":
		w, r := cutWord(rest)
		if w != "allow" && w != "deny" {
			return errors.New(`want "pattern allow|deny <access> <filter>" (Mosquitto's "pattern read ..." form is not accepted: here the first matching rule decides)`)
		}
		return s.addRule(w, r, n, true, scope{kind: 'a'})
	case "allow", "deny":
		return s.addRule(word, rest, n, false, *cur)
	case "topic":
		return errors.New(`Mosquitto "topic" lines are not accepted: write "allow <access> <filter>" or "deny <access> <filter>"; the first matching rule decides`)
	}
	return fmt.Errorf("unknown keyword %q: want user, client, all, allow, deny or pattern", word)
}

// addRule parses "<access> <filter>" after allow or deny.
func (s *aclSet) addRule(verdict, rest string, n int, subst bool, sc scope) error {
	word, filter := cutWord(rest)
	acc, ok := accessWords[word]
	if !ok {
		return fmt.Errorf("unknown access %q: want publish, subscribe, receive, read, write or readwrite", word)
	}
	if filter == "" {
		return fmt.Errorf("%s %s needs a topic filter", verdict, word)
	}
	r := aclRule{allow: verdict == "allow", access: acc, subst: subst, line: n}
	check := filter
	if subst {
		var err error
		if check, r.useU, r.useC, err = placeholders(filter); err != nil {
			return err
		}
	}
	if strings.HasPrefix(check, "$share/") {
		return errors.New("a rule names the topic filter itself, not a $share/ group: rules apply to shared subscriptions by their filter")
	}
	if err := topic.ValidateFilter(check, 0); err != nil {
		return fmt.Errorf("topic filter %q: %w", filter, err)
	}
	r.levels = strings.Split(filter, "/")
	idx := int32(len(s.rules))
	s.rules = append(s.rules, r)
	switch sc.kind {
	case 'u':
		s.users[sc.name] = append(s.users[sc.name], idx)
	case 'c':
		s.clients[sc.name] = append(s.clients[sc.name], idx)
	default:
		s.all = append(s.all, idx)
	}
	return nil
}

// placeholders checks the %u and %c of a pattern filter and returns the
// filter with each replaced by a plain level character, for validation.
func placeholders(filter string) (plain string, useU, useC bool, err error) {
	var b strings.Builder
	for i := 0; i < len(filter); i++ {
		if filter[i] != '%' {
			b.WriteByte(filter[i])
			continue
		}
		if i+1 == len(filter) || filter[i+1] != 'u' && filter[i+1] != 'c' {
			return "", false, false, fmt.Errorf("topic filter %q: '%%' must start %%u or %%c", filter)
		}
		if filter[i+1] == 'u' {
			useU = true
		} else {
			useC = true
		}
		b.WriteByte('x')
		i++
	}
	return b.String(), useU, useC, nil
}

// cutWord splits s at its first run of white space.
func cutWord(s string) (word, rest string) {
	i := strings.IndexAny(s, " \t")
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimSpace(s[i:])
}
