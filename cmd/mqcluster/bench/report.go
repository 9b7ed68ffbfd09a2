package bench

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// The targets of the issue, reported against and never asserted.
const (
	targetThroughput = 1.0 // mqcluster/mosquitto delivered msg/s, at least
	targetCPU        = 0.8 // mqcluster/mosquitto broker CPU per message, at most
	targetP99        = 1.0 // mqcluster/mosquitto p99 latency at the fixed rate, at most
	targetIdleKiB    = 8.0 // KiB of resident memory per idle connection, at most
)

func printHeader(out io.Writer, rep *Report) {
	m := rep.Machine
	fmt.Fprintf(out, "mqcluster bench, %s\n", rep.Date.Format(time.RFC3339))
	fmt.Fprintf(out, "machine: %d CPUs, Linux %s, %s, RLIMIT_NOFILE %d, load average %s\n",
		m.CPUs, m.Kernel, m.GoVersion, m.NoFile, m.LoadAvgAtStart)
	for _, b := range rep.Config.Brokers {
		fmt.Fprintf(out, "%s: %s\n", b, m.Versions[b])
	}
	if slices.Contains(rep.Config.Brokers, Mosquitto) {
		fmt.Fprintf(out, "mosquitto.conf: listener on 127.0.0.1, allow_anonymous true, persistence false, max_queued_messages %d, log to a file; the rest default\n",
			rep.MosquittoMaxQueued)
	}
	if slices.Contains(rep.Config.Brokers, MQCluster) {
		dataDir := ""
		if rep.MQClusterDataDir {
			dataDir = " --data-dir TMPDIR/data"
		}
		queues := ", default configuration"
		if rep.MQClusterQueueFlags {
			queues = fmt.Sprintf(" --max-queued-messages %d --max-queued-bytes 8GiB --write-queue-bytes 8GiB (Mosquitto's queue bound), the rest default", rep.MosquittoMaxQueued)
		}
		fmt.Fprintf(out, "mqcluster: serve --listen 127.0.0.1:PORT%s%s\n", dataDir, queues)
		if extra := rep.Config.extraTransports(); len(extra) > 0 {
			fmt.Fprintf(out, "mqcluster transports: tcp and %s; --config adds a listener for each on another loopback port "+
				"(TLS: a self-signed ECDSA P-256 certificate, the Go client negotiates TLS 1.3; WebSocket: path /mqtt, binary frames, "+
				"each client write one frame); each flow runs over each transport against a fresh broker\n", strings.Join(extra, ", "))
		}
	}
	if l, err := strconv.ParseFloat(strings.Fields(m.LoadAvgAtStart + " x")[0], 64); err == nil && l > 0.5*float64(m.CPUs) {
		fmt.Fprintf(out, "WARNING: load average %.2f on %d CPUs: other work competes with the brokers and the generator; the figures are noisy.\n", l, m.CPUs)
	}
	fmt.Fprintln(out, "Each flow runs against a freshly started broker; both brokers get the identical load.")
	fmt.Fprintln(out, "CPU/msg is the broker process's CPU time (all threads, /proc/PID/task/*/schedstat) over the flow,")
	fmt.Fprintln(out, "divided by the messages delivered; gen CPU/msg is the load generator's own.")
}

// printFlow prints one table: a row per broker and, with two brokers, the
// ratio row mqcluster/mosquitto.
func printFlow(out io.Writer, f flow, rows []Result) {
	tw := newTable(tabwriter.AlignRight)
	if f.Name == "idle" {
		fmt.Fprintln(tw, "broker\tconns\tRSS before\tRSS after\tKiB/conn\t")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t\n", r.Broker, r.Conns, mib(r.RSSBefore), mib(r.RSSAfter), num(r.KiBPerConn, 2))
		}
		if a, b, ok := pair(rows); ok {
			fmt.Fprintf(tw, "mqcluster/mosquitto\t\t\t\t%s\t\n", ratio(a.KiBPerConn, b.KiBPerConn))
		}
		tw.print(out)
		printErrs(out, rows)
		return
	}
	fmt.Fprintln(tw, "broker\tdelivered/s\tp50\tp99\tmax\tsent\treceived\tlost\tdup\telapsed\tCPU/msg\tgen CPU/msg\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t\n", rowName(r), rate(r.Throughput),
			dur(r.P50), dur(r.P99), dur(r.Max), r.Sent, r.Received, r.Lost, r.Duplicates,
			dur(r.Elapsed), nsPerMsg(r.CPUPerMsg), nsPerMsg(r.GenCPUPerMsg))
	}
	if a, b, ok := pair(rows); ok {
		fmt.Fprintf(tw, "mqcluster/mosquitto\t%s\t%s\t%s\t%s\t\t\t\t\t\t%s\t\t\n", ratio(a.Throughput, b.Throughput),
			ratio(float64(a.P50), float64(b.P50)), ratio(float64(a.P99), float64(b.P99)),
			ratio(float64(a.Max), float64(b.Max)), ratio(a.CPUPerMsg, b.CPUPerMsg))
	}
	if tcp, ok := find(rows, MQCluster); ok {
		for _, r := range rows {
			if r.Broker == MQCluster && !isTCP(r) && r.Sent > 0 {
				fmt.Fprintf(tw, "mqcluster %s/tcp\t%s\t%s\t%s\t%s\t\t\t\t\t\t%s\t\t\n", r.Transport, ratio(r.Throughput, tcp.Throughput),
					ratio(float64(r.P50), float64(tcp.P50)), ratio(float64(r.P99), float64(tcp.P99)),
					ratio(float64(r.Max), float64(tcp.Max)), ratio(r.CPUPerMsg, tcp.CPUPerMsg))
			}
		}
	}
	tw.print(out)
	printErrs(out, rows)
}

