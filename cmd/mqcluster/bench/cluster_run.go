package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Scenario names of cluster mode (--cluster N), in the order they run:
// fanin, qos1 and latency are the flows of the same name with the
// publishers on node A and the subscribers on node B; failover comes last,
// as it leaves the cluster a node short.
var clusterScenarios = []string{"fanin", "qos1", "latency", "subrate", "storm", "failover"}

// Row names of cluster mode.
const (
	rowSingle  = "single"  // `mqcluster serve`, no cluster flags
	rowCluster = "cluster" // N nodes; flows go from node A to node B
)

// The targets of cluster mode, reported against and never asserted.
const (
	targetCrossRatio   = 0.7                    // cluster/single delivered msg/s, at least
	targetAddedP50     = time.Millisecond       // cluster p50 - single p50, under
	targetSubRate      = 5000.0                 // subscribes/s, at least
	targetSubP99       = 100 * time.Millisecond // SUBACK p99, under
	targetStormElapsed = 10 * time.Second       // all storm clients subscribed, under
	targetFailover     = 3 * time.Second        // leader killed to subscribe granted, under
)

// runCluster is Run in cluster mode: it starts one cluster of cfg.Cluster
// nodes for the whole run, and a fresh single node for each comparison.
func runCluster(ctx context.Context, cfg *Config, bins brokerBins, out io.Writer) error {
	nofile, err := raiseNoFile()
	if err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	}
	if slices.Contains(cfg.Scenarios, "storm") && nofile < uint64(cfg.StormClients)+256 {
		return fmt.Errorf("RLIMIT_NOFILE is %d: %d storm clients need at least %d (raise the hard limit, or lower --storm-clients)",
			nofile, cfg.StormClients, cfg.StormClients+256)
	}
	rep := &Report{Date: time.Now().UTC(), Config: cfg, Machine: Machine{
		CPUs: runtime.NumCPU(), Kernel: kernelRelease(), GoVersion: runtime.Version(),
		Versions: map[string]string{MQCluster: brokerVersion(MQCluster, bins.mqcluster)},
		Binaries: map[string]string{MQCluster: bins.mqcluster}, LoadAvgAtStart: loadAvg(), NoFile: nofile}}
	flows := cfg.flows()
	bins.mosquittoMaxQueued = 10_000_000
	for _, f := range flows {
		bins.mosquittoMaxQueued = max(bins.mosquittoMaxQueued, 2*f.Messages*max(f.Subscribers, 1))
	}
	rep.MQClusterDataDir, rep.MQClusterQueueFlags = bins.mqclusterDataDir, bins.mqclusterQueueFlags
	printClusterHeader(out, rep)

	t0 := time.Now()
	c, err := startCluster(ctx, bins, cfg.Cluster)
	if err != nil {
		return fmt.Errorf("%w: %w", errStart, err)
	}
	fmt.Fprintf(out, "cluster of %d nodes ready (a subscribe granted on each) %s after the start\n", cfg.Cluster, dur(time.Since(t0)))
	defer c.stop()
	addrs := c.addrs()

	r := newRunner(cfg.Stall)
	var failures []error
	fail := func(rows ...Result) {
		for _, res := range rows {
			if res.Err != "" {
				failures = append(failures, fmt.Errorf("%s on %s: %s", res.Scenario, res.Broker, res.Err))
			}
		}
	}
	// single runs fn against a fresh single node.
	single := func(scenario string, fn func(b *brokerProc) (Result, error)) Result {
		b, err := startBroker(ctx, MQCluster, bins)
		if err != nil {
			return Result{Broker: rowSingle, Scenario: scenario, Err: fmt.Sprintf("%v: %v", errStart, err)}
		}
		res, err := fn(b)
		err = errors.Join(err, b.stop())
		res.Broker = rowSingle
		if err != nil && res.Err == "" {
			res.Err = err.Error()
		}
		return res
	}
	onCluster := func(res Result, err error) Result {
		res.Broker = rowCluster
		if err != nil && res.Err == "" {
			res.Err = err.Error()
		}
		return res
	}

	for i, f := range flows {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fmt.Fprintf(out, "\n== %s\n   cluster: publishers on node A (%s), subscriber on node B (%s)\n", f.Title, c.ids[0], c.ids[1])
		runSingle := func() Result {
			return single(f.Name, func(b *brokerProc) (Result, error) { return r.runFlow(ctx, b.target(), f) })
		}
		runCl := func() Result {
			return onCluster(r.runFlow(ctx, Target{Name: rowCluster, Addr: addrs[0], SubAddr: addrs[1]}, f))
		}
		var rows []Result
		// Alternate which goes first, as Run does.
		if i%2 == 0 {
			rows = []Result{runSingle(), runCl()}
		} else {
			cl := runCl()
			rows = []Result{runSingle(), cl}
		}
		fail(rows...)
		printClusterFlow(out, rows)
		rep.Results = append(rep.Results, rows...)
	}
	if slices.Contains(cfg.Scenarios, "subrate") && ctx.Err() == nil {
		fmt.Fprintf(out, "\n== subscribe rate: %d connections (round-robin over the nodes), each SUBSCRIBE to a new filter after the last SUBACK, %d subscribes\n",
			cfg.SubConns, cfg.Subscribes)
		rows := []Result{
			single("subrate", func(b *brokerProc) (Result, error) {
				return r.runSubRate(ctx, rowSingle, []string{b.addr}, cfg.SubConns, cfg.Subscribes)
			}),
			onCluster(r.runSubRate(ctx, rowCluster, addrs, cfg.SubConns, cfg.Subscribes)),
		}
		fail(rows...)
		printOps(out, rows, "subscribes")
		rep.Results = append(rep.Results, rows...)
	}
	if slices.Contains(cfg.Scenarios, "storm") && ctx.Err() == nil {
		fmt.Fprintf(out, "\n== connect storm: %d clients (round-robin over the nodes) each CONNECT then SUBSCRIBE to its own topic, %d at once\n",
			cfg.StormClients, cfg.StormInFlight)
		rows := []Result{
			single("storm", func(b *brokerProc) (Result, error) {
				return r.runStorm(ctx, rowSingle, []string{b.addr}, cfg.StormClients, cfg.StormInFlight)
			}),
			onCluster(r.runStorm(ctx, rowCluster, addrs, cfg.StormClients, cfg.StormInFlight)),
		}
		fail(rows...)
		printOps(out, rows, "clients")
		rep.Results = append(rep.Results, rows...)
	}
	if slices.Contains(cfg.Scenarios, "failover") && ctx.Err() == nil {
		fmt.Fprintln(out, "\n== failover: kill -9 the Raft leader (the node whose log last says \"entering leader state\"), then CONNECT+SUBSCRIBE on a survivor until granted")
		res := onCluster(r.runFailover(ctx, rowCluster, c))
		fail(res)
		tw := newTable(tabwriter.AlignRight)
		fmt.Fprintln(tw, "killed\tasked\ttries\tkill to SUBACK\tlast try\t")
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t\n", res.Leader, res.Survivor, res.Ops, dur(res.Elapsed), dur(res.P50))
		tw.print(out)
		printErrs(out, []Result{res})
		rep.Results = append(rep.Results, res)
	}
	if err := c.stop(); err != nil {
		failures = append(failures, err)
	}
	rep.Machine.LoadAvgAtEnd = loadAvg()
	printClusterSummary(out, rep.Results)
	fmt.Fprintf(out, "load average at the end: %s\n", rep.Machine.LoadAvgAtEnd)
	for _, err := range failures {
		rep.Failures = append(rep.Failures, err.Error())
	}
	if cfg.JSON != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(cfg.JSON, append(b, '\n'), 0o644); err != nil {
			failures = append(failures, err)
		}
	}
	if len(failures) > 0 {
		fmt.Fprintln(out, "\nFAILED:")
		for _, err := range failures {
			fmt.Fprintln(out, " -", strings.ReplaceAll(err.Error(), "\n", "\n   "))
		}
		return fmt.Errorf("bench: %d failure(s)", len(failures))
	}
	return nil
}

