// Package admin owns a node's operator-facing HTTP endpoints: Prometheus
// metrics (/metrics), the health endpoints (/healthz, /readyz) and a JSON
// admin API under /api/v1 (cluster status, members, clients, sessions,
// subscriptions; leave and remove). docs/operations.md describes them all.
//
// It reads the broker and the cluster node through the small interfaces
// Broker and Cluster, which *broker.Server and *node.Node satisfy; the
// command wires them together. Metrics are collected when they are scraped,
// from counters and state the broker and the node already keep: nothing
// here runs on the message path.
//
// It never changes the broker's or the cluster's state except through the
// two operator commands (leave, remove), never serves MQTT, and never logs
// tokens.
package admin