// rowName names a row: the broker, and the transport when it is not TCP.
func rowName(r Result) string {
	if isTCP(r) {
		return r.Broker
	}
	return r.Broker + " " + r.Transport
}

func isTCP(r Result) bool { return r.Transport == "" || r.Transport == TransportTCP }

// printTransports prints, per flow, mqcluster's figures over each
// transport against its own over TCP.
func printTransports(out io.Writer, results []Result) {
	var order []string
	byFlow := map[string]map[string]Result{}
	var transports []string
	for _, r := range results {
		if r.Broker != MQCluster || r.Sent == 0 {
			continue
		}
		tr := r.Transport
		if isTCP(r) {
			tr = TransportTCP
		} else if !slices.Contains(transports, tr) {
			transports = append(transports, tr)
		}
		if byFlow[r.Scenario] == nil {
			byFlow[r.Scenario] = map[string]Result{}
			order = append(order, r.Scenario)
		}
		byFlow[r.Scenario][tr] = r
	}
	if len(transports) == 0 {
		return
	}
	slices.SortFunc(transports, func(a, b string) int { return slices.Index(allTransports, a) - slices.Index(allTransports, b) })
	fmt.Fprintln(out, "\n== Transports: mqcluster over TLS and WebSocket against plain TCP (reported, not asserted)")
	tw := newTable(0)
	head := "scenario"
	for _, tr := range transports {
		head += fmt.Sprintf("\t%s/tcp delivered/s (>= %.2f)\t%s/tcp CPU/msg", tr, transportTargets[tr], tr)
	}
	fmt.Fprintln(tw, head)
	for _, name := range order {
		tcp, ok := byFlow[name][TransportTCP]
		if !ok {
			continue
		}
		line := name
		for _, tr := range transports {
			r, ok := byFlow[name][tr]
			if !ok {
				line += "\t-\t-"
				continue
			}
			target := transportTargets[tr]
			tp := judged(r.Throughput, tcp.Throughput, func(x float64) bool { return x >= target })
			if strings.HasPrefix(name, "latency") {
				tp = ratio(r.Throughput, tcp.Throughput) + " (paced)"
			}
			line += "\t" + tp + "\t" + ratio(r.CPUPerMsg, tcp.CPUPerMsg)
		}
		fmt.Fprintln(tw, line)
	}
	tw.print(out)
}

func printErrs(out io.Writer, rows []Result) {
	for _, r := range rows {
		if r.Err != "" {
			fmt.Fprintf(out, "  %s: %s\n", r.Broker, strings.ReplaceAll(r.Err, "\n", "\n    "))
		}
		if r.Stalled && r.Lost > 0 {
			fmt.Fprintf(out, "  %s: %d deliveries still missing when the flow made no more progress (--stall); counted as lost\n", r.Broker, r.Lost)
		}
	}
}

