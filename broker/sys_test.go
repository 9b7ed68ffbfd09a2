package broker

import (
	"context"
	"fmt"
	"math"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// sysConfig is DefaultConfig with a $SYS interval short enough for tests.
func sysConfig() *Config {
	cfg := DefaultConfig()
	cfg.SysInterval = 50 * time.Millisecond
	return &cfg
}

func withVersion(v string) func(*Options) { return func(o *Options) { o.Version = v } }

// sysValues keeps the latest payload of every $SYS topic a client received.
type sysValues map[string]string

// collectV5 moves what c received into vals; it fails on a topic outside
// $SYS/broker/.
func (vals sysValues) collectV5(t *testing.T, c *v5) {
	t.Helper()
	for {
		select {
		case m := <-c.msgs:
			if !strings.HasPrefix(m.Topic, "$SYS/broker/") {
				t.Fatalf("message on %q", m.Topic)
			}
			vals[m.Topic] = string(m.Payload)
		default:
			return
		}
	}
}

func (vals sysValues) int(name string) (int64, error) {
	v, ok := vals[name]
	if !ok {
		return 0, fmt.Errorf("%s not received", name)
	}
	return strconv.ParseInt(v, 10, 64)
}

// sysTopics are the topics every update carries at least once.
var sysTopics = []string{
	"$SYS/broker/version", "$SYS/broker/uptime",
	"$SYS/broker/clients/connected", "$SYS/broker/clients/disconnected",
	"$SYS/broker/clients/total", "$SYS/broker/clients/maximum",
	"$SYS/broker/messages/received", "$SYS/broker/messages/sent", "$SYS/broker/messages/stored",
	"$SYS/broker/bytes/received", "$SYS/broker/bytes/sent",
	"$SYS/broker/publish/messages/received", "$SYS/broker/publish/messages/sent",
	"$SYS/broker/publish/messages/dropped",
	"$SYS/broker/subscriptions/count", "$SYS/broker/retained messages/count",
	"$SYS/broker/heap/current",
	"$SYS/broker/load/messages/received/1min", "$SYS/broker/load/messages/received/5min",
	"$SYS/broker/load/messages/received/15min", "$SYS/broker/load/messages/sent/1min",
	"$SYS/broker/load/bytes/received/1min", "$SYS/broker/load/bytes/sent/15min",
	"$SYS/broker/load/connections/1min", "$SYS/broker/load/publish/dropped/5min",
}

// A 5.0 client subscribed to $SYS/broker/# gets every figure at once
// (retained) and then the changes: the connected clients are counted, and
// messages/received grows with what clients send.
func TestSysTopicsV5(t *testing.T) {
	s := startServer(t, sysConfig(), withVersion("1.2.3-test"))
	c := dialV5(t, s.addr, "sys5")
	if sa := c.subscribe(t, paho.SubscribeOptions{Topic: "$SYS/broker/#"}); sa.Reasons[0] != 0 {
		t.Fatalf("SUBACK %v", sa.Reasons)
	}
	vals := sysValues{}
	eventually(t, 5*time.Second, func() error {
		vals.collectV5(t, c)
		for _, name := range sysTopics {
			if _, ok := vals[name]; !ok {
				return fmt.Errorf("%s not received", name)
			}
		}
		return nil
	})
	if v := vals["$SYS/broker/version"]; v != "mqcluster version 1.2.3-test" {
		t.Errorf("version %q", v)
	}
	if v := vals["$SYS/broker/uptime"]; !strings.HasSuffix(v, " seconds") {
		t.Errorf("uptime %q, want \"N seconds\"", v)
	}
	if _, err := strconv.ParseFloat(vals["$SYS/broker/load/bytes/received/1min"], 64); err != nil {
		t.Errorf("load: %v", err)
	}

	// Two more clients, one of them with a persistent session that then
	// goes away: connected 2, disconnected 1, maximum 3.
	other := dialV5(t, s.addr, "sys5-other")
	away := dialV5(t, s.addr, "sys5-away", func(cp *paho.Connect, _ *paho.ClientConfig) {
		cp.CleanStart = false
		expiry := uint32(60)
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &expiry}
	})
	eventually(t, 5*time.Second, func() error {
		vals.collectV5(t, c)
		if n, err := vals.int("$SYS/broker/clients/connected"); err != nil || n != 3 {
			return fmt.Errorf("clients/connected %d %v, want 3", n, err)
		}
		return nil
	})
	away.Disconnect(&paho.Disconnect{})
	eventually(t, 5*time.Second, func() error {
		vals.collectV5(t, c)
		want := map[string]int64{"connected": 2, "disconnected": 1, "total": 3, "maximum": 3}
		for k, w := range want {
			if n, err := vals.int("$SYS/broker/clients/" + k); err != nil || n != w {
				return fmt.Errorf("clients/%s %d %v, want %d", k, n, err, w)
			}
		}
		return nil
	})

	before, _ := vals.int("$SYS/broker/messages/received")
	pubsBefore, _ := vals.int("$SYS/broker/publish/messages/received")
	for i := 0; i < 5; i++ {
		other.publish(t, &paho.Publish{Topic: "sys/x", QoS: 1, Payload: []byte("p")})
	}
	eventually(t, 5*time.Second, func() error {
		vals.collectV5(t, c)
		n, _ := vals.int("$SYS/broker/messages/received")
		pubs, _ := vals.int("$SYS/broker/publish/messages/received")
		if n < before+5 || pubs != pubsBefore+5 {
			return fmt.Errorf("messages/received %d (was %d), publish/messages/received %d (was %d)", n, before, pubs, pubsBefore)
		}
		return nil
	})
	if n, _ := vals.int("$SYS/broker/bytes/received"); n <= 0 {
		t.Errorf("bytes/received %d", n)
	}
}