func printClusterHeader(out io.Writer, rep *Report) {
	m := rep.Machine
	cfg := rep.Config
	fmt.Fprintf(out, "mqcluster bench --cluster %d, %s\n", cfg.Cluster, rep.Date.Format(time.RFC3339))
	fmt.Fprintf(out, "machine: %d CPUs, Linux %s, %s, RLIMIT_NOFILE %d, load average %s\n",
		m.CPUs, m.Kernel, m.GoVersion, m.NoFile, m.LoadAvgAtStart)
	fmt.Fprintf(out, "mqcluster: %s\n", m.Versions[MQCluster])
	fmt.Fprintf(out, "cluster: %d x serve --listen 127.0.0.1:PORT --data-dir TMPDIR/data --node-id nI --bootstrap-expect %d --gossip-addr/--raft-addr/--grpc-addr 127.0.0.1:PORT (--join node n0), all on this machine\n",
		cfg.Cluster, cfg.Cluster)
	fmt.Fprintln(out, "single: serve --listen 127.0.0.1:PORT --data-dir TMPDIR/data (no cluster flags), fresh for each comparison; both get the same queue flags")
	fmt.Fprintln(out, "The cluster is started once and serves every scenario; failover, last, kills its leader.")
}

// printClusterFlow prints one flow's table: single node, cluster and the
// ratio cluster/single.
func printClusterFlow(out io.Writer, rows []Result) {
	tw := newTable(tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tdelivered/s\tp50\tp99\tmax\tsent\treceived\tlost\tdup\telapsed\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t\n", r.Broker, rate(r.Throughput),
			dur(r.P50), dur(r.P99), dur(r.Max), r.Sent, r.Received, r.Lost, r.Duplicates, dur(r.Elapsed))
	}
	if s, c, ok := clusterPair(rows); ok {
		fmt.Fprintf(tw, "cluster/single\t%s\t%s\t%s\t%s\t\t\t\t\t\t\n", ratio(c.Throughput, s.Throughput),
			ratio(float64(c.P50), float64(s.P50)), ratio(float64(c.P99), float64(s.P99)), ratio(float64(c.Max), float64(s.Max)))
	}
	tw.print(out)
	printErrs(out, rows)
}