// printSummary prints the ratios mqcluster/mosquitto of every flow against
// the targets.
func printSummary(out io.Writer, results []Result) {
	byFlow := map[string][]Result{}
	var order []string
	for _, r := range results {
		if _, ok := byFlow[r.Scenario]; !ok {
			order = append(order, r.Scenario)
		}
		byFlow[r.Scenario] = append(byFlow[r.Scenario], r)
	}
	fmt.Fprintln(out, "\n== Summary: mqcluster/mosquitto against the targets (reported, not asserted)")
	tw := newTable(0)
	fmt.Fprintln(tw, "scenario\tthroughput (>= 1.0)\tCPU/msg (<= 0.8)\tp99 latency (<= 1.0 at fixed rate)\tloss mqcluster / mosquitto (0)\tidle KiB/conn mqcluster / mosquitto (<= 8)")
	for _, name := range order {
		rows := byFlow[name]
		a, b, both := pair(rows)
		mq, mqOK := find(rows, MQCluster)
		mo, moOK := find(rows, Mosquitto)
		if name == "idle" {
			cell := "-"
			switch {
			case mqOK && moOK:
				cell = fmt.Sprintf("%s / %s  %s", num(mq.KiBPerConn, 2), num(mo.KiBPerConn, 2), verdict(mq.KiBPerConn <= targetIdleKiB))
			case mqOK:
				cell = fmt.Sprintf("%s / -  %s", num(mq.KiBPerConn, 2), verdict(mq.KiBPerConn <= targetIdleKiB))
			case moOK:
				cell = fmt.Sprintf("- / %s", num(mo.KiBPerConn, 2))
			}
			fmt.Fprintf(tw, "%s\t\t\t\t\t%s\n", name, cell)
			continue
		}
		tp, cpu, p99 := "-", "-", "-"
		if both {
			paced := strings.HasPrefix(name, "latency")
			if !paced {
				tp = judged(a.Throughput, b.Throughput, func(r float64) bool { return r >= targetThroughput })
				if a.Lost > 0 && a.Expected > 0 {
					// Delivered throughput counts what arrived: say
					// how much did not.
					tp += fmt.Sprintf(" (lost %.1f%%)", 100*float64(a.Lost)/float64(a.Expected))
				}
			} else {
				tp = ratio(a.Throughput, b.Throughput) + " (paced)"
			}
			cpu = judged(a.CPUPerMsg, b.CPUPerMsg, func(r float64) bool { return r <= targetCPU })
			if paced {
				p99 = judged(float64(a.P99), float64(b.P99), func(r float64) bool { return r <= targetP99 })
			} else {
				p99 = ratio(float64(a.P99), float64(b.P99)) + " (saturated)"
			}
		}
		loss := "-"
		switch {
		case mqOK && moOK:
			loss = fmt.Sprintf("%d / %d  %s", mq.Lost, mo.Lost, verdict(mq.Lost == 0))
		case mqOK:
			loss = fmt.Sprintf("%d / -  %s", mq.Lost, verdict(mq.Lost == 0))
		case moOK:
			loss = fmt.Sprintf("- / %d", mo.Lost)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", name, tp, cpu, p99, loss)
	}
	tw.print(out)
}

// table is a tabwriter that buffers, so that its lines can be printed
// without the trailing blanks of empty last cells.
type table struct {
	buf bytes.Buffer
	*tabwriter.Writer
}

func newTable(flags uint) *table {
	t := new(table)
	t.Writer = tabwriter.NewWriter(&t.buf, 0, 0, 2, ' ', flags)
	return t
}

// print flushes the table onto out.
func (t *table) print(out io.Writer) {
	t.Flush()
	for l := range strings.Lines(t.buf.String()) {
		fmt.Fprintln(out, strings.TrimRight(l, " \n"))
	}
}

// pair returns the mqcluster and the mosquitto row when both ran.
func pair(rows []Result) (mq, mo Result, ok bool) {
	mq, ok1 := find(rows, MQCluster)
	mo, ok2 := find(rows, Mosquitto)
	return mq, mo, ok1 && ok2
}

// find returns the row of broker over TCP, if it has figures.
func find(rows []Result, broker string) (Result, bool) {
	for _, r := range rows {
		if r.Broker == broker && isTCP(r) && (r.Sent > 0 || r.RSSAfter > 0) {
			return r, true
		}
	}
	return Result{}, false
}

func judged(a, b float64, ok func(float64) bool) string {
	if b == 0 || a == 0 {
		return "-"
	}
	return ratio(a, b) + "  " + verdict(ok(a/b))
}

func verdict(met bool) string {
	if met {
		return "met"
	}
	return "MISSED"
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// rate formats messages per second with thousands separators.
func rate(v float64) string {
	if v == 0 {
		return "-"
	}
	return thousands(int64(math.Round(v)))
}

func thousands(n int64) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func dur(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%.0fµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func nsPerMsg(ns float64) string {
	if ns <= 0 {
		return "-"
	}
	if ns < 1000 {
		return fmt.Sprintf("%.0fns", ns)
	}
	return fmt.Sprintf("%.2fµs", ns/1e3)
}

func mib(b int64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

func num(v float64, prec int) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.*f", prec, v)
}
