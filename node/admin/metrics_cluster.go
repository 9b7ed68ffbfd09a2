package admin

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mqcluster/mqcluster/node"
)

// clusterCollector reads Raft, the replicated state, gossip and the
// transport when scraped.
type clusterCollector struct {
	metricSet
	c Cluster

	raftState, leader, leaderKnown, term, commit, applied, lastLog, fsmApplied *prometheus.Desc
	lastContact, servers, propose, commitDur, apply, lagging                   *prometheus.Desc
	fsmSessions, fsmConnected, routes, routeEntries, wills, retained, nodes    *prometheus.Desc
	rejected, ignored, restores, halted, members, health                       *prometheus.Desc

	peerConnected, peerSilence, peerApplied, fwdEnqueued, fwdSent, fwdAcked *prometheus.Desc
	fwdRetries, fwdDropped, fwdReconnects, outboxMsgs, outboxBytes          *prometheus.Desc
	fwdLatency, fwdLatencyMax, fwdReceived, fwdDuplicates, fwdDeliverErrors *prometheus.Desc
	fwdUnknownPeer, refused                                                 *prometheus.Desc
}

func newClusterCollector(c Cluster) *clusterCollector {
	m := &clusterCollector{c: c}
	d := m.desc
	m.raftState = d("raft_state", "1 for this node's Raft state (leader, follower, candidate, shutdown), 0 for the others.", "state")
	m.leader = d("raft_leader", "1 when this node leads.")
	m.leaderKnown = d("raft_leader_known", "1 when this node knows a leader it has heard from lately.")
	m.term = d("raft_term", "Raft's current term.")
	m.commit = d("raft_commit_index", "Raft's commit index as this node knows it.")
	m.applied = d("raft_applied_index", "Last Raft index applied on this node.")
	m.lastLog = d("raft_last_log_index", "Last index in this node's Raft log.")
	m.fsmApplied = d("fsm_applied_index", "Last command entry the state machine applied.")
	m.lastContact = d("raft_last_contact_seconds", "Seconds since a follower last heard from the leader (0 on the leader; absent before any contact).")
	m.servers = d("raft_servers", "Servers of the Raft configuration, by suffrage.", "suffrage")
	m.propose = d("raft_propose_duration_seconds", "This node's proposals, from the call to the state machine's answer (a follower's go through the leader).")
	m.commitDur = d("raft_commit_duration_seconds", "On the leader: one entry from raft.Apply to committed and applied.")
	m.apply = d("fsm_apply_duration_seconds", "One entry through the state machine.")
	m.lagging = d("routes_lagging_total", "Subscriptions answered before a reachable node reported applying their route.")
	m.fsmSessions = d("cluster_sessions", "Persistent sessions in the replicated state.")
	m.fsmConnected = d("cluster_sessions_connected", "Persistent sessions whose owner has a live connection.")
	m.routes = d("cluster_routes", "Routes (filter, share group) with at least one node.")
	m.routeEntries = d("cluster_route_entries", "Route entries (filter, share group, node).")
	m.wills = d("cluster_wills", "Wills registered in the replicated state.")
	m.retained = d("cluster_retained_messages", "Retained messages in the replicated state.")
	m.nodes = d("cluster_nodes_recorded", "Nodes the replicated state records as down or removed.", "state")
	m.rejected = d("fsm_rejected_total", "Commands the state machine rejected (stale epoch, invalid) since start.")
	m.ignored = d("fsm_ignored_total", "Unknown ignorable commands skipped since start.")
	m.restores = d("fsm_restores_total", "Snapshots restored since start.")
	m.halted = d("fsm_halted", "1 when the state machine stopped on an entry it could not apply.")
	m.members = d("members", "Cluster members by gossip state: alive, suspect, dead (dead, left, or a Raft server gossip does not list).", "state")
	m.health = d("memberlist_health_score", "memberlist's awareness score: 0 is healthy, higher means this node is slow to answer probes.")
	m.peerConnected = d("peer_connected", "1 when the forwarding stream to the peer is open.", "peer")
	m.peerSilence = d("peer_silence_seconds", "Seconds since the peer was last heard on its stream.", "peer")
	m.peerApplied = d("peer_applied_index", "The peer's applied index as it last reported it.", "peer")
	m.fwdEnqueued = d("forward_enqueued_total", "Messages accepted for forwarding to the peer.", "peer")
	m.fwdSent = d("forward_sent_total", "Messages sent to the peer, resends included.", "peer")
	m.fwdAcked = d("forward_acked_total", "Messages the peer acknowledged.", "peer")
	m.fwdRetries = d("forward_retries_total", "Messages resent to the peer after a reconnect.", "peer")
	m.fwdDropped = d("forward_dropped_total", "Messages not delivered to the peer, by reason: outbox_full, unacked, other (too large, peer removed, shutdown).", "peer", "reason")
	m.fwdReconnects = d("forward_reconnects_total", "Forwarding streams opened to the peer after the first.", "peer")
	m.outboxMsgs = d("forward_outbox_messages", "Messages waiting for the peer or not yet acknowledged.", "peer")
	m.outboxBytes = d("forward_outbox_bytes", "Bytes of those messages.", "peer")
	m.fwdLatency = d("forward_latency_seconds", "Send to acknowledgement, moving average over about 8 messages.", "peer")
	m.fwdLatencyMax = d("forward_latency_max_seconds", "Longest send to acknowledgement seen.", "peer")
	m.fwdReceived = d("forward_received_total", "Messages other nodes forwarded to this one.")
	m.fwdDuplicates = d("forward_duplicates_total", "Resent messages received again and not delivered twice.")
	m.fwdDeliverErrors = d("forward_deliver_errors_total", "Forwarded batches this node could not take (resent later).")
	m.fwdUnknownPeer = d("forward_dropped_unknown_peer_total", "Messages for a node that is not a peer.")
	m.refused = d("transport_refused_total", "Calls from nodes that are not members, refused.")
	return m
}

