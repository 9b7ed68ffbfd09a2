package auth

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
)

// subackRefusedV5 is the SUBACK code a 5.0 client gets for a filter the
// ACL refuses: 0x80 Unspecified error, what 5.0 client test suites expect
// (3.1.1 has only 0x80).
const subackRefusedV5 = 0x80

// matrixACL is the rule set of the ACL matrix.
const matrixACL = `user alice
allow readwrite sensors/alice/#
allow read      sensors/+/public

user bob
allow publish   sensors/bob/#
deny  receive   sensors/alice/private
allow read      sensors/#

user eve
allow subscribe #
allow receive   news/#
allow publish   news/#

user root
allow readwrite #
`

// matrixClient is what the matrix asks of a 5.0 or a 3.1.1 client.
type matrixClient struct {
	pub    func(topic string, qos byte, retain bool) byte // the PUBACK/PUBREC reason code (3.1.1: 0)
	sub    func(filter string) byte                       // the SUBACK code
	topics chan string                                    // topics of the messages received
}

func matrixV5(t *testing.T, addr, user string) *matrixClient {
	c := mustV5(t, addr, user+"-5", user, "pw-"+user)
	m := &matrixClient{topics: make(chan string, 100)}
	go func() {
		for p := range c.msgs {
			m.topics <- p.Topic
		}
	}()
	m.pub = func(topic string, qos byte, retain bool) byte {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Retain: retain, Payload: []byte("m")})
		if r == nil {
			t.Fatalf("%s publish %s: %v", user, topic, err)
		}
		return r.ReasonCode
	}
	m.sub = func(f string) byte { return c.subscribe(t, f)[0] }
	return m
}

func matrixV3(t *testing.T, addr, user string) *matrixClient {
	c, msgs, err := dialV3(t, addr, user+"-3", user, "pw-"+user)
	if err != nil {
		t.Fatalf("3.1.1 connect %s: %v", user, err)
	}
	m := &matrixClient{topics: make(chan string, 100)}
	go func() {
		for p := range msgs {
			m.topics <- p.Topic()
		}
	}()
	m.pub = func(topic string, qos byte, retain bool) byte {
		wait(t, c.Publish(topic, qos, retain, "m"))
		return 0
	}
	m.sub = func(f string) byte {
		tok := c.Subscribe(f, 1, nil)
		wait(t, tok)
		return tok.(*mqtt3.SubscribeToken).Result()[f]
	}
	return m
}

// collect reads received topics until marker arrives.
func collect(t *testing.T, who string, topics chan string, marker string) []string {
	t.Helper()
	var got []string
	for {
		select {
		case tp := <-topics:
			if tp == marker {
				slices.Sort(got)
				return got
			}
			got = append(got, tp)
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: marker %s not received; got %v", who, marker, got)
		}
	}
}

