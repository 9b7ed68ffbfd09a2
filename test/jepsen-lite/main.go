package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config is one run's settings (the flags).
type Config struct {
	Nodes      int
	Seed       int64
	Time       time.Duration
	Families   []string
	Short      bool
	Bin        string
	Race       bool
	Results    string
	Membership bool
	CtlRemove  string
	Matrix     bool
	Check      string
	Workloads  string
	Quiet      bool
	Scenario   string
	Args       []string
	fixed      []Fault // a scenario's schedule
}

var stderr = os.Stderr

func main() {
	var cfg Config
	var families string
	flag.IntVar(&cfg.Nodes, "nodes", 5, "mqcluster processes (3 or 5)")
	flag.Int64Var(&cfg.Seed, "seed", 0, "seed of the fault schedule and the clients' choices (0: from the clock); a seed replays the same faults at the same offsets")
	flag.DurationVar(&cfg.Time, "time", 5*time.Minute, "length of the fault phase")
	flag.StringVar(&families, "faults", "all", "fault families, comma-separated: partition, kill, pause, slow, membership (all: every one available)")
	flag.BoolVar(&cfg.Short, "short", false, "the CI run: a fault phase of 75 s that meets every fault family once")
	flag.StringVar(&cfg.Bin, "bin", "", "mqcluster binary (default: built from ./cmd/mqcluster)")
	flag.BoolVar(&cfg.Race, "race", false, "build the binary with the race detector")
	flag.StringVar(&cfg.Results, "results", "", "results root (default test/jepsen-lite/results)")
	flag.BoolVar(&cfg.Membership, "membership", false, "include the membership nemesis (needs mqcluster ctl remove)")
	flag.StringVar(&cfg.CtlRemove, "ctl-remove", "ctl leave", "mqcluster arguments that take a voter out: run in its own namespace, or, when they name {id}, in another node's (e.g. \"ctl remove {id}\")")
	flag.BoolVar(&cfg.Matrix, "matrix", false, "the full matrix: one run per fault family of --time each, then one with every family")
	flag.StringVar(&cfg.Check, "check", "", "only check an earlier run: its results directory (history.jsonl and node logs)")
	flag.StringVar(&cfg.Workloads, "workloads", "queue,qos2,retained,subs,takeover,wills", "workloads to run")
	flag.BoolVar(&cfg.Quiet, "quiet", false, "less progress output")
	flag.StringVar(&cfg.Scenario, "scenario", "", "run regression scenarios with fixed schedules instead (comma-separated, or all): "+strings.Join(scenarioNames(), ", "))
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "Usage: jepsen-lite [flags]  (as root)\n\nRuns mqcluster processes in network namespaces under faults, records a history\nand checks it. Exits 1 when a checker fails.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	cfg.Args = os.Args[1:]
	fams, err := parseFamilies(families)
	if err != nil {
		fatal(err)
	}
	cfg.Families = fams
	if cfg.Short {
		cfg.Time = 75 * time.Second
	}
	if cfg.Seed == 0 {
		cfg.Seed = time.Now().UnixNano() % 1_000_000_007
	}
	if cfg.Check != "" {
		os.Exit(checkOnly(cfg))
	}
	if err := checkPrivileges(); err != nil {
		fatal(err)
	}
	if cfg.Results == "" {
		cfg.Results = filepath.Join(repoRoot(), "test", "jepsen-lite", "results")
	}
	if cfg.Bin == "" {
		cfg.Bin, err = buildBinary(cfg)
		if err != nil {
			fatal(err)
		}
	}
	if !ctlAvailable(cfg.Bin) {
		if cfg.Membership {
			fmt.Fprintln(os.Stderr, "note: this mqcluster has no `ctl remove`: the membership nemesis is skipped")
		}
		cfg.Membership = false
	}
	if cfg.Membership && cfg.Nodes < 5 {
		fmt.Fprintln(os.Stderr, "note: the membership nemesis keeps three voters: it needs 5 nodes; skipped")
		cfg.Membership = false
	}
	if !cfg.Membership {
		cfg.Families = without(cfg.Families, "membership")
	}
	if cfg.Scenario != "" {
		os.Exit(runScenarios(cfg, cfg.Scenario))
	}
	if cfg.Matrix {
		os.Exit(runMatrix(cfg))
	}
	ok, _, err := runOnce(cfg)
	if err != nil {
		fatal(err)
	}
	if !ok {
		os.Exit(1)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "jepsen-lite:", err)
	os.Exit(2)
}

