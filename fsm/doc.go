// Package fsm owns the replicated state machine of the cluster: the
// raft.FSM that decodes, dispatches and applies Command log entries
// (proto/mqcluster/v1), takes point-in-time snapshots, writes them as a
// versioned stream and restores them; and the read-only queries the node
// makes against the applied state.
//
// The state it owns is the cluster metadata: routes (which node has
// subscribers for which filter and share group), persistent-session claims
// with their epochs and subscriptions, the wills of every connection, the
// retained messages, and nodes that are down or removed. It never holds
// messages in flight, queues or connections.
//
// Apply must never read a clock, draw a random number, let map iteration
// order reach its output, do I/O, log, or block on a channel: it depends on
// the state, the command and the log index only, so every replica reaches
// the same state. An entry it cannot decode, or an op it does not know and
// may not ignore, halts it with a *FatalError instead of diverging; the node
// must then stop.
//
// It must never import broker (except its leaves broker/topic and
// broker/packet), node or transport. It knows nothing of networks, Raft
// peers or MQTT connections; the node proposes commands and acts on what
// the queries and the change notifications tell it.
package fsm
