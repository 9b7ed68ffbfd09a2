package bench

import (
	"bufio"
	"strings"
	"testing"
	"time"
)

func TestLastRaftState(t *testing.T) {
	for _, tc := range []struct{ log, want string }{
		{"", ""},
		{"time=x level=INFO msg=\"cluster node started\"\n", ""},
		{"level=INFO msg=\"entering follower state\" follower=n1\nlevel=INFO msg=\"entering candidate state\" node=n1 term=2\nlevel=INFO msg=\"entering leader state\" leader=n1\n", "leader"},
		{"msg=\"entering leader state\"\nmsg=\"entering follower state\"\n", "follower"},
		{"msg=\"entering candidate state\"\nmsg=\"heartbeat timeout reached, starting election\"\n", "candidate"},
	} {
		if got := lastRaftState(bufio.NewScanner(strings.NewReader(tc.log))); got != tc.want {
			t.Errorf("lastRaftState(%q) = %q, want %q", tc.log, got, tc.want)
		}
	}
}

func TestClusterVerdicts(t *testing.T) {
	results := []Result{
		{Broker: rowSingle, Scenario: "fanin", Sent: 10, Throughput: 1000},
		{Broker: rowCluster, Scenario: "fanin", Sent: 10, Throughput: 800},
		{Broker: rowSingle, Scenario: "qos1", Sent: 10, Throughput: 1000},
		{Broker: rowCluster, Scenario: "qos1", Sent: 10, Throughput: 500},
		{Broker: rowSingle, Scenario: "latency-q0", Sent: 10, P50: 50 * time.Microsecond},
		{Broker: rowCluster, Scenario: "latency-q0", Sent: 10, P50: 2 * time.Millisecond},
		{Broker: rowCluster, Scenario: "subrate", Ops: 100, OpsPerSec: 6000, P99: 20 * time.Millisecond},
		{Broker: rowCluster, Scenario: "storm", Ops: 100, Elapsed: 2 * time.Second},
		{Broker: rowCluster, Scenario: "failover", Ops: 3, Elapsed: 4 * time.Second, Leader: "n0", Survivor: "n1"},
	}
	got := clusterVerdicts(results)
	want := []string{"fanin:", "met", "qos1:", "MISSED", "latency-q0:", "MISSED", "subrate:", "met; SUBACK", "storm:", "met", "failover:", "MISSED"}
	if len(got) != len(want)/2 {
		t.Fatalf("got %d lines, want %d:\n%s", len(got), len(want)/2, strings.Join(got, "\n"))
	}
	for i, l := range got {
		if !strings.HasPrefix(l, want[2*i]) || !strings.Contains(l, want[2*i+1]) {
			t.Errorf("line %d = %q, want prefix %q containing %q", i, l, want[2*i], want[2*i+1])
		}
	}
}
