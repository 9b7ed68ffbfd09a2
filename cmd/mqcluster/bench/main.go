package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Config is one benchmark run, as the flags of `mqcluster bench` set it.
type Config struct {
	Brokers   []string `json:"brokers"`
	Scenarios []string `json:"scenarios"`
	// Transports are what mqcluster is driven over (tcp first); Mosquitto
	// is driven over TCP only.
	Transports   []string      `json:"transports"`
	Messages     int           `json:"messages"` // per throughput scenario; 0: each one's default
	PayloadSize  int           `json:"payload_bytes"`
	Window       int           `json:"qos1_window"`
	Rate         int           `json:"latency_rate"`
	Duration     time.Duration `json:"latency_duration_ns"`
	Conns        int           `json:"idle_conns"`
	Stall        time.Duration `json:"stall_ns"`
	MQClusterBin string        `json:"mqcluster_bin"`
	MosquittoBin string        `json:"mosquitto_bin"`
	// Cluster mode (--cluster N): N nodes against a single node.
	Cluster       int    `json:"cluster,omitempty"`
	SubConns      int    `json:"subrate_conns,omitempty"`
	Subscribes    int    `json:"subrate_subscribes,omitempty"`
	StormClients  int    `json:"storm_clients,omitempty"`
	StormInFlight int    `json:"storm_in_flight,omitempty"`
	JSON          string `json:"-"`
}

// Scenario names, in the order they run.
var allScenarios = []string{"fanin", "qos1", "fanout", "latency", "idle"}

// Default message counts, sized so that each flow takes a few seconds on a
// 2-core machine.
const (
	defaultFanInMessages  = 2_000_000
	defaultQoS1Messages   = 200_000
	defaultFanOutMessages = 40_000 // × 50 subscribers
)

// flows expands the chosen scenarios into the flows to run; "idle" is a
// flow without publishers.
func (c *Config) flows() []flow {
	msgs := func(def int) int {
		if c.Messages > 0 {
			return c.Messages
		}
		return def
	}
	var out []flow
	for _, s := range c.Scenarios {
		switch s {
		case "fanin":
			n := msgs(defaultFanInMessages)
			out = append(out, flow{Name: "fanin", Publishers: 10, Subscribers: 1, QoS: 0, Messages: n, PayloadSize: c.PayloadSize,
				Title: fmt.Sprintf("fan-in: 10 publishers -> 1 subscriber, QoS 0, %d-byte payload, %d messages", c.PayloadSize, n)})
		case "qos1":
			n := msgs(defaultQoS1Messages)
			out = append(out, flow{Name: "qos1", Publishers: 4, Subscribers: 1, QoS: 1, Messages: n, Window: c.Window, PayloadSize: c.PayloadSize, MustNotLose: true,
				Title: fmt.Sprintf("QoS 1: 4 publishers (window %d) -> 1 subscriber (QoS 1, acks each), %d-byte payload, %d messages", c.Window, c.PayloadSize, n)})
		case "fanout":
			n := msgs(defaultFanOutMessages)
			out = append(out, flow{Name: "fanout", Publishers: 1, Subscribers: 50, QoS: 0, Messages: n, PayloadSize: c.PayloadSize,
				Title: fmt.Sprintf("fan-out: 1 publisher -> 50 subscribers, QoS 0, %d-byte payload, %d messages (%d deliveries)", c.PayloadSize, n, 50*n)})
		case "latency":
			n := max(1, int(c.Duration.Seconds()*float64(c.Rate)))
			for _, q := range []byte{0, 1} {
				out = append(out, flow{Name: fmt.Sprintf("latency-q%d", q), Publishers: 1, Subscribers: 1, QoS: q, Messages: n, Rate: c.Rate,
					Window: c.Window, PayloadSize: c.PayloadSize, MustNotLose: q > 0,
					Title: fmt.Sprintf("latency: 1 publisher -> 1 subscriber at %d msg/s for %v, QoS %d, %d-byte payload", c.Rate, c.Duration, q, c.PayloadSize)})
			}
		case "idle":
			out = append(out, flow{Name: "idle", Title: fmt.Sprintf("idle: %d connections (CONNECT, CONNACK, keep-alive 0), resident memory growth", c.Conns)})
		}
	}
	return out
}

// Main runs `mqcluster bench` with the given arguments.
func Main(args []string) error {
	cfg, err := parseFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, cfg, os.Stdout)
}