func (m *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	st := m.c.RaftStatus()
	for _, s := range []string{"leader", "follower", "candidate", "shutdown"} {
		gauge(m.raftState, b2f(st.State == s), s)
	}
	gauge(m.leader, b2f(st.State == "leader"))
	gauge(m.leaderKnown, b2f(st.LeaderID != "" && m.c.InContact()))
	gauge(m.term, float64(st.Term))
	gauge(m.commit, float64(st.CommitIndex))
	gauge(m.applied, float64(st.AppliedIndex))
	gauge(m.lastLog, float64(st.LastLogIndex))
	gauge(m.fsmApplied, float64(st.FSMAppliedIndex))
	switch {
	case st.State == "leader":
		gauge(m.lastContact, 0)
	case !st.LastContact.IsZero():
		gauge(m.lastContact, time.Since(st.LastContact).Seconds())
	}
	voters, nonvoters := 0, 0
	for _, s := range st.Servers {
		if s.Voter {
			voters++
		} else {
			nonvoters++
		}
	}
	gauge(m.servers, float64(voters), "voter")
	gauge(m.servers, float64(nonvoters), "nonvoter")
	lat := m.c.Latencies()
	ch <- histogram(m.propose, lat.Propose)
	ch <- histogram(m.commitDur, lat.Commit)
	ch <- histogram(m.apply, lat.Apply)
	counter(m.lagging, float64(m.c.LaggingRoutes()))

	fs := m.c.FSM().Stats()
	gauge(m.fsmSessions, float64(fs.Sessions))
	gauge(m.fsmConnected, float64(fs.Connected))
	gauge(m.routes, float64(fs.Routes))
	gauge(m.routeEntries, float64(fs.RouteEntries))
	gauge(m.wills, float64(fs.Wills))
	gauge(m.retained, float64(fs.Retained))
	gauge(m.nodes, float64(fs.NodesDown), "down")
	gauge(m.nodes, float64(fs.NodesRemoved), "removed")
	counter(m.rejected, float64(fs.Rejected))
	counter(m.ignored, float64(fs.Ignored))
	counter(m.restores, float64(fs.Restores))
	gauge(m.halted, b2f(fs.Halted))

	states := map[string]int{"alive": 0, "suspect": 0, "dead": 0}
	for _, ms := range m.c.Members() {
		switch ms.Gossip {
		case "alive", "suspect":
			states[ms.Gossip]++
		default:
			states["dead"]++
		}
	}
	for s, n := range states {
		gauge(m.members, float64(n), s)
	}
	gauge(m.health, float64(m.c.HealthScore()))

	ts := m.c.TransportStats()
	for _, p := range ts.Peers {
		id := p.NodeID
		gauge(m.peerConnected, b2f(p.Connected), id)
		gauge(m.peerSilence, p.Silence.Seconds(), id)
		gauge(m.peerApplied, float64(p.AppliedIndex), id)
		counter(m.fwdEnqueued, float64(p.Enqueued), id)
		counter(m.fwdSent, float64(p.Sent), id)
		counter(m.fwdAcked, float64(p.Acked), id)
		counter(m.fwdRetries, float64(p.Retried), id)
		counter(m.fwdDropped, float64(p.DroppedFull), id, "outbox_full")
		counter(m.fwdDropped, float64(p.DroppedUnacked), id, "unacked")
		counter(m.fwdDropped, float64(p.Dropped-min(p.Dropped, p.DroppedFull+p.DroppedUnacked)), id, "other")
		counter(m.fwdReconnects, float64(p.Reconnects), id)
		gauge(m.outboxMsgs, float64(p.OutboxDepth), id)
		gauge(m.outboxBytes, float64(p.OutboxBytes), id)
		gauge(m.fwdLatency, p.Latency.Seconds(), id)
		gauge(m.fwdLatencyMax, p.LatencyMax.Seconds(), id)
	}
	counter(m.fwdReceived, float64(ts.Received))
	counter(m.fwdDuplicates, float64(ts.Duplicates))
	counter(m.fwdDeliverErrors, float64(ts.DeliverErrors))
	counter(m.fwdUnknownPeer, float64(ts.DroppedUnknownPeer))
	counter(m.refused, float64(ts.Refused))
}

// histogram turns a node histogram into a Prometheus one, in seconds.
func histogram(d *prometheus.Desc, h node.Histogram) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	for i, b := range h.Bounds {
		buckets[b.Seconds()] = h.Cumulative[i]
	}
	return prometheus.MustNewConstHistogram(d, h.Count, h.Sum.Seconds(), buckets)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
