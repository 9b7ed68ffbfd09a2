package admin

import (
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
)

// startCluster starts three cluster nodes with brokers and admin endpoints
// and waits until each is ready. The first is checked alone first: with
// no leader and no Raft configuration it is not ready.
func startCluster(t *testing.T) []*member {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	n0 := startMember(t, nodeConfig(t, "n0", 3), Config{}, true)
	var rd Readiness
	if code := get(t, n0.base+"/readyz", &rd); code != http.StatusServiceUnavailable ||
		!slices.Contains(rd.Failed, "cluster") || !slices.Contains(rd.Failed, "leader") || slices.Contains(rd.Failed, "listeners") {
		t.Fatalf("readyz of one node of three: %d %+v", code, rd)
	}
	ms := []*member{n0}
	for _, id := range []string{"n1", "n2"} {
		ms = append(ms, startMember(t, nodeConfig(t, id, 3, n0.nd.GossipAddr()), Config{}, true))
	}
	eventually(t, 20*time.Second, func() error {
		for _, m := range ms {
			var rd Readiness
			if code := get(t, m.base+"/readyz", &rd); code != http.StatusOK {
				return fmt.Errorf("%s: readyz %d %+v", m.nd.ID(), code, rd)
			}
			if n := len(m.nd.TransportStats().Peers); n != 2 {
				return fmt.Errorf("%s has %d transport peers", m.nd.ID(), n)
			}
		}
		return nil
	})
	return ms
}

// leaderOf returns the index of the member that leads.
func leaderOf(t *testing.T, ms []*member) int {
	t.Helper()
	for i, m := range ms {
		if m.nd != nil && m.nd.IsLeader() {
			return i
		}
	}
	t.Fatal("no leader")
	return -1
}

// /readyz is 503 before a leader exists (above) and again once the
// cluster lost its quorum; the status and the metrics show Raft, the
// members and the forwarding between nodes.
func TestReadyzAndClusterStatus(t *testing.T) {
	ms := startCluster(t)
	li := leaderOf(t, ms)
	var st Status
	get(t, ms[0].base+"/api/v1/status", &st)
	if !st.Cluster || st.Raft == nil || st.Leader != ms[li].nd.ID() || len(st.Members) != 3 || !st.Ready.Ready {
		t.Fatalf("status: %+v", st)
	}
	for _, m := range st.Members {
		if m.Gossip != "alive" || m.Raft != "voter" || m.Leader != (m.ID == st.Leader) || m.Self != (m.ID == "n0") || m.GRPCAddr == "" {
			t.Errorf("member %+v", m)
		}
	}

	// Traffic across nodes shows in the forwarding figures per peer.
	sub := dial(t, ms[1].mqtt, "sub", true, 0)
	sub.subscribe(t, paho.SubscribeOptions{Topic: "c/#", QoS: 1})
	pub := dial(t, ms[0].mqtt, "pub", true, 0)
	for i := range 5 {
		pub.publish(t, fmt.Sprintf("c/%d", i), 1, "x")
	}
	sub.expect(t, 5)
	url := ms[0].base + "/metrics"
	eventually(t, 5*time.Second, func() error {
		if got := metric(t, url, `mqcluster_forward_acked_total{peer="n1"}`); got < 5 {
			return fmt.Errorf("forward acked to n1: %v", got)
		}
		return nil
	})
	leaders := 0.0
	for _, m := range ms {
		leaders += metric(t, m.base+"/metrics", `mqcluster_raft_state{state="leader"}`)
	}
	checks := map[string]func(float64) bool{
		`mqcluster_members{state="alive"}`:                                func(v float64) bool { return v == 3 },
		`mqcluster_raft_servers{suffrage="voter"}`:                        func(v float64) bool { return v == 3 },
		`mqcluster_raft_leader_known`:                                     func(v float64) bool { return v == 1 },
		`mqcluster_raft_commit_index`:                                     func(v float64) bool { return v > 0 },
		`mqcluster_fsm_apply_duration_seconds_count`:                      func(v float64) bool { return v > 0 },
		`mqcluster_peer_connected{peer="n2"}`:                             func(v float64) bool { return v == 1 },
		`mqcluster_cluster_routes`:                                        func(v float64) bool { return v >= 1 },
		`mqcluster_forward_dropped_total{peer="n1",reason="outbox_full"}`: func(v float64) bool { return v == 0 },
		`mqcluster_memberlist_health_score`:                               func(v float64) bool { return v >= 0 },
	}
	for sample, ok := range checks {
		if v := metric(t, url, sample); !ok(v) {
			t.Errorf("%s = %v", sample, v)
		}
	}
	// n1 proposed the subscriber's route; the leader committed it.
	if v := metric(t, ms[1].base+"/metrics", "mqcluster_raft_propose_duration_seconds_count"); v < 1 {
		t.Errorf("raft_propose_duration_seconds_count on n1 = %v", v)
	}
	if v := metric(t, ms[li].base+"/metrics", "mqcluster_raft_commit_duration_seconds_count"); v < 1 {
		t.Errorf("raft_commit_duration_seconds_count on the leader = %v", v)
	}
	if leaders != 1 {
		t.Errorf("raft_state{state=leader} summed over the nodes: %v, want 1", leaders)
	}

	// Two of three nodes gone: the last one has no quorum and says so.
	last := ms[(li+1)%3]
	for _, m := range ms {
		if m != last {
			m.close()
		}
	}
	eventually(t, 20*time.Second, func() error {
		var rd Readiness
		if code := get(t, last.base+"/readyz", &rd); code != http.StatusServiceUnavailable || !slices.Contains(rd.Failed, "leader") {
			return fmt.Errorf("readyz without quorum: %d %+v", code, rd)
		}
		return nil
	})
	if got := metric(t, last.base+"/metrics", "mqcluster_raft_leader_known"); got != 0 {
		t.Errorf("raft_leader_known without quorum: %v", got)
	}
}

