package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"github.com/mqcluster/mqcluster/node/admin"
)

// client5 is a 5.0 client that keeps what it receives, DISCONNECTs
// included.
type client5 struct {
	*paho.Client
	msgs chan *paho.Publish
	disc chan *paho.Disconnect
}

func dial5(t *testing.T, addr, id string, clean bool, expiry uint32) (*client5, *paho.Connack) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &client5{msgs: make(chan *paho.Publish, 1000), disc: make(chan *paho.Disconnect, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { c.disc <- d },
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// No keep-alive: paho.golang's pinger can write a PINGREQ between the
	// writes of another packet, which the broker rightly refuses.
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 0,
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c, ca
}

// expectDisconnect waits for the server's DISCONNECT.
func (c *client5) expectDisconnect(t *testing.T, code byte, ref string) {
	t.Helper()
	select {
	case d := <-c.disc:
		got := ""
		if d.Properties != nil {
			got = d.Properties.ServerReference
		}
		if d.ReasonCode != code || got != ref {
			t.Fatalf("DISCONNECT %#x with server reference %q, want %#x with %q", d.ReasonCode, got, code, ref)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no DISCONNECT from the server")
	}
}

// waitExit waits for the process to log its last line and exit; it
// returns the exit error (nil: status 0).
func waitExit(t *testing.T, p *proc, within time.Duration) error {
	t.Helper()
	eventually(t, within, func() error {
		if !strings.Contains(p.log(), `msg=stopped`) {
			return fmt.Errorf("not stopped yet")
		}
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("the process logged its stop but did not exit:\n%s", p.log())
		return nil
	}
}

// SIGTERM drains: the listeners close (not ready any more), the 5.0 client
// gets DISCONNECT 0x8B, or 0x9C with the configured server reference, the
// 3.1.1 connection closes, and the process exits 0.
func TestSIGTERMDrainsClients(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	for _, tc := range []struct {
		name string
		ref  string
		code byte
	}{
		{"server shutting down", "", 0x8B},
		{"use another server", "mqtt-b.example.net:1883", 0x9C},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"--data-dir", t.TempDir(), "--drain-rate", "4", "--drain-timeout", "20s"}
			if tc.ref != "" {
				args = append(args, "--mqtt-server-reference", tc.ref)
			}
			p := startProc(t, args...)
			waitReady(t, p)
			five, _ := dial5(t, p.addr, "five", true, 0)
			_, lost := dial3(t, p.addr, "three", true)
			dial5(t, p.addr, "other-1", true, 0)
			dial5(t, p.addr, "other-2", true, 0)
			start := time.Now()
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			// Four connections at 4 per second: the drain lasts about 0.75 s,
			// during which the node is alive and not ready.
			eventually(t, 10*time.Second, func() error {
				var rd admin.Readiness
				code, _ := getJSON(p.adminURL(t)+"/readyz", &rd)
				if code != http.StatusServiceUnavailable || !slices.Contains(rd.Failed, "listeners") {
					return fmt.Errorf("readyz %d %+v", code, rd)
				}
				return nil
			})
			if code, _ := getJSON(p.adminURL(t)+"/healthz", nil); code != http.StatusOK {
				t.Errorf("healthz while draining: %d", code)
			}
			five.expectDisconnect(t, tc.code, tc.ref)
			select {
			case <-lost:
			case <-time.After(10 * time.Second):
				t.Fatal("3.1.1 connection not closed")
			}
			if err := waitExit(t, p, 20*time.Second); err != nil {
				t.Fatalf("exit: %v\n%s", err, p.log())
			}
			if took := time.Since(start); took < 600*time.Millisecond {
				t.Errorf("drained 4 connections at 4/s in %v", took)
			}
			if !connDropped(p.addr) {
				t.Error("the MQTT port still accepts connections after the exit")
			}
		})
	}
}

