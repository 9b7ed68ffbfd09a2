// Command jepsen-lite runs real mqcluster processes, each in its own Linux
// network namespace, injects faults on a seeded schedule while MQTT clients
// record every operation, and checks the history for lost, duplicated and
// reordered messages, retained values that diverge or come back, split
// brain, wills fired other than once, and nodes that do not recover.
//
// The network: a hub namespace holds a bridge; every node's namespace is
// plugged into it with a veth pair, and so is the root namespace, where the
// clients run. Partitions are nftables drop rules inside the node
// namespaces that name the other nodes' addresses only, so a partition cuts
// node-to-node traffic and never a client's. Namespaces, links and
// processes carry the prefix mqjl-<pid>- (links mqjl<pid>); a run removes
// what an earlier run whose process is gone left behind.
//
// Files, one concern each:
//
//	main.go            flags, the run's phases
//	matrix.go          the full matrix: one run per fault family, then mixed
//	netns.go           namespaces, bridge, veth, cleanup of stale runs
//	netfault.go        nftables partitions and tc rate limits
//	cluster.go         mqcluster processes: start, kill, pause, logs
//	nemesis.go         the fault families and how each starts and stops
//	schedule.go        the seeded schedule that --seed replays
//	regress.go         fixed-schedule scenarios that reproduce found anomalies
//	liveness.go        connect + subscribe + cross-node publish probes
//	history.go         the JSON-lines history of operations
//	client.go          MQTT 5.0 and 3.1.1 clients behind one interface
//	workload_*.go      queue, qos2, retained, subs, takeover, wills
//	checker_*.go       one checker per property, over a history
//	report.go          results.json, summary, timeline
//
// Run it as root: go run ./test/jepsen-lite --help.
package main
