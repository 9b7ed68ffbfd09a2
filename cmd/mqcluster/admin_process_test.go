package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqcluster/mqcluster/node/admin"
)

var adminRE = regexp.MustCompile(`msg="admin endpoint listening" admin=(\S+)`)

// adminURL is the admin endpoint the process announced.
func (p *proc) adminURL(t *testing.T) string {
	t.Helper()
	m := adminRE.FindStringSubmatch(p.log())
	if m == nil {
		t.Fatalf("no admin endpoint in the log:\n%s", p.log())
	}
	return "http://" + m[1]
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

// getJSON fetches url into v and returns the status code (0 when the
// request failed).
func getJSON(url string, v any) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			return resp.StatusCode, fmt.Errorf("%s: %v", body, err)
		}
	}
	return resp.StatusCode, nil
}

// waitReady waits until the process's /readyz answers 200.
func waitReady(t *testing.T, p *proc) {
	t.Helper()
	eventually(t, 20*time.Second, func() error {
		var rd admin.Readiness
		code, err := getJSON(p.adminURL(t)+"/readyz", &rd)
		if code != http.StatusOK {
			return fmt.Errorf("readyz %d %v %+v", code, err, rd)
		}
		return nil
	})
}

// scrape reads one sample of the process's /metrics (-1: absent).
func scrape(t *testing.T, p *proc, sample string) float64 {
	t.Helper()
	resp, err := http.Get(p.adminURL(t) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// ctlCmd runs `mqcluster ctl args...` with env added.
func ctlCmd(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"ctl"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// dial3 connects a 3.1.1 client; lost gets the connection's end.
func dial3(t *testing.T, addr, id string, clean bool, modify ...func(*mqtt3.ClientOptions)) (mqtt3.Client, chan error) {
	t.Helper()
	lost := make(chan error, 1)
	o := mqtt3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(false).SetConnectRetry(false).SetProtocolVersion(4).SetKeepAlive(30 * time.Second).
		SetConnectionLostHandler(func(_ mqtt3.Client, err error) { lost <- err })
	for _, f := range modify {
		f(o)
	}
	c := mqtt3.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("3.1.1 connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, lost
}

// The admin API and `mqcluster ctl` against a real single-node cluster:
// status, members, clients, sessions and subscriptions, as JSON and as
// tables, and /metrics after traffic.
func TestAdminAPIAndCtl(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	p := startProc(t, "--data-dir", t.TempDir(), "--node-id", "p0", "--bootstrap-expect", "1")
	waitReady(t, p)
	base := p.adminURL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	dev, _ := dial(t, p.addr, "device-5", false, 3600)
	noLocal := true
	if _, err := dev.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "cmd/+/set", QoS: 1, NoLocal: noLocal}, {Topic: "fw/#", QoS: 2}}}); err != nil {
		t.Fatal(err)
	}
	c3, _ := dial3(t, p.addr, "device-3", true)
	for i := range 10 {
		if tok := c3.Publish(fmt.Sprintf("cmd/%d/set", i), 1, false, "on"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	for i := range 10 {
		select {
		case <-dev.msgs:
		case <-time.After(10 * time.Second):
			t.Fatalf("got %d of 10 messages", i)
		}
	}
	eventually(t, 5*time.Second, func() error {
		for sample, want := range map[string]float64{
			`mqcluster_connections`:                     2,
			`mqcluster_publish_received_total{qos="1"}`: 10,
			`mqcluster_messages_sent_total{qos="1"}`:    10,
			`mqcluster_raft_state{state="leader"}`:      1,
			`mqcluster_cluster_sessions`:                1,
		} {
			if got := scrape(t, p, sample); got != want {
				return fmt.Errorf("%s = %v, want %v", sample, got, want)
			}
		}
		return nil
	})

	var st admin.Status
	if code, err := getJSON(base+"/api/v1/status", &st); code != 200 || err != nil || st.NodeID != "p0" ||
		st.Raft == nil || st.Raft.State != "leader" || st.Leader != "p0" || !st.Ready.Ready || st.Broker.Connections != 2 {
		t.Fatalf("status %d %v: %+v", code, err, st)
	}
	var clients admin.Page[admin.Client]
	getJSON(base+"/api/v1/clients", &clients)
	if clients.Total != 2 || clients.Items[0].ClientID != "device-3" || clients.Items[0].Protocol != "3.1.1" ||
		clients.Items[0].KeepAliveSeconds != 30 || clients.Items[1].ClientID != "device-5" || clients.Items[1].Protocol != "5.0" {
		t.Fatalf("clients: %+v", clients)
	}
	var sessions admin.Page[admin.Session]
	getJSON(base+"/api/v1/sessions", &sessions)
	if sessions.Total != 1 || sessions.Items[0].ClientID != "device-5" || sessions.Items[0].Owner != "p0" ||
		!sessions.Items[0].Connected || sessions.Items[0].Subscriptions != 2 {
		t.Fatalf("sessions: %+v", sessions)
	}
	var subs admin.Page[admin.Subscription]
	getJSON(base+"/api/v1/subscriptions?client=device-5", &subs)
	if subs.Total != 2 || subs.Items[0].Filter != "cmd/+/set" || !subs.Items[0].NoLocal || subs.Items[1].QoS != 2 {
		t.Fatalf("subscriptions: %+v", subs)
	}

	// ctl: tables, JSON, the address from the flag or MQCLUSTER_ADMIN.
	env := []string{"MQCLUSTER_ADMIN=" + base}
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"status"}, []string{"p0", "leader", "2 connected"}},
		{[]string{"members"}, []string{"p0 (this node)", "alive", "voter", "leader"}},
		{[]string{"clients"}, []string{"device-3", "3.1.1", "device-5", "5.0"}},
		{[]string{"sessions"}, []string{"device-5", "p0", "3600s"}},
		{[]string{"subscriptions", "device-5"}, []string{"cmd/+/set", "no-local", "fw/#"}},
		{[]string{"--admin", base, "subscriptions"}, []string{"device-5", "fw/#"}},
	} {
		out, err := ctlCmd(t, env, tc.args...)
		if err != nil {
			t.Fatalf("ctl %v: %v\n%s", tc.args, err, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("ctl %v: no %q in\n%s", tc.args, w, out)
			}
		}
	}
	out, err := ctlCmd(t, env, "-o", "json", "clients")
	var page admin.Page[admin.Client]
	if err != nil || json.Unmarshal([]byte(out), &page) != nil || page.Total != 2 {
		t.Fatalf("ctl -o json clients: %v\n%s", err, out)
	}
	if out, err := ctlCmd(t, env, "subscriptions", "nobody"); err == nil || !strings.Contains(out, "404") {
		t.Fatalf("ctl subscriptions of an unknown client: %v\n%s", err, out)
	}
	if out, err := ctlCmd(t, nil, "--admin", "127.0.0.1:1", "status"); err == nil || !strings.Contains(out, "admin.address") {
		t.Fatalf("ctl against nothing: %v\n%s", err, out)
	}
}

// connDropped reports whether the address refuses connections now.
func connDropped(addr string) bool {
	nc, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	nc.Close()
	return false
}
