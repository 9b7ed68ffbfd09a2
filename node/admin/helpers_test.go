package admin

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/node"
)

// member is one node of a test: a broker on a loopback port, its cluster
// node (nil for a broker alone) and its admin endpoint.
type member struct {
	nd    *node.Node
	srv   *broker.Server
	adm   *Server
	mqtt  string // MQTT address
	base  string // http://host:port of the admin endpoint
	close func()
}

func testLogger() *slog.Logger {
	if os.Getenv("MQCLUSTER_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startMember runs a broker with an admin endpoint; with ncfg, as a
// cluster node. serve false leaves the broker without a listener.
func startMember(t *testing.T, ncfg *node.Config, acfg Config, serve bool) *member {
	t.Helper()
	m := &member{}
	var cl Cluster
	opts := broker.Options{Logger: testLogger()}
	if ncfg != nil {
		ncfg.Logger = testLogger()
		nd, err := node.Start(*ncfg)
		if err != nil {
			t.Fatal(err)
		}
		m.nd, cl, opts.Cluster = nd, nd, nd
	}
	srv, err := broker.New(broker.DefaultConfig(), opts)
	if err != nil {
		t.Fatal(err)
	}
	m.srv = srv
	if m.nd != nil {
		m.nd.AttachBroker(srv)
	}
	if serve {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		m.mqtt = ln.Addr().String()
		go srv.Serve(ln)
	}
	acfg.Address = "127.0.0.1:0"
	acfg.Logger = testLogger()
	if acfg.MaxApplyLag == 0 {
		acfg.MaxApplyLag = DefaultConfig().MaxApplyLag
	}
	m.adm, err = New(acfg, srv, cl)
	if err != nil {
		t.Fatal(err)
	}
	aln, err := Listen(acfg)
	if err != nil {
		t.Fatal(err)
	}
	m.base = "http://" + aln.Addr().String()
	go m.adm.Serve(aln)
	closed := false
	m.close = func() {
		if closed {
			return
		}
		closed = true
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m.adm.Close(ctx)
		srv.Close(ctx)
		if m.nd != nil {
			m.nd.Close()
		}
	}
	t.Cleanup(m.close)
	return m
}

// nodeConfig is a cluster node on loopback ports with fast gossip.
func nodeConfig(t *testing.T, id string, expect int, join ...string) *node.Config {
	cfg := node.DefaultConfig()
	cfg.NodeID, cfg.DataDir, cfg.BootstrapExpect, cfg.Join = id, t.TempDir(), expect, join
	cfg.FastGossip = true
	cfg.ReconcileInterval = 100 * time.Millisecond
	return &cfg
}

// get fetches base+path and decodes the JSON answer into v (when not nil);
// it returns the status code.
func get(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %d %s: %v", url, resp.StatusCode, body, err)
		}
	}
	return resp.StatusCode
}

// metric reads one sample of the text exposition at url: name with its
// labels exactly as exposed ({qos="1"}), -1 when absent.
func metric(t *testing.T, url, sample string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`)
	m := re.FindSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatalf("%s: %v", sample, err)
	}
	return v
}

func eventually(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true within %v: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// client is a 5.0 client that collects what it receives.
type client struct {
	*paho.Client
	msgs chan *paho.Publish
}

func dial(t *testing.T, addr, id string, clean bool, expiry uint32) *client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{msgs: make(chan *paho.Publish, 1000)}
	c.Client = paho.NewClient(paho.ClientConfig{Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// No keep-alive: paho.golang's pinger can write a PINGREQ between the
	// writes of another packet, which the broker rightly refuses.
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 0,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c
}

func (c *client) subscribe(t *testing.T, opts ...paho.SubscribeOptions) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range sa.Reasons {
		if r >= 0x80 {
			t.Fatalf("SUBACK %s: %#x", opts[i].Topic, r)
		}
	}
}

func (c *client) publish(t *testing.T, topic string, qos byte, payload string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)}); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

func (c *client) expect(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-c.msgs:
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d of %d messages", i, n)
		}
	}
}
