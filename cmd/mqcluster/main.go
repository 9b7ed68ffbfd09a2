// Command mqcluster runs one mqcluster node: with no arguments a single-node
// MQTT broker on :1883 with its data in ./data.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/store"
	"github.com/mqcluster/mqcluster/cmd/mqcluster/bench"
	"github.com/mqcluster/mqcluster/node"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mqcluster:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "version" {
		fmt.Println("mqcluster", version)
		return nil
	}
	if len(args) > 0 && args[0] == "bench" {
		return bench.Main(args[1:])
	}
	if len(args) > 0 && args[0] == "serve" {
		args = args[1:]
	}
	fs := flag.NewFlagSet("mqcluster serve", flag.ContinueOnError)
	listen := fs.String("listen", ":1883", "MQTT listener address")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	dataDir := fs.String("data-dir", "data", "directory for persistent sessions and retained messages; empty keeps everything in memory")
	def := broker.DefaultConfig()
	queuedMsgs := fs.Int("max-queued-messages", def.QueueMessages, "messages one session may queue (offline, or beyond its in-flight window)")
	queuedBytes := fs.Int("max-queued-bytes", def.QueueBytes, "bytes one session may queue")
	writeQueue := fs.Int("write-queue-bytes", def.WriteQueueBytes, "bytes waiting for one connection's socket before QoS 0 messages are dropped")
	ndef := node.DefaultConfig()
	expect := fs.Int("bootstrap-expect", 0, "run as a cluster node: bootstrap once this many members see each other (0: a broker alone)")
	nodeID := fs.String("node-id", "", "stable node id (default: the host name)")
	join := fs.String("join", "", "comma-separated memberlist seeds host:port to join")
	raftAddr := fs.String("raft-addr", ndef.RaftAddr, "Raft listen address")
	gossipAddr := fs.String("gossip-addr", ndef.GossipAddr, "memberlist listen address")
	grpcAddr := fs.String("grpc-addr", ndef.GRPCAddr, "node-to-node gRPC listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("log-level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, hopts)
	if *logFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, hopts)
	}
	log := slog.New(h)

	opts := broker.Options{Logger: log}
	if *dataDir != "" {
		if err := os.MkdirAll(*dataDir, 0o750); err != nil {
			return fmt.Errorf("data-dir: %w", err)
		}
		st, err := store.Open(filepath.Join(*dataDir, "sessions.db"), store.Options{Logger: log})
		if err != nil {
			return fmt.Errorf("data-dir: %w", err)
		}
		opts.Store = st
	}
	var nd *node.Node
	if *expect > 0 || *join != "" {
		ncfg := ndef
		ncfg.NodeID = *nodeID
		if ncfg.NodeID == "" {
			ncfg.NodeID, _ = os.Hostname()
		}
		ncfg.DataDir = *dataDir
		if ncfg.DataDir == "" {
			return errors.New("a cluster node needs --data-dir")
		}
		ncfg.RaftAddr, ncfg.GossipAddr, ncfg.GRPCAddr = *raftAddr, *gossipAddr, *grpcAddr
		ncfg.BootstrapExpect = *expect
		if *join != "" {
			ncfg.Join = strings.Split(*join, ",")
		}
		ncfg.Logger = log
		var err error
		if nd, err = node.Start(ncfg); err != nil {
			return err
		}
		defer nd.Close()
		opts.Cluster = nd
		log.Info("cluster node started", "node_id", ncfg.NodeID, "gossip", nd.GossipAddr(), "raft", nd.RaftAddr(), "grpc", nd.GRPCAddr())
	}
	cfg := def
	cfg.QueueMessages, cfg.QueueBytes, cfg.WriteQueueBytes = *queuedMsgs, *queuedBytes, *writeQueue
	srv, err := broker.New(cfg, opts)
	if err != nil {
		if opts.Store != nil {
			opts.Store.Close()
		}
		return err
	}
	if nd != nil {
		nd.AttachBroker(srv)
		go reconcile(nd, log)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	log.Info("mqcluster listening", "version", version, "listener", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String())
	case err := <-errc:
		if !errors.Is(err, broker.ErrClosed) {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Close(ctx)
}

// reconcile aligns the cluster's routes for this node with the broker's
// subscriptions once the node is in contact with a leader (after a restart:
// routes of sessions that died go, restored sessions' routes come).
func reconcile(nd *node.Node, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for {
		err := nd.ReconcileRoutes(ctx)
		if err == nil {
			log.Info("routes reconciled with local subscriptions")
			return
		}
		if ctx.Err() != nil || errors.Is(err, node.ErrClosed) {
			log.Warn("routes not reconciled", "err", err)
			return
		}
		time.Sleep(time.Second)
	}
}