func parseFlags(args []string, usage io.Writer) (*Config, error) {
	fs := flag.NewFlagSet("mqcluster bench", flag.ContinueOnError)
	fs.SetOutput(usage)
	brokers := fs.String("brokers", MQCluster+","+Mosquitto, "brokers to run, comma-separated: mqcluster, mosquitto")
	scenarios := fs.String("scenarios", strings.Join(allScenarios, ","), "scenarios to run, comma-separated: "+strings.Join(allScenarios, ", "))
	transports := fs.String("transports", TransportTCP, "transports to drive mqcluster over, comma-separated: "+strings.Join(allTransports, ", ")+
		" (each against plain TCP; Mosquitto runs over TCP only)")
	cfg := &Config{}
	fs.IntVar(&cfg.Messages, "messages", 0, fmt.Sprintf("messages published per throughput scenario (0: fanin %d, qos1 %d, fanout %d)",
		defaultFanInMessages, defaultQoS1Messages, defaultFanOutMessages))
	fs.IntVar(&cfg.PayloadSize, "payload", 64, "payload size in bytes (at least 16: the stamp)")
	fs.IntVar(&cfg.Window, "window", 32, "QoS 1 publishers: PUBACKs awaited at once")
	fs.IntVar(&cfg.Rate, "rate", 1000, "latency scenario: messages per second")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "latency scenario: duration of each QoS")
	fs.IntVar(&cfg.Conns, "conns", 10000, "idle scenario: connections")
	fs.DurationVar(&cfg.Stall, "stall", 3*time.Second, "give up on missing messages after this long without progress")
	fs.StringVar(&cfg.MQClusterBin, "mqcluster-bin", "", "mqcluster binary (default: this executable)")
	fs.StringVar(&cfg.MosquittoBin, "mosquitto-bin", "", "mosquitto binary (default: /usr/sbin/mosquitto, else from PATH)")
	fs.IntVar(&cfg.Cluster, "cluster", 0, "run the cluster scenarios ("+strings.Join(clusterScenarios, ", ")+") on this many nodes against a single node instead (0: mqcluster against mosquitto)")
	fs.IntVar(&cfg.SubConns, "subrate-conns", 100, "cluster subrate scenario: connections")
	fs.IntVar(&cfg.Subscribes, "subscribes", 20000, "cluster subrate scenario: subscribes in all")
	fs.IntVar(&cfg.StormClients, "storm-clients", 10000, "cluster storm scenario: clients")
	fs.IntVar(&cfg.StormInFlight, "storm-in-flight", 200, "cluster storm scenario: CONNECT+SUBSCRIBEs at once")
	fs.StringVar(&cfg.JSON, "json", "", "also write the raw figures to this JSON file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	cfg.Brokers = splitList(*brokers)
	cfg.Scenarios = splitList(*scenarios)
	cfg.Transports = splitList(*transports)
	if !slices.Contains(cfg.Transports, TransportTCP) {
		// The figures over the others are read against TCP's.
		cfg.Transports = append([]string{TransportTCP}, cfg.Transports...)
	}
	if cfg.Cluster > 0 {
		cfg.Brokers = []string{MQCluster}
		set := false
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == "scenarios" })
		if !set {
			cfg.Scenarios = slices.Clone(clusterScenarios)
		}
	}
	return cfg, cfg.validate()
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

func (c *Config) validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("--brokers: none chosen"))
	}
	for _, b := range c.Brokers {
		if b != MQCluster && b != Mosquitto {
			errs = append(errs, fmt.Errorf("--brokers: unknown broker %q", b))
		}
	}
	if len(c.Scenarios) == 0 {
		errs = append(errs, errors.New("--scenarios: none chosen"))
	}
	if err := validTransports(c.Transports); err != nil {
		errs = append(errs, err)
	}
	if len(c.extraTransports()) > 0 && (c.Cluster > 0 || !slices.Contains(c.Brokers, MQCluster)) {
		errs = append(errs, errors.New("--transports: only for mqcluster, not in cluster mode"))
	}
	known := allScenarios
	if c.Cluster > 0 {
		known = clusterScenarios
		if c.Cluster < 2 {
			errs = append(errs, fmt.Errorf("--cluster %d: want 0 or at least 2", c.Cluster))
		}
		if c.SubConns < 1 || c.Subscribes < c.SubConns || c.StormClients < 1 || c.StormInFlight < 1 {
			errs = append(errs, errors.New("--subrate-conns, --subscribes, --storm-clients, --storm-in-flight: want > 0, and at least a subscribe per connection"))
		}
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(known, s) {
			errs = append(errs, fmt.Errorf("--scenarios: unknown scenario %q", s))
		}
	}
	// Run them in the documented order whatever order they were given in.
	slices.SortFunc(c.Scenarios, func(a, b string) int {
		return slices.Index(known, a) - slices.Index(known, b)
	})
	if c.Messages < 0 || (c.Messages > 0 && c.Messages < 10) {
		errs = append(errs, fmt.Errorf("--messages %d: want 0 (defaults) or at least 10", c.Messages))
	}
	if c.PayloadSize < stampSize || c.PayloadSize > 1<<20 {
		errs = append(errs, fmt.Errorf("--payload %d: want %d..%d", c.PayloadSize, stampSize, 1<<20))
	}
	if c.Window < 1 || c.Window > 65535 {
		errs = append(errs, fmt.Errorf("--window %d: want 1..65535", c.Window))
	}
	if c.Rate < 1 || c.Rate > 1_000_000 {
		errs = append(errs, fmt.Errorf("--rate %d: want 1..1000000", c.Rate))
	}
	if c.Duration <= 0 {
		errs = append(errs, fmt.Errorf("--duration %v: want > 0", c.Duration))
	}
	if c.Conns < 1 {
		errs = append(errs, fmt.Errorf("--conns %d: want > 0", c.Conns))
	}
	if c.Stall <= 0 {
		errs = append(errs, fmt.Errorf("--stall %v: want > 0", c.Stall))
	}
	return errors.Join(errs...)
}

