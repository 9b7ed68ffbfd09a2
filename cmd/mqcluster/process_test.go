package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
)

// binary builds mqcluster once per test run.
var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mqcluster-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "mqcluster")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is one mqcluster process.
type proc struct {
	cmd  *exec.Cmd
	addr string
	logs *strings.Builder
	mu   *sync.Mutex
}

var listenRE = regexp.MustCompile(`listener=(\S+)`)

// testEnv goes into the environment of every process a test starts: each
// its own admin port, so that tests and processes do not compete for the
// default one.
var testEnv = []string{"MQCLUSTER_ADMIN_ADDRESS=127.0.0.1:0"}

// startProc runs mqcluster serve with args and waits for its listener.
func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"serve", "--listen", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), testEnv...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, logs: &strings.Builder{}, mu: &sync.Mutex{}}
	t.Cleanup(func() { p.kill() })
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			p.mu.Unlock()
			if m := listenRE.FindStringSubmatch(line); m != nil {
				select {
				case addrc <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	select {
	case p.addr = <-addrc:
	case <-time.After(20 * time.Second):
		t.Fatalf("mqcluster did not start listening:\n%s", p.log())
	}
	return p
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// kill sends SIGKILL: no shutdown code runs.
func (p *proc) kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
	}
}

type client struct {
	*paho.Client
	msgs chan *paho.Publish
}

func dial(t *testing.T, addr, id string, clean bool, expiry uint32) (*client, *paho.Connack) {
	t.Helper()
	c, ca, err := tryDial(addr, id, clean, expiry)
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	return c, ca
}

// dialAdmitted is dial to a cluster node that may still refuse new clients
// with 0x88 Server unavailable while it catches up with the cluster.
func dialAdmitted(t *testing.T, addr, id string, clean bool, expiry uint32) (*client, *paho.Connack) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, ca, err := tryDial(addr, id, clean, expiry)
		if err == nil {
			return c, ca
		}
		if ca == nil || ca.ReasonCode != 0x88 || time.Now().After(deadline) {
			t.Fatalf("connect %s: %v", id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tryDial(addr, id string, clean bool, expiry uint32) (*client, *paho.Connack, error) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	c := &client{msgs: make(chan *paho.Publish, 10000)}
	c.Client = paho.NewClient(paho.ClientConfig{Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// No keep-alive: paho.golang's pinger can write a PINGREQ between the
	// writes of another packet, which the broker rightly refuses.
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 0,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if err != nil {
		nc.Close()
	}
	return c, ca, err
}

// After kill -9 and a restart on the same data directory, a persistent
// subscriber gets every message acknowledged to its publisher while it was
// offline — QoS 2 exactly once — and the retained set is intact.
func TestKill9KeepsAcknowledgedMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	p := startProc(t, "--data-dir", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	sub, _ := dial(t, p.addr, "durable", false, 3600)
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "k/q1", QoS: 1}, {Topic: "k/q2", QoS: 2}}}); err != nil {
		t.Fatal(err)
	}
	sub.Disconnect(&paho.Disconnect{})

	pub, _ := dial(t, p.addr, "pub", true, 0)
	const n = 200
	for i := 0; i < n; i++ {
		for _, q := range []byte{1, 2} {
			if _, err := pub.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("k/q%d", q), QoS: q,
				Payload: []byte(fmt.Sprint(i))}); err != nil {
				t.Fatalf("publish %d QoS %d: %v", i, q, err)
			}
		}
	}
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "k/retained", QoS: 1, Retain: true, Payload: []byte("kept")}); err != nil {
		t.Fatal(err)
	}
	p.kill()

	p2 := startProc(t, "--data-dir", dir)
	sub2, ca := dial(t, p2.addr, "durable", false, 3600)
	if !ca.SessionPresent {
		t.Fatalf("session not present after restart:\n%s", p2.log())
	}
	got := map[byte]map[string]int{1: {}, 2: {}}
	deadline := time.After(20 * time.Second)
	for len(got[1]) < n || len(got[2]) < n {
		select {
		case m := <-sub2.msgs:
			got[m.QoS][string(m.Payload)]++
		case <-deadline:
			t.Fatalf("after restart: %d of %d QoS 1 and %d of %d QoS 2 messages", len(got[1]), n, len(got[2]), n)
		}
	}
	// Drain a little longer: a duplicate at QoS 2 would show up now.
	quiet := time.After(300 * time.Millisecond)
drain:
	for {
		select {
		case m := <-sub2.msgs:
			got[m.QoS][string(m.Payload)]++
		case <-quiet:
			break drain
		}
	}
	for payload, k := range got[2] {
		if k != 1 {
			t.Fatalf("QoS 2 message %s delivered %d times", payload, k)
		}
	}
	if _, err := sub2.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "k/retained", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-sub2.msgs:
		if string(m.Payload) != "kept" || !m.Retain {
			t.Fatalf("retained after restart: %q retain=%v", m.Payload, m.Retain)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("retained message lost in kill -9")
	}
}

var gossipRE = regexp.MustCompile(`gossip=(\S+)`)

// Three mqcluster processes form a cluster through one seed; a message
// published on one reaches a subscriber on another.
func TestThreeProcessCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three processes")
	}
	first := startProc(t, "--data-dir", t.TempDir(), "--node-id", "p0", "--bootstrap-expect", "3")
	m := gossipRE.FindStringSubmatch(first.log())
	if m == nil {
		t.Fatalf("no gossip address in the log:\n%s", first.log())
	}
	procs := []*proc{first}
	for i := 1; i < 3; i++ {
		procs = append(procs, startProc(t, "--data-dir", t.TempDir(), "--node-id", fmt.Sprintf("p%d", i),
			"--bootstrap-expect", "3", "--join", m[1]))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A node admits clients once it has caught up with the cluster (0x88
	// before), and the first subscribes may still fail: retry both.
	sub, _ := dialAdmitted(t, procs[2].addr, "sub", true, 0)
	deadline := time.Now().Add(20 * time.Second)
	for {
		sa, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "proc/#", QoS: 1}}})
		if err == nil && sa.Reasons[0] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscribe never granted: %v %+v\n%s", err, sa, procs[2].log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	pub, _ := dialAdmitted(t, procs[0].addr, "pub", true, 0)
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "proc/x", QoS: 1, Payload: []byte("across processes")}); err != nil {
		t.Fatal(err)
	}
	select {
	case msg := <-sub.msgs:
		if string(msg.Payload) != "across processes" {
			t.Fatalf("got %q", msg.Payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("nothing arrived on the other process\n%s", procs[0].log())
	}
}