// A 3.1.1 client gets the same figures.
func TestSysTopicsV311(t *testing.T) {
	s := startServer(t, sysConfig(), withVersion("3.1.1-test"))
	c := dialV3(t, s.addr, "sys3", true)
	c.sub(t, "$SYS/broker/#", 1)
	vals := map[string]string{}
	eventually(t, 5*time.Second, func() error {
		for len(c.msgs) > 0 {
			m := <-c.msgs
			vals[m.Topic()] = string(m.Payload())
		}
		if vals["$SYS/broker/version"] != "mqcluster version 3.1.1-test" {
			return fmt.Errorf("version %q", vals["$SYS/broker/version"])
		}
		if vals["$SYS/broker/clients/connected"] != "1" || vals["$SYS/broker/subscriptions/count"] != "1" {
			return fmt.Errorf("connected %q, subscriptions %q", vals["$SYS/broker/clients/connected"], vals["$SYS/broker/subscriptions/count"])
		}
		return nil
	})
}

// Wildcards at the first level never match $SYS topics ([MQTT-4.7.2-1]):
// neither the retained figures nor the updates reach a subscriber to "#"
// or "+/broker/#".
func TestSysNotMatchedByWildcards(t *testing.T) {
	s := startServer(t, sysConfig())
	wild := dialV5(t, s.addr, "wild")
	wild.subscribe(t, paho.SubscribeOptions{Topic: "#"}, paho.SubscribeOptions{Topic: "+/broker/#"})
	sys := dialV5(t, s.addr, "sys")
	sys.subscribe(t, paho.SubscribeOptions{Topic: "$SYS/broker/#"})
	// An update (not a retained copy) reaching sys was routed after wild
	// subscribed: wild would have got it too.
	eventually(t, 5*time.Second, func() error {
		for len(sys.msgs) > 0 {
			if m := <-sys.msgs; !m.Retain && m.Topic == "$SYS/broker/messages/received" {
				return nil
			}
		}
		return fmt.Errorf("no update yet")
	})
	sys.publish(t, &paho.Publish{Topic: "marker", QoS: 1, Payload: []byte("m")})
	for {
		m := wild.expect(t)
		if strings.HasPrefix(m.Topic, "$") {
			t.Fatalf("wildcard subscriber got %q", m.Topic)
		}
		if m.Topic == "marker" {
			return
		}
	}
}

