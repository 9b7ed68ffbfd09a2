package admin

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
)

// After traffic through a broker alone, /metrics shows it: connections,
// PUBLISHes in and out by QoS, bytes, sessions, subscriptions; and the
// figures move with the next messages.
func TestMetricsFollowTraffic(t *testing.T) {
	m := startMember(t, nil, Config{NodeID: "alone", Version: "test"}, true)
	url := m.base + "/metrics"
	sub := dial(t, m.mqtt, "sub", false, 3600)
	sub.subscribe(t, paho.SubscribeOptions{Topic: "m/#", QoS: 1})
	pub := dial(t, m.mqtt, "pub", true, 0)
	for i := range 10 {
		pub.publish(t, fmt.Sprintf("m/%d", i), 1, "x")
	}
	pub.publish(t, "m/zero", 0, "y")
	sub.expect(t, 11)

	want := map[string]float64{
		`mqcluster_connections`:                                 2,
		`mqcluster_connections_total`:                           2,
		`mqcluster_publish_received_total{qos="1"}`:             10,
		`mqcluster_publish_received_total{qos="0"}`:             1,
		`mqcluster_messages_received_total`:                     11,
		`mqcluster_sessions{state="connected"}`:                 2,
		`mqcluster_subscriptions`:                               1,
		`mqcluster_build_info{version="test"}`:                  1,
		`mqcluster_messages_dropped_total{reason="queue_full"}`: 0,
	}
	eventually(t, 5*time.Second, func() error {
		for sample, v := range want {
			if got := metric(t, url, sample); got != v {
				return fmt.Errorf("%s = %v, want %v", sample, got, v)
			}
		}
		// Sent messages are counted once the writer's batch is out.
		if got := metric(t, url, `mqcluster_messages_sent_total{qos="1"}`); got != 10 {
			return fmt.Errorf(`messages_sent_total{qos="1"} = %v, want 10`, got)
		}
		return nil
	})
	bytesIn := metric(t, url, "mqcluster_bytes_received_total")
	bytesOut := metric(t, url, "mqcluster_bytes_sent_total")
	if bytesIn <= 0 || bytesOut <= 0 {
		t.Fatalf("bytes in %v, out %v: want both > 0", bytesIn, bytesOut)
	}
	if metric(t, url, "go_goroutines") <= 0 || metric(t, url, "mqcluster_raft_term") != -1 {
		t.Fatal("want the Go runtime's metrics and no Raft metrics on a broker alone")
	}

	// The next message moves the counters.
	pub.publish(t, "m/more", 2, "z")
	sub.expect(t, 1)
	eventually(t, 5*time.Second, func() error {
		if got := metric(t, url, `mqcluster_publish_received_total{qos="2"}`); got != 1 {
			return fmt.Errorf(`publish_received_total{qos="2"} = %v`, got)
		}
		if got := metric(t, url, `mqcluster_messages_sent_total{qos="1"}`); got != 11 {
			return fmt.Errorf(`messages_sent_total{qos="1"} = %v (granted QoS 1)`, got)
		}
		if got := metric(t, url, "mqcluster_bytes_received_total"); got <= bytesIn {
			return fmt.Errorf("bytes received %v, was %v", got, bytesIn)
		}
		return nil
	})
	// An offline persistent session with a message queued.
	sub.Disconnect(&paho.Disconnect{})
	eventually(t, 5*time.Second, func() error {
		if got := metric(t, url, `mqcluster_sessions{state="offline"}`); got != 1 {
			return fmt.Errorf("offline sessions %v", got)
		}
		return nil
	})
	pub.publish(t, "m/queued", 1, "q")
	eventually(t, 5*time.Second, func() error {
		if got := metric(t, url, "mqcluster_session_queued_messages"); got != 1 {
			return fmt.Errorf("queued messages %v", got)
		}
		return nil
	})
}

