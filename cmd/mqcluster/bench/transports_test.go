package bench

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/listener"
)

// TestTransports runs the fan-in and QoS 1 flows, tiny, over TCP, TLS and
// WebSocket against an in-process broker behind real listeners, and checks
// the counts and the transport report.
func TestTransports(t *testing.T) {
	a, err := newTLSAssets()
	if err != nil {
		t.Fatal(err)
	}
	defer a.remove()
	srv, err := broker.New(broker.DefaultConfig(), broker.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close(ctx)
	})
	targets := map[string]Target{}
	for _, tr := range allTransports {
		lc := listener.DefaultConfig()
		lc.Type, lc.Address, lc.Anonymous = listener.Type(tr), "127.0.0.1:0", listener.AnonymousAllow
		if tr == TransportTLS || tr == TransportWSS {
			lc.TLS = &listener.TLSConfig{CertFile: a.certFile, KeyFile: a.keyFile}
		}
		ln, err := listener.Listen(lc)
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		targets[tr] = Target{Name: MQCluster, Addr: ln.Addr().String(), Transport: tr, TLS: a.client}
	}
	cfg := tinyConfig()
	cfg.Scenarios = []string{"fanin", "qos1"}
	cfg.Transports = allTransports
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	r := newRunner(cfg.Stall)
	var results []Result
	for _, f := range cfg.flows() {
		for _, tr := range cfg.transportsFor(MQCluster, f) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			res, err := r.runFlow(ctx, targets[tr], f)
			cancel()
			if err != nil {
				t.Fatalf("%s over %s: %v", f.Name, tr, err)
			}
			if res.Received != res.Expected || res.Lost != 0 || res.Err != "" {
				t.Fatalf("%s over %s: %+v", f.Name, tr, res)
			}
			res.Transport = tr
			results = append(results, res)
		}
	}
	var out bytes.Buffer
	printFlow(&out, cfg.flows()[0], results[:len(allTransports)])
	printTransports(&out, results)
	for _, want := range []string{"mqcluster tls/tcp", "mqcluster ws/tcp", "tls/tcp delivered/s (>= 0.70)", "ws/tcp delivered/s (>= 0.60)", "qos1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestParseTransports(t *testing.T) {
	cfg, err := parseFlags([]string{"--brokers", "mqcluster", "--transports", "ws,tls"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Transports, ","); got != "tcp,ws,tls" {
		t.Errorf("transports %s: want tcp first", got)
	}
	for _, args := range [][]string{{"--transports", "quic"}, {"--brokers", "mosquitto", "--transports", "tls"}, {"--cluster", "3", "--transports", "ws"}} {
		if _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}