// sysACL refuses $SYS subscriptions (refuseSub), or lets clients read
// only one $SYS topic (readOnly).
type sysACL struct {
	refuseSub bool
	readOnly  string
}

func (sysACL) CanPublish(*ClientInfo, string) bool { return true }

func (a sysACL) CanSubscribe(_ *ClientInfo, filter string) bool {
	return !a.refuseSub || !strings.HasPrefix(filter, "$SYS")
}

func (a sysACL) CanRead(_ *ClientInfo, topic string) bool {
	return a.readOnly == "" || !isSysTopic(topic) || topic == a.readOnly
}

// $SYS topics are readable only where the Authorizer allows: a refused
// subscription gets SUBACK 0x80 and nothing; a topic
// the client may not read is neither sent as retained nor updated.
func TestSysAuthorizer(t *testing.T) {
	t.Run("subscribe refused", func(t *testing.T) {
		s := startServer(t, sysConfig(), func(o *Options) { o.ACL = sysACL{refuseSub: true} })
		r := dialRaw(t, s.addr)
		r.connect(packet.V311, "sys-acl3")
		r.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "$SYS/#"}}})
		if sa, ok := r.read().(*packet.Suback); !ok || len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0] != 0x80 {
			t.Fatalf("3.1.1 SUBACK %+v, want 0x80", sa)
		}
		c := dialV5(t, s.addr, "sys-acl5")
		if sa := c.subscribe(t, paho.SubscribeOptions{Topic: "$SYS/broker/#"}); sa.Reasons[0] != byte(packet.UnspecifiedError) {
			t.Fatalf("5.0 SUBACK %v, want 0x80", sa.Reasons)
		}
		// Updates keep coming (the clients' own packets change the
		// figures); none may arrive.
		c.expectNone(t, 300*time.Millisecond)
		if pk, err := r.readErr(100 * time.Millisecond); err == nil {
			t.Fatalf("3.1.1 client got %v", pk)
		}
	})
	t.Run("read refused", func(t *testing.T) {
		const allowed = "$SYS/broker/subscriptions/count"
		s := startServer(t, sysConfig(), func(o *Options) { o.ACL = sysACL{readOnly: allowed} })
		c := dialV5(t, s.addr, "sys-hide")
		c.subscribe(t, paho.SubscribeOptions{Topic: "$SYS/broker/#"})
		// The retained figure predates c's subscription; the next update
		// counts it.
		if m := c.expect(t); m.Topic != allowed || string(m.Payload) != "0" || !m.Retain {
			t.Fatalf("retained: %s %q retain %v, want %s 0", m.Topic, m.Payload, m.Retain, allowed)
		}
		if m := c.expect(t); m.Topic != allowed || string(m.Payload) != "1" || m.Retain {
			t.Fatalf("update: %s %q retain %v, want %s 1", m.Topic, m.Payload, m.Retain, allowed)
		}
		// The second subscription reaches c as an update; the SUBSCRIBE
		// packet changed messages/received in that update or an earlier
		// one after c subscribed, which c must not have got.
		other := dialV5(t, s.addr, "sys-hide-2")
		other.subscribe(t, paho.SubscribeOptions{Topic: "elsewhere"})
		if m := c.expect(t); m.Topic != allowed || string(m.Payload) != "2" {
			t.Fatalf("update: %s %q, want %s 2", m.Topic, m.Payload, allowed)
		}
		c.expectNone(t, 100*time.Millisecond)
	})
}

// mosquitto_sub reads the version, retained, as with Mosquitto.
func TestSysMosquittoSub(t *testing.T) {
	s := startServer(t, sysConfig(), withVersion("9.8.7"))
	h, p := hostPort(t, s.addr)
	for _, v := range []string{"mqttv311", "mqttv5"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, mosquittoTool(t, "mosquitto_sub"), "-h", h, "-p", p, "-V", v,
			"-t", "$SYS/broker/version", "-C", "1", "-W", "5").Output()
		cancel()
		if err != nil || strings.TrimSpace(string(out)) != "mqcluster version 9.8.7" {
			t.Fatalf("%s: mosquitto_sub printed %q (%v)", v, out, err)
		}
	}
}