// The JSON API lists the clients, sessions and subscriptions of a broker
// alone, with their options, and pages through long lists.
func TestAPIListsClientsSessionsSubscriptions(t *testing.T) {
	m := startMember(t, nil, Config{NodeID: "alone"}, true)
	a := dial(t, m.mqtt, "a-durable", false, 600)
	a.subscribe(t, paho.SubscribeOptions{Topic: "x/+", QoS: 2, NoLocal: true}, paho.SubscribeOptions{Topic: "$share/g/y", QoS: 1})
	dial(t, m.mqtt, "b-ephemeral", true, 0)

	var st Status
	if code := get(t, m.base+"/api/v1/status", &st); code != 200 || st.NodeID != "alone" || st.Cluster || st.Broker.Connections != 2 || !st.Ready.Ready {
		t.Fatalf("status %d: %+v", code, st)
	}
	var clients Page[Client]
	get(t, m.base+"/api/v1/clients", &clients)
	if clients.Total != 2 || clients.Items[0].ClientID != "a-durable" || clients.Items[0].Protocol != "5.0" ||
		clients.Items[0].KeepAliveSeconds != 0 || !clients.Items[0].Persistent || clients.Items[0].Subscriptions != 2 ||
		clients.Items[0].ConnectedAt.IsZero() || !strings.HasPrefix(clients.Items[0].Remote, "127.0.0.1:") {
		t.Fatalf("clients: %+v", clients)
	}
	var sessions Page[Session]
	get(t, m.base+"/api/v1/sessions", &sessions)
	if sessions.Total != 2 || sessions.Items[0].ClientID != "a-durable" || *sessions.Items[0].ExpirySeconds != 600 || sessions.Items[0].Subscriptions != 2 {
		t.Fatalf("sessions: %+v", sessions)
	}
	var subs Page[Subscription]
	get(t, m.base+"/api/v1/subscriptions?client=a-durable", &subs)
	want := []Subscription{
		{ClientID: "a-durable", Filter: "$share/g/y", Group: "g", QoS: 1, Source: "local"},
		{ClientID: "a-durable", Filter: "x/+", QoS: 2, NoLocal: true, Source: "local"},
	}
	if !slices.Equal(subs.Items, want) {
		t.Fatalf("subscriptions:\n got %+v\nwant %+v", subs.Items, want)
	}
	if code := get(t, m.base+"/api/v1/subscriptions?client=nobody", nil); code != http.StatusNotFound {
		t.Fatalf("subscriptions of an unknown client: %d, want 404", code)
	}

	// Pages: one item at a time, following the cursor.
	var ids []string
	after := ""
	for range 3 {
		var p Page[Client]
		get(t, m.base+"/api/v1/clients?limit=1&after="+after, &p)
		for _, c := range p.Items {
			ids = append(ids, c.ClientID)
		}
		if after = p.Next; after == "" {
			break
		}
	}
	if !slices.Equal(ids, []string{"a-durable", "b-ephemeral"}) {
		t.Fatalf("paged clients %v", ids)
	}
	if code := get(t, m.base+"/api/v1/clients?limit=0", nil); code != http.StatusBadRequest {
		t.Fatalf("limit=0: %d, want 400", code)
	}
	// A broker alone is in no cluster: leave and remove are refused.
	resp, err := http.Post(m.base+"/api/v1/leave", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("leave on a broker alone: %d, want 409", resp.StatusCode)
	}
}

// With a token file, /metrics and the API need the bearer token; the
// health endpoints do not.
func TestTokenGuardsMetricsAndAPI(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("s3cret-token\n"), 0o600)
	m := startMember(t, nil, Config{TokenFile: file}, true)
	for _, path := range []string{"/metrics", "/api/v1/status", "/api/v1/clients"} {
		if code := get(t, m.base+path, nil); code != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d, want 401", path, code)
		}
		for tok, want := range map[string]int{"wrong": http.StatusUnauthorized, "s3cret-token": http.StatusOK} {
			req, _ := http.NewRequest(http.MethodGet, m.base+path, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("%s with token %q: %d, want %d", path, tok, resp.StatusCode, want)
			}
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code := get(t, m.base+path, nil); code != http.StatusOK {
			t.Errorf("%s: %d, want 200 without a token", path, code)
		}
	}
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.adm.Reload(); err == nil {
		t.Error("Reload of an empty token file: no error")
	}
}

// A broker without an open listener is alive but not ready; once it
// serves, it is ready; once it drains, not ready again.
func TestReadyzFollowsTheListeners(t *testing.T) {
	m := startMember(t, nil, Config{}, false)
	if code := get(t, m.base+"/healthz", nil); code != http.StatusOK {
		t.Fatalf("healthz %d", code)
	}
	var rd Readiness
	if code := get(t, m.base+"/readyz", &rd); code != http.StatusServiceUnavailable || !slices.Equal(rd.Failed, []string{"listeners"}) {
		t.Fatalf("readyz before serving: %d %+v", code, rd)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go m.srv.Serve(ln)
	eventually(t, 5*time.Second, func() error {
		if code := get(t, m.base+"/readyz", nil); code != http.StatusOK {
			return fmt.Errorf("readyz %d", code)
		}
		return nil
	})
	if err := m.srv.Drain(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if code := get(t, m.base+"/readyz", &rd); code != http.StatusServiceUnavailable || !strings.Contains(rd.Checks[0].Detail, "draining") {
		t.Fatalf("readyz while draining: %d %+v", code, rd)
	}
}
