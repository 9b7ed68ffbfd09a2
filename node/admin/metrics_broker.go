package admin

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mqcluster/mqcluster/broker"
)

// ns prefixes every metric name.
const ns = "mqcluster_"

// metricSet builds the descriptions of one collector and describes them.
type metricSet struct{ descs []*prometheus.Desc }

func (m *metricSet) desc(name, help string, labels ...string) *prometheus.Desc {
	d := prometheus.NewDesc(ns+name, help, labels, nil)
	m.descs = append(m.descs, d)
	return d
}

func (m *metricSet) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range m.descs {
		ch <- d
	}
}

// statMetric is one broker counter or gauge read from broker.Stats.
type statMetric struct {
	desc *prometheus.Desc
	typ  prometheus.ValueType
	get  func(*broker.Stats) int64
}

// brokerCollector reads the broker's counters and walks its sessions when
// scraped.
type brokerCollector struct {
	metricSet
	b       Broker
	version string

	info, refused, pubIn, msgsOut, dropped                  *prometheus.Desc
	sessions, queued, inflight, subs, shared, retained, drn *prometheus.Desc
	stats                                                   []statMetric
}

func newBrokerCollector(b Broker, version string) *brokerCollector {
	c := &brokerCollector{b: b, version: version}
	c.info = c.desc("build_info", "Always 1; the version label is the build's.", "version")
	c.refused = c.desc("connections_refused_total", "Connections refused: over limits.max_connections or max_connections_per_ip (limit), or CONNECTs over limits.connect_rate (rate).", "reason")
	c.pubIn = c.desc("publish_received_total", "PUBLISH packets received from this node's clients, by QoS.", "qos")
	c.msgsOut = c.desc("messages_sent_total", "PUBLISH packets sent to this node's clients, by QoS.", "qos")
	c.dropped = c.desc("messages_dropped_total", "Messages not delivered to a subscriber because of a limit, by reason: slow_consumer (QoS 0 over a full write queue), queue_full (session queue), expired (message expiry), too_large (over the client's maximum packet size).", "reason")
	c.sessions = c.desc("sessions", "Sessions held by this node: connected, or offline (persistent, without a connection).", "state")
	c.queued = c.desc("session_queued_messages", "Messages waiting in the session queues of this node.")
	c.inflight = c.desc("session_inflight_messages", "Messages sent to this node's clients and not yet acknowledged.")
	c.subs = c.desc("subscriptions", "Subscriptions of the sessions held by this node.")
	c.shared = c.desc("shared_subscriptions", "Shared ($share) subscriptions of the sessions held by this node.")
	c.retained = c.desc("retained_messages", "Retained messages (the cluster's replicated set on a cluster node).")
	c.drn = c.desc("draining", "1 while the broker drains its clients for a shutdown.")
	counter := func(name, help string, get func(*broker.Stats) int64) {
		c.stats = append(c.stats, statMetric{c.desc(name, help), prometheus.CounterValue, get})
	}
	gauge := func(name, help string, get func(*broker.Stats) int64) {
		c.stats = append(c.stats, statMetric{c.desc(name, help), prometheus.GaugeValue, get})
	}
	gauge("connections", "Clients connected to this node.", func(s *broker.Stats) int64 { return s.Connected.Load() })
	gauge("connections_max", "Most clients connected at once since the start.", func(s *broker.Stats) int64 { return s.MaxConnected.Load() })
	counter("connections_total", "Connections accepted.", func(s *broker.Stats) int64 { return s.ConnectionsTotal.Load() })
	counter("messages_received_total", "Messages this node routed: from its clients, forwarded by other nodes, and wills.", func(s *broker.Stats) int64 { return s.MessagesIn.Load() })
	counter("bytes_received_total", "Bytes read from client connections.", func(s *broker.Stats) int64 { return s.BytesIn.Load() })
	counter("bytes_sent_total", "Bytes written to client connections.", func(s *broker.Stats) int64 { return s.BytesOut.Load() })
	counter("packets_received_total", "MQTT control packets received from clients.", func(s *broker.Stats) int64 { return s.PacketsIn.Load() })
	counter("packets_sent_total", "MQTT control packets sent to clients.", func(s *broker.Stats) int64 { return s.PacketsOut.Load() })
	counter("publish_rate_limited_total", "PUBLISHes over limits.max_publish_rate: refused, dropped or held back.", func(s *broker.Stats) int64 { return s.RateLimitedPublishes.Load() })
	counter("protocol_errors_total", "Connections closed for a protocol violation.", func(s *broker.Stats) int64 { return s.ProtocolErrors.Load() })
	counter("slow_consumers_total", "Clients disconnected because their queue of control packets was full.", func(s *broker.Stats) int64 { return s.SlowConsumers.Load() })
	counter("panics_total", "Connections closed by a recovered panic.", func(s *broker.Stats) int64 { return s.Panics.Load() })
	counter("forward_failures_total", "Messages some other node did not acknowledge.", func(s *broker.Stats) int64 { return s.ForwardFailures.Load() })
	counter("passed_on_total", "Messages sent on to a session that moved to another node, or handed on from a copy of it this node kept.", func(s *broker.Stats) int64 { return s.PassedOn.Load() })
	counter("pass_on_failures_total", "Messages for a session that moved that its new node did not acknowledge in the end.", func(s *broker.Stats) int64 { return s.PassOnFailures.Load() })
	counter("holds_timed_out_total", "Session queues released after the hold bound while another node could still hold older messages of the session.", func(s *broker.Stats) int64 { return s.HoldsTimedOut.Load() })
	counter("retain_failures_total", "Retained changes the cluster did not record.", func(s *broker.Stats) int64 { return s.RetainFailures.Load() })
	return c
}

func (c *brokerCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.b.Stats()
	ch <- prometheus.MustNewConstMetric(c.info, prometheus.GaugeValue, 1, c.version)
	for _, m := range c.stats {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, float64(m.get(st)))
	}
	counter := func(d *prometheus.Desc, v int64, label string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), label)
	}
	counter(c.refused, st.RefusedConnections.Load(), "limit")
	counter(c.refused, st.RateLimitedConnects.Load(), "rate")
	for q := range st.PublishesInQoS {
		counter(c.pubIn, st.PublishesInQoS[q].Load(), strconv.Itoa(q))
		counter(c.msgsOut, st.MessagesOutQoS[q].Load(), strconv.Itoa(q))
	}
	counter(c.dropped, st.DroppedQoS0.Load(), "slow_consumer")
	counter(c.dropped, st.DroppedQueueFull.Load(), "queue_full")
	counter(c.dropped, st.DroppedExpired.Load(), "expired")
	counter(c.dropped, st.DroppedTooLarge.Load(), "too_large")

	f := c.b.Figures()
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	gauge(c.sessions, f.Connected, "connected")
	gauge(c.sessions, f.Offline, "offline")
	gauge(c.queued, f.Queued)
	gauge(c.inflight, f.Inflight)
	gauge(c.subs, f.Subscriptions)
	gauge(c.shared, f.SharedSubscriptions)
	if f.RetainedKnown {
		gauge(c.retained, f.Retained)
	}
	draining := int64(0)
	if c.b.Draining() {
		draining = 1
	}
	gauge(c.drn, draining)
}