// The sessions list is the cluster's: a persistent session held by one
// node shows on every node with its owner, and its subscriptions as the
// cluster recorded them; the owner lists them as its own.
func TestSessionsAcrossTheCluster(t *testing.T) {
	ms := startCluster(t)
	c := dial(t, ms[1].mqtt, "durable", false, 900)
	c.subscribe(t, paho.SubscribeOptions{Topic: "s/+", QoS: 1, RetainAsPublished: true})
	eventually(t, 10*time.Second, func() error {
		var p Page[Session]
		get(t, ms[0].base+"/api/v1/sessions", &p)
		if p.Total != 1 || p.Items[0].ClientID != "durable" || p.Items[0].Owner != "n1" || !p.Items[0].Connected ||
			p.Items[0].Subscriptions != 1 || *p.Items[0].ExpirySeconds != 900 || p.Items[0].Epoch == 0 {
			return fmt.Errorf("sessions on n0: %+v", p)
		}
		var subs Page[Subscription]
		get(t, ms[0].base+"/api/v1/subscriptions?client=durable", &subs)
		want := []Subscription{{ClientID: "durable", Filter: "s/+", QoS: 1, RetainAsPublished: true, Source: "cluster"}}
		if !slices.Equal(subs.Items, want) {
			return fmt.Errorf("subscriptions on n0: %+v", subs.Items)
		}
		return nil
	})
	var subs Page[Subscription]
	get(t, ms[1].base+"/api/v1/subscriptions?client=durable", &subs)
	if len(subs.Items) != 1 || subs.Items[0].Source != "local" {
		t.Fatalf("subscriptions on the owner: %+v", subs.Items)
	}
	var local Page[Session]
	get(t, ms[1].base+"/api/v1/sessions?local=true", &local)
	if local.Total != 1 || local.Items[0].Queued == nil {
		t.Fatalf("local sessions of the owner: %+v", local)
	}
}

// DELETE /api/v1/members/{id} removes a node that is gone for good, even
// asked of a follower (it goes through the leader); removing itself is
// refused (it should leave instead).
func TestRemoveMember(t *testing.T) {
	ms := startCluster(t)
	li := leaderOf(t, ms)
	gone := ms[(li+1)%3]
	asked := ms[(li+2)%3] // a follower
	id := gone.nd.ID()
	gone.close()

	del := func(m *member, id string) int {
		req, _ := http.NewRequest(http.MethodDelete, m.base+"/api/v1/members/"+id, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := del(asked, asked.nd.ID()); code != http.StatusBadRequest {
		t.Fatalf("removing itself: %d, want 400", code)
	}
	if code := del(asked, "nosuchnode"); code != http.StatusNotFound {
		t.Fatalf("removing an unknown node: %d, want 404", code)
	}
	if code := del(asked, id); code != http.StatusOK {
		t.Fatalf("remove %s through follower %s: %d", id, asked.nd.ID(), code)
	}
	eventually(t, 10*time.Second, func() error {
		var st Status
		get(t, ms[li].base+"/api/v1/status", &st)
		for _, m := range st.Members {
			if m.ID == id && m.Raft != "" {
				return fmt.Errorf("%s still in the Raft configuration: %+v", id, m)
			}
		}
		return nil
	})
}
