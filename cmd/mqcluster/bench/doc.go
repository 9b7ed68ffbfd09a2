// Package bench is the side-by-side benchmark of mqcluster against Debian's
// Mosquitto behind `mqcluster bench` and `make bench`.
//
// It owns two things: a lean MQTT 3.1.1 load generator (raw TCP, bufio, the
// broker/packet codec for the handshake and hand-encoded PUBLISH frames on
// the hot path) and the driver that starts each broker as a child process on
// a free loopback port, runs the identical load against each, and reports
// throughput, latency, loss, broker CPU per delivered message and memory per
// idle connection, with the ratios mqcluster/mosquitto.
//
// With --cluster N it runs cluster mode instead (cluster*.go): N
// `mqcluster serve` nodes forming one cluster on loopback, against a single
// node, for cross-node delivery (publishers on one node, the subscriber on
// another), the latency that adds, the rate of subscribes that set routes
// through Raft, a connect storm spread over the nodes, and the time from
// killing the Raft leader to a subscribe granted again.
//
// It measures and reports; it never asserts performance targets. It fails
// only when a broker cannot be started or dies, or a QoS 1 flow loses
// messages. It talks to brokers over TCP and, with --transports
// (transports.go), to mqcluster over TLS and WebSocket as well, through the
// client side of broker/listener; package broker is imported by its tests
// alone, which run the generator against an in-process broker.Server.
package bench
