package transport

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

func TestConfigValidate(t *testing.T) {
	if err := testConfig("a").Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no node id":         func(c *Config) { c.NodeID = "" },
		"long node id":       func(c *Config) { c.NodeID = strings.Repeat("n", 300) },
		"cert without key":   func(c *Config) { c.CertFile = "x.pem" },
		"tiny messages":      func(c *Config) { c.MaxMsgSize = 100 },
		"few streams":        func(c *Config) { c.MaxConcurrentStreams = 1 },
		"tiny headers":       func(c *Config) { c.MaxHeaderListSize = 10 },
		"no connections":     func(c *Config) { c.MaxConnections = 0 },
		"no outbox":          func(c *Config) { c.OutboxMessages = 0 },
		"no outbox bytes":    func(c *Config) { c.OutboxBytes = 0 },
		"no batch":           func(c *Config) { c.MaxBatchMessages = 0 },
		"batch over message": func(c *Config) { c.MaxBatchBytes = c.MaxMsgSize },
		"no attempts":        func(c *Config) { c.MaxAttempts = 0 },
		"no ack timeout":     func(c *Config) { c.AckTimeout = 0 },
		"no heartbeat":       func(c *Config) { c.HeartbeatInterval = 0 },
		"peer timeout short": func(c *Config) { c.PeerTimeout = c.HeartbeatInterval },
		"backoff inverted":   func(c *Config) { c.ReconnectMax = c.ReconnectMin / 2 },
		"pings too often":    func(c *Config) { c.KeepaliveTime = c.KeepaliveMinTime / 2 },
		"no call timeout":    func(c *Config) { c.CallTimeout = -1 },
	} {
		c := testConfig("a")
		mod(&c)
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: %v", name, err)
		}
		if _, err := New(c, Handlers{}); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New with %s: %v", name, err)
		}
	}
	c := DefaultConfig()
	c.NodeID = "a"
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	tr, err := New(c, Handlers{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if _, err := tr.Start(); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Start without an address: %v", err)
	}
	if err := tr.SetPeer("a", "127.0.0.1:1"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("SetPeer of itself: %v", err)
	}
}

// TestCloseStopsEverything: Close is idempotent, safe concurrently, ends
// every goroutine the transports started, and everything after it fails
// with ErrClosed.
func TestCloseStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	a := startNode(t, testConfig("a"), Handlers{})
	b := startNode(t, testConfig("b"), Handlers{})
	a.SetPeer("b", b.addr)
	b.SetPeer("a", a.addr)
	a.SetPeer("z", freeAddr(t))
	o := newOutcomes()
	for i := uint64(1); i <= 50; i++ {
		a.Send("b", msg(i, 8), o.done(i))
	}
	eventually(t, 5*time.Second, func() error {
		if o.count() != 50 {
			return errors.New("not done")
		}
		return nil
	})
	// A wait and a call in progress when the transport closes.
	errc := make(chan error, 2)
	go func() { errc <- a.WaitPeerApplied(context.Background(), "b", 1000) }()
	eventually(t, time.Second, func() error { return waiting(a.Transport, "b") })

	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			a.Close()
			b.Close()
		})
	}
	wg.Wait()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("wait at close: %v", err)
	}
	a.Send("b", msg(99, 8), o.done(99))
	if err, _ := o.get(99); !errors.Is(err, ErrClosed) {
		t.Fatalf("send after close: %v", err)
	}
	if _, err := a.Propose(context.Background(), b.addr, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("propose after close: %v", err)
	}
	if err := a.SetPeer("c", "127.0.0.1:1"); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetPeer after close: %v", err)
	}
	if err := a.Serve(a.ln); !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve after close: %v", err)
	}
	eventually(t, 5*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			buf = buf[:runtime.Stack(buf, true)]
			return fmt.Errorf("%d goroutines, %d before:\n%s", n, before, buf)
		}
		return nil
	})
}

// TestDependencies: transport never depends on broker, fsm or node.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/mqcluster/mqcluster/"
	n := 0
	for _, p := range strings.Fields(string(out)) {
		own, ok := strings.CutPrefix(p, mod)
		if !ok {
			continue
		}
		n++
		if own != "transport" && !strings.HasPrefix(own, "proto/") {
			t.Errorf("transport depends on %s", p)
		}
	}
	if n < 2 {
		t.Fatalf("go list found %d packages of the module: the test checks nothing", n)
	}
}

// BenchmarkForward64 forwards 64-byte messages over one stream between two
// transports in this process and waits for every acknowledgement. window is
// how many may be outstanding: 4096 (many publishers, batches fill up) or 32
// (one QoS 1 publisher with Receive Maximum 32 waiting for its PUBACKs).
func BenchmarkForward64(b *testing.B) {
	for _, window := range []int{4096, 32} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) { benchForward(b, window) })
	}
}

func benchForward(b *testing.B, window int) {
	recv := startNode(b, testConfig("b"), Handlers{Deliverer: discard{}})
	send := startNode(b, testConfig("a"), Handlers{Deliverer: discard{}})
	send.SetPeer("b", recv.addr)
	eventually(b, 5*time.Second, func() error {
		if !send.PeerConnected("b") {
			return errors.New("not connected")
		}
		return nil
	})
	m := &pb.ForwardedMessage{Topic: "sensors/site-1/temperature", Payload: make([]byte, 64), Qos: 1,
		OriginClientId: "publisher-1", OriginNode: "a"}
	sem := make(chan struct{}, window)
	var failed sync.Once
	done := func(err error) {
		if err != nil {
			failed.Do(func() { b.Error(err) })
		}
		<-sem
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		sem <- struct{}{}
		send.Send("b", m, done)
	}
	for range cap(sem) {
		sem <- struct{}{}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	if ps := send.Stats().Peers[0]; ps.Acked != uint64(b.N) || recv.Stats().Received != uint64(b.N) {
		b.Fatalf("acked %d, received %d, want %d", ps.Acked, recv.Stats().Received, b.N)
	}
}

type discard struct{}

func (discard) DeliverForwarded(context.Context, string, []Message) error { return nil }