// Report is the whole run, as written with --json.
type Report struct {
	Date    time.Time `json:"date"`
	Machine Machine   `json:"machine"`
	Config  *Config   `json:"config"`
	// MosquittoMaxQueued is max_queued_messages in Mosquitto's configuration.
	MosquittoMaxQueued int `json:"mosquitto_max_queued_messages"`
	// MQClusterDataDir says whether mqcluster ran with --data-dir (in its
	// temporary directory).
	MQClusterDataDir bool `json:"mqcluster_data_dir"`
	// MQClusterQueueFlags says whether mqcluster was given Mosquitto's
	// queue bound through its queue-limit flags.
	MQClusterQueueFlags bool     `json:"mqcluster_queue_flags"`
	Results             []Result `json:"results"`
	Failures            []string `json:"failures,omitempty"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs           int               `json:"cpus"`
	Kernel         string            `json:"kernel"`
	GoVersion      string            `json:"go_version"`
	Versions       map[string]string `json:"versions"`
	Binaries       map[string]string `json:"binaries"`
	LoadAvgAtStart string            `json:"loadavg_at_start"`
	LoadAvgAtEnd   string            `json:"loadavg_at_end"`
	NoFile         uint64            `json:"rlimit_nofile"`
}

// Run runs the benchmark and writes the tables to out. It fails when a
// broker could not be started or died, or a QoS 1 flow lost messages; it
// does not fail for figures that miss the targets.
func Run(ctx context.Context, cfg *Config, out io.Writer) error {
	bins, err := cfg.binaries()
	if err != nil {
		return err
	}
	if cfg.Cluster > 0 {
		return runCluster(ctx, cfg, bins, out)
	}
	nofile, err := raiseNoFile()
	if err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE: %w", err)
	}
	rep := &Report{Date: time.Now().UTC(), Config: cfg, Machine: Machine{
		CPUs: runtime.NumCPU(), Kernel: kernelRelease(), GoVersion: runtime.Version(),
		Versions: map[string]string{}, Binaries: map[string]string{}, LoadAvgAtStart: loadAvg(), NoFile: nofile}}
	for _, b := range cfg.Brokers {
		rep.Machine.Versions[b] = brokerVersion(b, bins.bin(b))
		rep.Machine.Binaries[b] = bins.bin(b)
	}
	flows := cfg.flows()
	if slices.Contains(cfg.Scenarios, "idle") && nofile < uint64(cfg.Conns)+256 {
		return fmt.Errorf("RLIMIT_NOFILE is %d: %d idle connections need at least %d (raise the hard limit, or lower --conns)",
			nofile, cfg.Conns, cfg.Conns+256)
	}
	bins.mosquittoMaxQueued = 10_000_000
	for _, f := range flows {
		bins.mosquittoMaxQueued = max(bins.mosquittoMaxQueued, 2*f.Messages*max(f.Subscribers, 1))
	}
	rep.MosquittoMaxQueued = bins.mosquittoMaxQueued
	rep.MQClusterDataDir = bins.mqclusterDataDir
	if extra := cfg.extraTransports(); len(extra) > 0 {
		if !bins.mqclusterConfig {
			return fmt.Errorf("--transports %s: %s has no --config (an older mqcluster)", strings.Join(extra, ","), bins.mqcluster)
		}
		if bins.tls, err = newTLSAssets(); err != nil {
			return fmt.Errorf("TLS certificate: %w", err)
		}
		defer bins.tls.remove()
		bins.transports = extra
	}
	rep.MQClusterQueueFlags = bins.mqclusterQueueFlags
	printHeader(out, rep)

	r := newRunner(cfg.Stall)
	var failures []error
	unstartable := map[string]bool{} // brokers that failed to start once
	for i, f := range flows {
		fmt.Fprintf(out, "\n== %s\n", f.Title)
		// Alternate which broker goes first, so neither always runs on a
		// machine warmed (or tired) by the other.
		order := slices.Clone(cfg.Brokers)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		var rows []Result
		for _, name := range order {
			for _, tr := range cfg.transportsFor(name, f) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if unstartable[name] {
					rows = append(rows, Result{Broker: name, Transport: tr, Scenario: f.Name, Err: "skipped: it failed to start before"})
					continue
				}
				res, err := runOne(ctx, r, name, tr, bins, f, cfg.Conns)
				if errors.Is(err, errStart) {
					unstartable[name] = true
				}
				if err != nil {
					failures = append(failures, err)
					if res.Err == "" {
						res.Err = err.Error()
					}
				}
				rows = append(rows, res)
			}
		}
		slices.SortFunc(rows, func(a, b Result) int {
			if d := slices.Index(cfg.Brokers, a.Broker) - slices.Index(cfg.Brokers, b.Broker); d != 0 {
				return d
			}
			return slices.Index(allTransports, a.Transport) - slices.Index(allTransports, b.Transport)
		})
		printFlow(out, f, rows)
		rep.Results = append(rep.Results, rows...)
	}
	rep.Machine.LoadAvgAtEnd = loadAvg()
	printSummary(out, rep.Results)
	printTransports(out, rep.Results)
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
			fmt.Fprintln(out, " -", err)
		}
		return fmt.Errorf("bench: %d failure(s)", len(failures))
	}
	return nil
}

// errStart marks the failure to start a broker.
var errStart = errors.New("broker did not start")

// runOne starts a fresh broker, runs one flow against it over one
// transport and stops it.
func runOne(ctx context.Context, r *runner, name, transport string, bins brokerBins, f flow, conns int) (Result, error) {
	res := Result{Broker: name, Transport: transport, Scenario: f.Name}
	b, err := startBroker(ctx, name, bins)
	if err != nil {
		return res, fmt.Errorf("%s: %w: %w", f.Name, errStart, err)
	}
	if f.Name == "idle" {
		res, err = r.runIdle(ctx, b.target(), conns)
	} else {
		res, err = r.runFlow(ctx, b.targetOver(transport, bins.tls), f)
	}
	res.Transport = transport
	if serr := b.stop(); serr != nil {
		err = errors.Join(err, fmt.Errorf("%s: %w", f.Name, serr))
	}
	return res, err
}

func (b brokerBins) bin(name string) string {
	if name == MQCluster {
		return b.mqcluster
	}
	return b.mosquitto
}

// binaries resolves the broker executables that the run needs.
func (c *Config) binaries() (brokerBins, error) {
	var b brokerBins
	for _, name := range c.Brokers {
		switch name {
		case MQCluster:
			b.mqcluster = c.MQClusterBin
			if b.mqcluster == "" {
				exe, err := os.Executable()
				if err != nil {
					return b, fmt.Errorf("mqcluster binary: %w (set --mqcluster-bin)", err)
				}
				b.mqcluster = exe
			}
		case Mosquitto:
			b.mosquitto = c.MosquittoBin
			if b.mosquitto == "" {
				b.mosquitto = "/usr/sbin/mosquitto"
				if _, err := os.Stat(b.mosquitto); err != nil {
					b.mosquitto = "mosquitto"
				}
			}
		}
		// Brokers run in a directory of their own: the path must not be
		// relative.
		path, err := exec.LookPath(b.bin(name))
		if err == nil {
			path, err = filepath.Abs(path)
		}
		if err != nil {
			return b, fmt.Errorf("%s binary: %w", name, err)
		}
		if name == MQCluster {
			b.mqcluster = path
			b.mqclusterDataDir = hasFlag(path, "data-dir")
			b.mqclusterQueueFlags = hasFlag(path, "max-queued-messages")
			b.mqclusterConfig = hasFlag(path, "config")
			b.mqclusterAdmin = hasFlag(path, "admin-address")
		} else {
			b.mosquitto = path
		}
	}
	return b, nil
}

func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