// The ACL matrix, as the clients see it: users × topics × publish and
// subscribe, then the retained and live messages each may receive.
// Each filter gets its own code in the SUBACK ([MQTT-3.9.3-1]): a refused
// one subackRefusedV5 in 5.0, 0x80 in 3.1.1 (its only failure code). A
// refused PUBLISH gets PUBACK/PUBREC 0x87 in 5.0 and is acknowledged and
// dropped in 3.1.1, which cannot say no ([MQTT-3.3.5-2]: acknowledge or
// close).
func TestACLMatrix(t *testing.T) {
	for _, v := range []string{"5.0", "3.1.1"} {
		t.Run(v, func(t *testing.T) {
			dir := t.TempDir()
			var pw strings.Builder
			for _, u := range []string{"alice", "bob", "eve", "root"} {
				fmt.Fprintf(&pw, "%s:%s\n", u, cheapHash(t, "pw-"+u))
			}
			a, err := New(Config{PasswordFile: writeFile(t, dir, "passwd", []byte(pw.String())),
				ACLFile: writeFile(t, dir, "acl", []byte(matrixACL)), ReloadInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(a.Close)
			addr := startBroker(t, a)
			dial := matrixV5
			denied, refused := byte(0x87), byte(subackRefusedV5)
			if v == "3.1.1" {
				dial, denied, refused = matrixV3, 0x00, 0x80
			}
			root := matrixV5(t, addr, "root")
			users := map[string]*matrixClient{"alice": dial(t, addr, "alice"), "bob": dial(t, addr, "bob"), "eve": dial(t, addr, "eve")}

			// Retained messages the subscribers will find.
			for _, tp := range []string{"sensors/alice/temp", "sensors/alice/private", "sensors/bob/public", "news/today", "secret/x"} {
				if root.pub(tp, 1, true) != 0 {
					t.Fatalf("root publish %s refused", tp)
				}
			}
			if root.sub("#") != 1 {
				t.Fatal("root may subscribe to #")
			}
			root.pub("root/ready", 1, false)
			if got := collect(t, "root", root.topics, "root/ready"); len(got) != 5 {
				t.Fatalf("root received retained %v, want all five", got)
			}
			// markers are topics each user may publish and read.
			markers := map[string]string{"alice": "sensors/alice/end", "bob": "sensors/bob/end", "eve": "news/end"}
			for _, tc := range []struct {
				user, topic string
				qos         byte
				ok          bool
			}{
				{"alice", "sensors/alice/temp", 1, true},
				{"alice", "sensors/bob/temp", 1, false},
				{"alice", "sensors/bob/temp", 2, false},
				{"bob", "sensors/bob/x", 2, true},
				{"bob", "sensors/alice/temp", 1, false},
				{"eve", "news/today", 1, true},
				{"eve", "sensors/alice/temp", 1, false},
			} {
				want := denied
				if tc.ok {
					want = 0
				}
				if got := users[tc.user].pub(tc.topic, tc.qos, false); got != want {
					t.Errorf("%s publish %s QoS %d: reason code %#x, want %#x", tc.user, tc.topic, tc.qos, got, want)
				}
				// The subscriber to everything sees the allowed message and
				// not the refused one, which would arrive before the marker.
				users[tc.user].pub(markers[tc.user], 1, false)
				got := collect(t, "root", root.topics, markers[tc.user])
				if want := []string{tc.topic}; !tc.ok && len(got) != 0 || tc.ok && !slices.Equal(got, want) {
					t.Errorf("%s publish %s: the subscriber to # received %v, allowed %v", tc.user, tc.topic, got, tc.ok)
				}
			}

			for _, tc := range []struct {
				user, filter string
				ok           bool
			}{
				{"alice", "sensors/#", false}, // wider than sensors/alice/#
				{"alice", "sensors/alice/#", true},
				{"alice", "sensors/+/public", true},
				{"bob", "#", false},
				{"bob", "sensors/#", true},
				{"eve", "#", true},
			} {
				want := refused
				if tc.ok {
					want = 1
				}
				if got := users[tc.user].sub(tc.filter); got != want {
					t.Errorf("%s subscribe %s: SUBACK %#x, want %#x", tc.user, tc.filter, got, want)
				}
			}

			// What each subscriber receives: the retained messages sent on
			// subscribing, then live ones, up to a marker each may read.
			live := []string{"sensors/alice/temp", "sensors/alice/private", "sensors/bob/public", "news/today", "secret/x", "sensors/alice/end", "news/end"}
			for _, tp := range live {
				if root.pub(tp, 1, false) != 0 {
					t.Fatalf("root publish %s refused", tp)
				}
			}
			for user, want := range map[string][]string{
				"alice": {"sensors/alice/private", "sensors/alice/private", "sensors/alice/temp", "sensors/alice/temp", "sensors/bob/public", "sensors/bob/public"},
				"bob":   {"sensors/alice/temp", "sensors/alice/temp", "sensors/bob/public", "sensors/bob/public"},
				"eve":   {"news/today", "news/today"},
			} {
				marker := "sensors/alice/end"
				if user == "eve" {
					marker = "news/end"
				}
				if got := collect(t, user, users[user].topics, marker); !slices.Equal(got, want) {
					t.Errorf("%s received %v, want %v", user, got, want)
				}
			}
		})
	}
}
