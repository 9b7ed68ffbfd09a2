// Package transport owns the gRPC services between the nodes of a cluster
// (proto/mqcluster/v1/transport.proto): the publish-forwarding stream, one
// per peer, with acknowledgements, resends and the Raft applied index of
// each side; proposing a Raft command to the leader; session takeover;
// join and leave; and the admin status. One gRPC server per node, one client
// connection per peer.
//
// It speaks in protobuf messages of proto/mqcluster/v1 and small Go types
// (forwarded messages travel in batches of its own packed layout,
// message.go), and declares the interfaces it calls (Deliverer, Proposer,
// SessionHandler, Membership, StatusProvider); the node implements them.
// It must never import broker, fsm or node, and it never looks inside what
// it carries (commands, MQTT properties, session state are opaque bytes).
//
// It is the only package that speaks gRPC status codes: every error that
// leaves it is one of its sentinel errors (or a context error), wrapped
// with %w. It holds no message longer than until the peer acknowledged it
// or the bound (Config.AckTimeout, Config.MaxAttempts) passed; nothing is
// dropped without the caller's done callback saying so.
//
// Hardening against junk on the cluster port (BAD-INPUT row 27): bounded
// message and header sizes, bounded concurrent streams per connection, a
// keepalive enforcement policy, handshake and handler timeouts, recovered
// panics, optional mutual TLS with a cluster CA, and a caller that is not a
// cluster member (Handlers.AllowPeer) is refused.
package transport