// printOps prints the table of subrate or storm.
func printOps(out io.Writer, rows []Result, what string) {
	tw := newTable(tabwriter.AlignRight)
	fmt.Fprintf(tw, "\t%s\telapsed\tper s\tp50\tp99\tmax\t\n", what)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", r.Broker, r.Ops, dur(r.Elapsed), rate(r.OpsPerSec), dur(r.P50), dur(r.P99), dur(r.Max))
	}
	tw.print(out)
	printErrs(out, rows)
}

// clusterPair returns the single-node and the cluster row of one scenario
// when both have figures.
func clusterPair(rows []Result) (single, cl Result, ok bool) {
	var ok1, ok2 bool
	for _, r := range rows {
		if r.Sent == 0 && r.Ops == 0 {
			continue
		}
		switch r.Broker {
		case rowSingle:
			single, ok1 = r, true
		case rowCluster:
			cl, ok2 = r, true
		}
	}
	return single, cl, ok1 && ok2
}

// clusterVerdicts judges the results against the targets of cluster mode:
// a line per target, in the order of the scenarios.
func clusterVerdicts(results []Result) []string {
	by := map[string][]Result{}
	var order []string
	for _, r := range results {
		if _, seen := by[r.Scenario]; !seen {
			order = append(order, r.Scenario)
		}
		by[r.Scenario] = append(by[r.Scenario], r)
	}
	var lines []string
	for _, sc := range order {
		rows := by[sc]
		s, c, both := clusterPair(rows)
		cl, clOK := findCluster(rows)
		switch {
		case sc == "fanin" || sc == "qos1":
			if !both {
				lines = append(lines, fmt.Sprintf("%s: cross-node/single delivered msg/s >= %.2f: no figures", sc, targetCrossRatio))
				continue
			}
			q := c.Throughput / s.Throughput
			lines = append(lines, fmt.Sprintf("%s: cross-node/single delivered msg/s %s (%s / %s), target >= %.2f: %s",
				sc, ratio(c.Throughput, s.Throughput), rate(c.Throughput), rate(s.Throughput), targetCrossRatio, verdict(q >= targetCrossRatio)))
		case strings.HasPrefix(sc, "latency"):
			if !both {
				lines = append(lines, fmt.Sprintf("%s: added p50 < %s: no figures", sc, dur(targetAddedP50)))
				continue
			}
			added := c.P50 - s.P50
			lines = append(lines, fmt.Sprintf("%s: added p50 %s (%s - %s), target < %s: %s",
				sc, signedDur(added), dur(c.P50), dur(s.P50), dur(targetAddedP50), verdict(added < targetAddedP50)))
		case sc == "subrate":
			if !clOK {
				lines = append(lines, "subrate: no cluster figures")
				continue
			}
			lines = append(lines, fmt.Sprintf("subrate: %s subscribes/s (target >= %s): %s; SUBACK p99 %s (target < %s): %s",
				rate(cl.OpsPerSec), rate(targetSubRate), verdict(cl.OpsPerSec >= targetSubRate),
				dur(cl.P99), dur(targetSubP99), verdict(cl.P99 < targetSubP99)))
		case sc == "storm":
			if !clOK || cl.Err != "" {
				lines = append(lines, fmt.Sprintf("storm: not every client got its SUBACK (target: all within %s): MISSED", dur(targetStormElapsed)))
				continue
			}
			lines = append(lines, fmt.Sprintf("storm: %d clients subscribed in %s, target < %s: %s",
				cl.Ops, dur(cl.Elapsed), dur(targetStormElapsed), verdict(cl.Elapsed < targetStormElapsed)))
		case sc == "failover":
			if !clOK || cl.Err != "" || cl.Elapsed == 0 {
				lines = append(lines, fmt.Sprintf("failover: no subscribe granted after the kill (target within %s): MISSED", dur(targetFailover)))
				continue
			}
			lines = append(lines, fmt.Sprintf("failover: leader %s killed, subscribe on %s granted after %s, target < %s: %s",
				cl.Leader, cl.Survivor, dur(cl.Elapsed), dur(targetFailover), verdict(cl.Elapsed < targetFailover)))
		}
	}
	return lines
}

// findCluster returns the cluster row, if it has figures.
func findCluster(rows []Result) (Result, bool) {
	for _, r := range rows {
		if r.Broker == rowCluster && (r.Ops > 0 || r.Sent > 0) {
			return r, true
		}
	}
	return Result{}, false
}

func printClusterSummary(out io.Writer, results []Result) {
	fmt.Fprintln(out, "\n== targets")
	for _, l := range clusterVerdicts(results) {
		fmt.Fprintln(out, l)
	}
}

// signedDur formats d with its sign.
func signedDur(d time.Duration) string {
	if d < 0 {
		return "-" + dur(-d)
	}
	return "+" + dur(d)
}