// `mqcluster ctl leave` scales a three-process cluster down by one: the
// node drains, its client reconnects to another node and takes over its
// persistent session with the messages queued meanwhile, the node leaves
// Raft and gossip and exits 0, and the others no longer count it. A plain
// SIGTERM then stops another node without it leaving.
func TestCtlLeaveScalesDown(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three processes")
	}
	first := startProc(t, "--data-dir", t.TempDir(), "--node-id", "p0", "--bootstrap-expect", "3")
	m := gossipRE.FindStringSubmatch(first.log())
	if m == nil {
		t.Fatalf("no gossip address in the log:\n%s", first.log())
	}
	procs := []*proc{first}
	// p2 leaves and gives its client time to move; p1 is stopped with its
	// client's session still on it, and waits only briefly.
	for i, grace := range []string{"2s", "30s"} {
		procs = append(procs, startProc(t, "--data-dir", t.TempDir(), "--node-id", fmt.Sprintf("p%d", i+1),
			"--bootstrap-expect", "3", "--join", m[1], "--drain-handoff-grace", grace))
	}
	for _, p := range procs {
		waitReady(t, p)
	}
	leaving := procs[2]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dev, _ := dial5(t, leaving.addr, "mover", false, 3600)
	if _, err := dev.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "lv/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	out, err := ctlCmd(t, nil, "--admin", leaving.adminURL(t), "leave")
	if err != nil || !strings.Contains(out, "p2 is leaving") {
		t.Fatalf("ctl leave: %v\n%s", err, out)
	}
	dev.expectDisconnect(t, 0x8B, "")

	// Published while the client is away: queued in its session on p2.
	pub, _ := dial5(t, procs[0].addr, "pub", true, 0)
	for i := range 10 {
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("lv/%d", i), QoS: 1, Payload: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	dev2, ca := dial5(t, procs[1].addr, "mover", false, 3600)
	if !ca.SessionPresent {
		t.Fatalf("session not present on p1 after p2 left:\n%s", leaving.log())
	}
	got := map[string]bool{}
	for len(got) < 10 {
		select {
		case msg := <-dev2.msgs:
			got[string(msg.Payload)] = true
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of 10 queued messages after the move", len(got))
		}
	}
	if err := waitExit(t, leaving, 40*time.Second); err != nil {
		t.Fatalf("exit of the leaving node: %v\n%s", err, leaving.log())
	}
	if !strings.Contains(leaving.log(), "left the cluster") {
		t.Errorf("no \"left the cluster\" in the log of p2:\n%s", leaving.log())
	}
	eventually(t, 15*time.Second, func() error {
		out, err := ctlCmd(t, nil, "--admin", procs[0].adminURL(t), "-o", "json", "members")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		var p admin.Page[admin.Member]
		if err := json.Unmarshal([]byte(out), &p); err != nil {
			return err
		}
		for _, mb := range p.Items {
			if mb.ID == "p2" && (mb.Raft != "" || mb.Gossip == "alive") {
				return fmt.Errorf("p2 still counted: %+v", mb)
			}
		}
		return nil
	})
	waitReady(t, procs[0])

	// An ordinary SIGTERM (a restart) drains but does not leave: p1 stays a
	// voter, so p0 alone has no quorum.
	if err := procs[1].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(t, procs[1], 40*time.Second); err != nil {
		t.Fatalf("exit of p1: %v\n%s", err, procs[1].log())
	}
	if strings.Contains(procs[1].log(), "left the cluster") {
		t.Errorf("p1 left the cluster on a plain SIGTERM:\n%s", procs[1].log())
	}
	var members admin.Page[admin.Member]
	if _, err := getJSON(procs[0].adminURL(t)+"/api/v1/members", &members); err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(members.Items, func(mb admin.Member) bool { return mb.ID == "p1" }); i < 0 || members.Items[i].Raft != "voter" {
		t.Errorf("p1 after a plain stop: %+v, want still a voter", members.Items)
	}
	eventually(t, 20*time.Second, func() error {
		var rd admin.Readiness
		if code, _ := getJSON(procs[0].adminURL(t)+"/readyz", &rd); code != http.StatusServiceUnavailable {
			return fmt.Errorf("p0 without quorum: readyz %d %+v", code, rd)
		}
		return nil
	})
}
