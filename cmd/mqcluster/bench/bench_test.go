package bench

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
)

// startInProcess runs an in-process broker with the default configuration on
// 127.0.0.1:0 until the test ends.
func startInProcess(t testing.TB) (*broker.Server, string) {
	t.Helper()
	srv, err := broker.New(broker.DefaultConfig(), broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	return srv, ln.Addr().String()
}

// tinyConfig is every scenario at a size that runs in well under a second.
func tinyConfig() *Config {
	return &Config{Brokers: []string{MQCluster}, Scenarios: allScenarios, Messages: 400, PayloadSize: 64,
		Window: 32, Rate: 1000, Duration: 100 * time.Millisecond, Conns: 50, Stall: 2 * time.Second}
}

// TestScenarios runs every scenario of the generator, in its real shape but
// tiny, against an in-process broker, and checks the counts and that every
// figure was computed.
func TestScenarios(t *testing.T) {
	cfg := tinyConfig()
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	r := newRunner(cfg.Stall)
	var results []Result
	for _, f := range cfg.flows() {
		t.Run(f.Name, func(t *testing.T) {
			_, addr := startInProcess(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if f.Name == "idle" {
				// The broker is in this process: its memory is measured
				// together with the generator's, which is enough to check
				// that the figure is computed.
				res, err := r.runIdle(ctx, Target{Name: MQCluster, Addr: addr, PID: os.Getpid()}, cfg.Conns)
				if err != nil {
					t.Fatal(err)
				}
				if res.Conns != cfg.Conns || res.RSSBefore <= 0 || res.RSSAfter <= 0 || res.Err != "" {
					t.Fatalf("idle result %+v", res)
				}
				results = append(results, res)
				return
			}
			res, err := r.runFlow(ctx, Target{Name: MQCluster, Addr: addr}, f)
			if err != nil {
				t.Fatal(err)
			}
			if res.Sent != int64(f.Messages) || res.Expected != int64(f.Messages*f.Subscribers) ||
				res.Received != res.Expected || res.Lost != 0 || res.Duplicates != 0 || res.Stalled || res.Err != "" {
				t.Fatalf("counts: %+v", res)
			}
			if f.QoS == 1 && res.Acked != res.Sent {
				t.Errorf("acked %d of %d", res.Acked, res.Sent)
			}
			if res.Elapsed <= 0 || res.Throughput <= 0 || res.P50 <= 0 || res.P99 < res.P50 || res.Max < res.P99 {
				t.Errorf("figures not computed: %+v", res)
			}
			if f.Rate > 0 && res.Elapsed < time.Duration(f.Messages-1)*time.Second/time.Duration(f.Rate) {
				t.Errorf("paced at %d/s, yet %d messages took only %v", f.Rate, f.Messages, res.Elapsed)
			}
			if res.BrokerCPU != 0 || res.CPUPerMsg != 0 {
				t.Errorf("CPU measured for a broker without a process: %+v", res)
			}
			results = append(results, res)
		})
	}
	var out bytes.Buffer
	for _, f := range cfg.flows() {
		var rows []Result
		for _, res := range results {
			if res.Scenario == f.Name {
				rows = append(rows, res)
			}
		}
		printFlow(&out, f, rows)
	}
	printSummary(&out, results)
	for _, want := range []string{"delivered/s", "KiB/conn", "fanin", "latency-q1", "idle"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

// TestQoS1LossFails runs the QoS 1 flow against a server that acknowledges
// every PUBLISH and delivers none: the flow must stall, count every message
// as lost and fail.
func TestQoS1LossFails(t *testing.T) {
	addr := blackHole(t)
	cfg := tinyConfig()
	cfg.Scenarios = []string{"qos1"}
	f := cfg.flows()[0]
	r := newRunner(200 * time.Millisecond)
	res, err := r.runFlow(context.Background(), Target{Name: MQCluster, Addr: addr}, f)
	if err == nil {
		t.Fatalf("no error for a flow that delivered nothing: %+v", res)
	}
	if !res.Stalled || res.Sent != int64(f.Messages) || res.Acked != res.Sent || res.Received != 0 || res.Lost != res.Sent {
		t.Fatalf("result %+v", res)
	}
}

// blackHole is an MQTT server that accepts CONNECT and SUBSCRIBE and
// acknowledges QoS 1 PUBLISHes without delivering them.
func blackHole(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { nc.Close() })
			go func() {
				rd := packet.NewReader(nc, 0)
				for {
					pk, err := rd.ReadPacket()
					if err != nil {
						return
					}
					var reply packet.Packet
					switch p := pk.(type) {
					case *packet.Connect:
						rd.SetVersion(p.Version)
						reply = &packet.Connack{}
					case *packet.Subscribe:
						reply = &packet.Suback{PacketID: p.PacketID, ReasonCodes: []packet.ReasonCode{packet.ReasonCode(p.Subscriptions[0].Options.QoS)}}
					case *packet.Publish:
						if p.QoS == 1 {
							reply = &packet.Ack{PacketType: packet.PUBACK, PacketID: p.PacketID}
						}
					}
					if reply != nil {
						b, _ := reply.Append(nil, packet.V311)
						if _, err := nc.Write(b); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestHistogram(t *testing.T) {
	var h histogram
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.quantile(c.q)
		if d := got - c.want; d < -c.want/100 || d > c.want/100 {
			t.Errorf("quantile(%v) = %v, want %v within 1%%", c.q, got, c.want)
		}
	}
	var small histogram
	small.record(3)
	if got := small.quantile(0.5); got != 3 {
		t.Errorf("exact small value: got %v", got)
	}
	var merged histogram
	merged.merge(&h)
	merged.merge(&small)
	if merged.n != 1001 || merged.max != time.Millisecond {
		t.Errorf("merge: n %d max %v", merged.n, merged.max)
	}
}

func TestProcFigures(t *testing.T) {
	before, err := readCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin until this process has used 30 ms of CPU by getrusage, however
	// busy the machine is.
	start, deadline := selfCPU(), time.Now().Add(10*time.Second)
	for selfCPU()-start < 30*time.Millisecond && time.Now().Before(deadline) {
	}
	after, err := readCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if used := cpuUsed(before, after); used < 25*time.Millisecond {
		t.Errorf("30 ms of CPU by getrusage, %v by /proc", used)
	}
	if n, err := rss(os.Getpid()); err != nil || n < 1<<20 {
		t.Errorf("rss = %d, %v", n, err)
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"--brokers", "mosquitto", "--scenarios", "idle,fanin", "--messages", "1000"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.Brokers, ",") != "mosquitto" || strings.Join(cfg.Scenarios, ",") != "fanin,idle" || cfg.Messages != 1000 {
		t.Errorf("parsed %+v", cfg)
	}
	for _, args := range [][]string{{"--scenarios", "fanin,nope"}, {"--brokers", "emqx"}, {"--payload", "8"}, {"stray"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

// BenchmarkFanIn runs the fan-in flow against an in-process broker, for a
// CPU profile of the broker under that load:
//
//	go test -run='^$' -bench=FanIn -benchtime=1000000x -cpuprofile=cpu.out ./cmd/mqcluster/bench/
//	go tool pprof -top -focus=mqcluster/broker cpu.out
func BenchmarkFanIn(b *testing.B) {
	_, addr := startInProcess(b)
	cfg := tinyConfig()
	cfg.Scenarios = []string{"fanin"}
	cfg.Messages = max(b.N, 10)
	f := cfg.flows()[0]
	r := newRunner(cfg.Stall)
	b.ResetTimer()
	res, err := r.runFlow(context.Background(), Target{Name: MQCluster, Addr: addr}, f)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(res.Throughput, "delivered/s")
	b.ReportMetric(float64(res.Lost), "lost")
}
