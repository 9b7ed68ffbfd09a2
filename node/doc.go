// Package node is the composition root of one cluster member: Raft (with
// raft-boltdb log and stable stores and file snapshots under the data
// directory), memberlist discovery with --join seeds and
// --bootstrap-expect, the replicated state machine (fsm), the gRPC
// transport, and the broker's cluster interfaces (broker.Cluster,
// SessionCluster, ShareCluster). See DESIGN.md.
//
// It owns membership decisions: voters change only on an explicit join
// (a node announcing itself) or leave (graceful shutdown with leave, an
// admin command), never on gossip suspicion. It must not implement MQTT
// semantics (broker) or state-machine rules (fsm).
package node