// SysInterval 0 publishes nothing under $SYS.
func TestSysDisabled(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SysInterval = 0
	s := startServer(t, &cfg)
	c := dialV5(t, s.addr, "nosys")
	c.subscribe(t, paho.SubscribeOptions{Topic: "$SYS/#"})
	c.expectNone(t, 300*time.Millisecond)
}

// recordingCluster is a Cluster that records what the broker asks of it.
type recordingCluster struct {
	mu       sync.Mutex
	forwards []string
	retains  []string
}

func (r *recordingCluster) SetRoute(context.Context, string, int) error { return nil }

func (r *recordingCluster) Forward(m *Message, done func(error)) bool {
	r.mu.Lock()
	r.forwards = append(r.forwards, m.Topic)
	r.mu.Unlock()
	return false
}

func (r *recordingCluster) Retain(_ context.Context, m *Message) error {
	r.mu.Lock()
	r.retains = append(r.retains, m.Topic)
	r.mu.Unlock()
	return nil
}

func (r *recordingCluster) Retained(string) []*Message { return nil }

// In a cluster each node's figures stay on the node: they are delivered to
// local subscribers without being forwarded or retained through the
// cluster, and a new subscriber still gets them at once.
func TestSysLocalToNode(t *testing.T) {
	rc := &recordingCluster{}
	s := startServer(t, sysConfig(), func(o *Options) { o.Cluster = rc })
	c := dialV5(t, s.addr, "sys-node")
	c.subscribe(t, paho.SubscribeOptions{Topic: "$SYS/broker/#"})
	vals := sysValues{}
	eventually(t, 5*time.Second, func() error {
		vals.collectV5(t, c)
		if _, ok := vals["$SYS/broker/version"]; !ok {
			return fmt.Errorf("no version")
		}
		if n, err := vals.int("$SYS/broker/clients/connected"); err != nil || n != 1 {
			return fmt.Errorf("clients/connected %d %v", n, err)
		}
		return nil
	})
	// An ordinary retained publish does go through the cluster: the
	// recorder works.
	c.publish(t, &paho.Publish{Topic: "plain", QoS: 1, Retain: true, Payload: []byte("x")})
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, topic := range append(rc.forwards, rc.retains...) {
		if isSysTopic(topic) {
			t.Fatalf("%s went through the cluster", topic)
		}
	}
	if len(rc.forwards) != 1 || len(rc.retains) != 1 {
		t.Fatalf("forwards %v retains %v, want the plain message once each", rc.forwards, rc.retains)
	}
}

// The load averages follow Mosquitto's: the last interval's rate per
// minute, folded in with the weight exp(-dt/window).
func TestSysLoadAverage(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SysInterval = time.Hour // no tick during the test: update is driven here
	s := startServer(t, &cfg)
	tr := s.sys
	c := dialV5(t, s.addr, "load")
	c.subscribe(t, paho.SubscribeOptions{Topic: "$SYS/broker/load/publish/received/+"})
	base := s.stats.PublishesIn.Load()
	s.stats.PublishesIn.Store(base + 600)
	tr.update(tr.lastAt.Add(time.Minute))
	want := map[string]float64{
		"1min":  600 * (1 - math.Exp(-1)),
		"5min":  600 * (1 - math.Exp(-0.2)),
		"15min": 600 * (1 - math.Exp(-1.0/15)),
	}
	got := map[string]string{}
	eventually(t, 5*time.Second, func() error {
		for len(c.msgs) > 0 {
			m := <-c.msgs
			got[m.Topic[strings.LastIndexByte(m.Topic, '/')+1:]] = string(m.Payload)
		}
		for k, w := range want {
			if got[k] != strconv.FormatFloat(w, 'f', 2, 64) {
				return fmt.Errorf("%s: %q, want %.2f", k, got[k], w)
			}
		}
		return nil
	})
}
