package auth

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/topic"
)

// testACL is the rule set of the ACL tests: rules for everyone before and
// after the sections, a user section, a client section and patterns.
const testACL = `# first match wins
deny    publish   $SYS/#
allow   read      public/#

user alice
deny    subscribe sensors/alice/secret/#
allow   readwrite sensors/alice/#
allow   read      $SYS/broker/#

user bob
allow   publish   sensors/bob/+/temp
deny    receive   sensors/alice/private
allow   read      sensors/#

client  gateway-1
allow   write     gateways/1/#

pattern allow readwrite devices/%c/#
pattern allow read      users/%u/inbox
pattern deny  publish   users/%u/inbox

all
allow   receive   broadcast/#
`

func mustACL(t *testing.T, src string) *aclSet {
	t.Helper()
	s, err := parseACL("acl", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The first matching rule decides; no matching rule refuses.
func TestACLFirstMatch(t *testing.T) {
	s := mustACL(t, testACL)
	alice := &broker.ClientInfo{Username: "alice", ClientID: "a1"}
	bob := &broker.ClientInfo{Username: "bob", ClientID: "b1"}
	gw := &broker.ClientInfo{Username: "svc", ClientID: "gateway-1"}
	anon := &broker.ClientInfo{ClientID: "anon-7"}
	type op byte
	const pub, sub, recv op = 'p', 's', 'r'
	cases := []struct {
		c    *broker.ClientInfo
		op   op
		name string
		want bool
	}{
		{alice, pub, "sensors/alice/temp", true},
		{alice, sub, "sensors/alice/temp/#", true},
		{alice, sub, "sensors/alice/#", false},        // could match secret/x: the deny comes first
		{alice, sub, "sensors/alice/secret/x", false}, // the deny comes first
		{alice, sub, "sensors/alice/+/x", false},      // could match secret/x
		{alice, recv, "sensors/alice/secret/x", true}, // receive was not denied
		{alice, sub, "sensors/bob/temp", false},
		{alice, pub, "$SYS/broker/uptime", false}, // the rule for everyone is first
		{alice, sub, "$SYS/broker/#", true},
		{alice, recv, "$SYS/broker/uptime", true},
		{alice, sub, "public/#", true},
		{alice, pub, "public/x", false}, // read does not include publish
		{bob, pub, "sensors/bob/kitchen/temp", true},
		{bob, pub, "sensors/bob/kitchen/humidity", false},
		{bob, sub, "sensors/#", true},
		{bob, recv, "sensors/alice/temp", true},
		{bob, recv, "sensors/alice/private", false},
		{bob, recv, "$SYS/broker/uptime", false}, // "sensors/#" never reaches $SYS
		{gw, pub, "gateways/1/status", true},
		{gw, pub, "gateways/2/status", false},
		{gw, sub, "gateways/1/#", false},
		{gw, pub, "devices/gateway-1/x", true}, // pattern: %c
		{gw, sub, "devices/gateway-1/#", true},
		{gw, sub, "devices/+/#", false},
		{gw, recv, "devices/gateway-2/x", false},
		{bob, sub, "users/bob/inbox", true},
		{bob, pub, "users/bob/inbox", false},
		{bob, recv, "users/alice/inbox", false},
		{anon, sub, "users//inbox", false}, // no user: %u allows nothing
		{anon, recv, "broadcast/news", true},
		{anon, sub, "broadcast/#", false}, // receive only
		{anon, sub, "public/+", true},
		{anon, pub, "anything", false}, // default deny
	}
	for _, tc := range cases {
		var got bool
		switch tc.op {
		case pub:
			got = s.canTopic(tc.c, accPublish, tc.name)
		case sub:
			got = s.canSubscribe(tc.c, tc.name)
		case recv:
			got = s.canTopic(tc.c, accReceive, tc.name)
		}
		if got != tc.want {
			t.Errorf("%s/%s %c %q: got %v, want %v", tc.c.Username, tc.c.ClientID, tc.op, tc.name, got, tc.want)
		}
	}
}

// A shared subscription is decided by its topic filter.
func TestACLSharedSubscription(t *testing.T) {
	s := mustACL(t, "allow read jobs/#\n")
	c := &broker.ClientInfo{ClientID: "w"}
	if !s.canSubscribe(c, "$share/workers/jobs/+") || s.canSubscribe(c, "$share/workers/#") || s.canSubscribe(c, "$share/bad") {
		t.Fatal("shared filters not decided by their topic filter")
	}
}

// %u and %c substitute whole values; a value that would widen the rule
// ('+', '#'), reach another client's levels ('/') or $SYS ('$'), or is
// empty, makes a pattern allow nothing and deny everything.
func TestACLSubstitutionValues(t *testing.T) {
	s := mustACL(t, "pattern deny publish %c/locked\npattern allow readwrite %c/#\npattern allow read pre-%u-post/x\n")
	for _, tc := range []struct {
		id, user, name string
		want           bool
	}{
		{"dev1", "", "dev1/a", true},
		{"dev1", "", "dev1/locked", false},
		{"dev1", "", "dev2/a", false},
		{"+", "", "dev2/a", false},
		{"#", "", "anything", false},
		{"a/b", "", "a/b/c", false},
		{"$SYS", "", "$SYS/x", false},
		{"%u", "", "%u/x", true}, // substituted once, not again
		{"c", "amy", "pre-amy-post/x", true},
		{"c", "amy", "pre-amyx-post/x", false},
		{"c", "a+b", "pre-a+b-post/x", false},
	} {
		c := &broker.ClientInfo{ClientID: tc.id, Username: tc.user}
		var got bool
		if strings.HasPrefix(tc.name, "pre-") {
			got = s.canSubscribe(c, tc.name) && s.canTopic(c, accReceive, tc.name)
		} else {
			got = s.canTopic(c, accPublish, tc.name)
		}
		if got != tc.want {
			t.Errorf("client %q user %q on %q: got %v, want %v", tc.id, tc.user, tc.name, got, tc.want)
		}
	}
}

// Each malformed line is an error naming the file and the line.
func TestACLParseErrors(t *testing.T) {
	for _, tc := range []struct {
		src  string
		line int
		want string
	}{
		{"allow read a/#\nallow rd b", 2, "unknown access"},
		{"user\nallow read a", 1, "needs a name"},
		{"topic read a/#", 1, `"topic" lines are not accepted`},
		{"pattern read devices/%c/#", 1, "pattern allow|deny"},
		{"allow read a/#/b", 1, "misplaced wildcard"},
		{"allow read", 1, "needs a topic filter"},
		{"\n\n\nallow read $share/g/a", 4, "$share"},
		{"pattern allow read a/%x", 1, "%u or %c"},
		{"grant read a", 1, "unknown keyword"},
		{"all please", 1, "no argument"},
		{"allow read a/# # trailing comment", 1, "misplaced wildcard"},
	} {
		_, err := parseACL("/etc/mqcluster/acl", []byte(tc.src))
		var fe *FileError
		if !errors.As(err, &fe) || fe.Line != tc.line {
			t.Errorf("%q: got %v, want an error on line %d", tc.src, err, tc.line)
			continue
		}
		if msg := err.Error(); !strings.HasPrefix(msg, fmt.Sprintf("/etc/mqcluster/acl:%d: ", tc.line)) || !strings.Contains(msg, tc.want) {
			t.Errorf("%q: message %q, want it to contain %q", tc.src, msg, tc.want)
		}
	}
}

// covers and overlaps agree with topic.Match over every topic name of up
// to four levels from a small alphabet: covers(p, f) holds exactly when
// every name f matches is matched by p, overlaps(p, f) exactly when some
// name is matched by both. This is the soundness of SUBSCRIBE decisions.
func TestFilterRelationsAgreeWithMatch(t *testing.T) {
	var names []string
	var grow func(prefix string, depth int)
	grow = func(prefix string, depth int) {
		if depth == 4 {
			return
		}
		for _, l := range []string{"a", "b", "", "$s"} {
			n := l
			if depth > 0 {
				n = prefix + "/" + l
			}
			names = append(names, n)
			grow(n, depth+1)
		}
	}
	grow("", 0)
	var filters []string
	var growF func(prefix string, depth int)
	growF = func(prefix string, depth int) {
		if depth == 3 {
			return
		}
		for _, l := range []string{"a", "+", "#", "", "$s"} {
			f := l
			if depth > 0 {
				f = prefix + "/" + l
			}
			if topic.ValidateFilter(f, 0) == nil {
				filters = append(filters, f)
				growF(f, depth+1)
			}
		}
	}
	growF("", 0)
	for _, p := range filters {
		pl := strings.Split(p, "/")
		for _, f := range filters {
			fl := strings.Split(f, "/")
			all, some := true, false
			for _, n := range names {
				fm := topic.Match(f, n)
				pm := topic.Match(p, n)
				if fm && !pm {
					all = false
				}
				if fm && pm {
					some = true
				}
			}
			if got := covers(pl, fl); got != all {
				t.Errorf("covers(%q, %q) = %v, want %v", p, f, got, all)
			}
			if got := overlaps(pl, fl); got != some {
				t.Errorf("overlaps(%q, %q) = %v, want %v", p, f, got, some)
			}
		}
		for _, n := range names {
			if got, want := matchLevels(pl, n, false, "", ""), topic.Match(p, n); got != want {
				t.Errorf("matchLevels(%q, %q) = %v, want %v", p, n, got, want)
			}
		}
	}
}

// The checks the broker makes per message allocate nothing.
func TestACLTopicChecksAllocateNothing(t *testing.T) {
	s := mustACL(t, testACL)
	c := &broker.ClientInfo{Username: "bob", ClientID: "gateway-1"}
	allocs := testing.AllocsPerRun(100, func() {
		s.canTopic(c, accReceive, "sensors/alice/temp")
		s.canTopic(c, accPublish, "devices/gateway-1/state")
		s.canTopic(c, accReceive, "nothing/matches/this")
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per check", allocs)
	}
}

// The examples of docs/security.md parse, and mean what the text says.
func TestDocumentedExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	block := func(after string) string {
		i := strings.Index(string(doc), after)
		if i < 0 {
			t.Fatalf("docs/security.md has no %q", after)
		}
		rest := string(doc[i:])
		start := strings.Index(rest, "```\n") + 4
		end := strings.Index(rest[start:], "```")
		return rest[start : start+end]
	}
	pw, err := ParsePasswordFile("security.md", []byte(block("### Format")))
	if err != nil {
		t.Fatal(err)
	}
	for u, h := range pw.entries() {
		if ok, err := VerifyPassword(h, []byte("example-only")); !ok || err != nil {
			t.Errorf("documented hash of %s: %v %v", u, ok, err)
		}
	}
	s, err := parseACL("security.md", []byte(block("### Examples")))
	if err != nil {
		t.Fatal(err)
	}
	alice := &broker.ClientInfo{Username: "alice", ClientID: "a"}
	dash := &broker.ClientInfo{Username: "dashboard", ClientID: "d"}
	gw := &broker.ClientInfo{Username: "anyone", ClientID: "gateway-1"}
	for _, c := range []struct {
		got, want bool
		what      string
	}{
		{s.canTopic(alice, accPublish, "sensors/alice/kitchen/temp"), true, "alice publishes her reading"},
		{s.canSubscribe(alice, "sensors/alice/kitchen/#"), true, "alice subscribes to her kitchen"},
		{s.canSubscribe(alice, "sensors/alice/#"), false, "alice subscribes to her whole subtree"},
		{s.canSubscribe(dash, "sensors/#"), true, "the dashboard subscribes to sensors/#"},
		{s.canTopic(dash, accReceive, "sensors/x/private"), false, "the dashboard receives a private reading"},
		{s.canTopic(dash, accReceive, "sensors/x/temp"), true, "the dashboard receives a reading"},
		{s.canTopic(gw, accPublish, "gateways/1/up"), true, "gateway-1 publishes"},
		{s.canTopic(gw, accPublish, "$SYS/x"), false, "publishing to $SYS"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, documented %v", c.what, c.got, c.want)
		}
	}
}