func without(list []string, s string) []string {
	var out []string
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// repoRoot is the directory holding go.mod, from the working directory up.
func repoRoot() string {
	dir, _ := os.Getwd()
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

func buildBinary(cfg Config) (string, error) {
	dir, err := os.MkdirTemp("", "mqjl-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "mqcluster")
	args := []string{"build", "-o", bin}
	if cfg.Race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "./cmd/mqcluster")...)
	cmd.Dir = repoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// runOnce is one run: network, cluster, workloads under the schedule,
// heal, liveness, drain, checks, report. It returns whether every checker
// passed and the results directory.
func runOnce(cfg Config) (bool, string, error) {
	logf := func(format string, args ...any) {
		if !cfg.Quiet {
			fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
		}
	}
	CleanupStale(logf)
	dir := filepath.Join(cfg.Results, fmt.Sprintf("%s-%d", time.Now().Format("20060102T150405"), cfg.Seed))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, "", err
	}
	hist, err := NewHistory(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		return false, dir, err
	}
	nw, err := NewNetwork(cfg.Nodes)
	if err != nil {
		return false, dir, fmt.Errorf("network namespaces: %w", err)
	}
	cluster := NewCluster(nw, cfg.Bin, dir, hist, nil)
	cleanup := sync.OnceFunc(func() {
		cluster.Stop()
		nw.Close()
		os.RemoveAll(filepath.Join(dir, "data"))
	})
	defer cleanup()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		if _, ok := <-sigs; ok {
			logf("signal: cleaning up")
			cleanup()
			os.Exit(130)
		}
	}()

	schedule := Schedule(cfg.Seed, cfg.Nodes, cfg.Families, cfg.Time, cfg.Short)
	if cfg.fixed != nil {
		schedule = cfg.fixed
	}
	logf("run %s: %d nodes, seed %d, %d faults over %v", dir, cfg.Nodes, cfg.Seed, len(schedule), cfg.Time)
	for _, n := range cluster.Nodes {
		if err := cluster.Start(n); err != nil {
			return false, dir, err
		}
	}
	if err := cluster.WaitListening(30 * time.Second); err != nil {
		return false, dir, err
	}
	env := &Env{Hist: hist, Cluster: cluster, Seed: cfg.Seed}
	ready, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	failed := probeAllNodes(ready, env, "ready")
	cancel()
	if len(failed) > 0 {
		return false, dir, fmt.Errorf("cluster never became ready: nodes %v (logs in %s)", failed, dir)
	}
	logf("cluster ready; leader n%d", cluster.Leader())

	nm := &Nemesis{nw: nw, cl: cluster, hist: hist, bin: cfg.Bin, ctlRm: cfg.CtlRemove, logf: logf}
	workloads := selectWorkloads(cfg.Workloads)
	hist.Add(Op{Type: "info", F: "phase", Node: -1, Value: "faults"})
	wctx, wcancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, w := range workloads {
		wg.Add(1)
		go func() { defer wg.Done(); w.Run(wctx, env) }()
	}
	var applied []Fault
	start := time.Now()
	for _, f := range schedule {
		time.Sleep(time.Until(start.Add(f.At)))
		rf := nm.Start(f)
		time.Sleep(time.Until(start.Add(f.At + f.Dur)))
		nm.Stop(rf)
		applied = append(applied, rf)
	}
	time.Sleep(time.Until(start.Add(cfg.Time)))
	nm.HealAll()
	healed := hist.Now()
	logf("healed; liveness probes, fault-phase clients stop")
	// The liveness clock runs from the heal: probes start at once, while
	// the fault-phase clients wind down.
	lctx, lcancel := context.WithTimeout(context.Background(), 40*time.Second)
	live := make(chan []int, 1)
	go func() { live <- probeAllNodes(lctx, env, "liveness") }()
	wcancel()
	wg.Wait()
	<-live
	lcancel()
	logf("liveness probes done; draining")
	hist.Add(Op{Type: "info", F: "phase", Node: -1, Value: "drain"})
	dctx, dcancel := context.WithTimeout(context.Background(), 90*time.Second)
	for _, w := range workloads {
		wg.Add(1)
		go func() { defer wg.Done(); w.Drain(dctx, env) }()
	}
	wg.Wait()
	dcancel()
	hist.Add(Op{Type: "info", F: "phase", Node: -1, Value: "end"})
	cleanup()
	hist.Close()

	res := Check(hist.Ops(), nodeLogs(cluster), CheckParams{Healed: healed, Nodes: cfg.Nodes})
	meta := RunMeta{Seed: cfg.Seed, Nodes: cfg.Nodes, Time: cfg.Time.String(), Families: cfg.Families,
		Command: "go run ./test/jepsen-lite " + strings.Join(cfg.Args, " "), Schedule: applied, Notes: nm.Notes, Dir: dir}
	ok, err := WriteReport(dir, meta, res, hist.Ops())
	if err != nil {
		return false, dir, err
	}
	return ok, dir, nil
}

func selectWorkloads(list string) []Workload {
	all := map[string]func() Workload{
		"queue":    func() Workload { return newQueueWorkload() },
		"qos2":     func() Workload { return newQoS2Workload() },
		"retained": func() Workload { return newRetainedWorkload() },
		"subs":     func() Workload { return newSubsWorkload() },
		"takeover": func() Workload { return newTakeoverWorkload() },
		"wills":    func() Workload { return newWillsWorkload() },
	}
	var out []Workload
	for _, name := range strings.Split(list, ",") {
		if mk, ok := all[strings.TrimSpace(name)]; ok {
			out = append(out, mk())
		}
	}
	return out
}

// nodeLogs maps node id to its log path.
func nodeLogs(c *Cluster) map[string]string {
	out := map[string]string{}
	for _, n := range c.Nodes {
		out[n.ID] = n.LogPath
	}
	return out
}
