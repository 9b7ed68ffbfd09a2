// Command mqcluster runs one mqcluster node: with no arguments a single-node
// MQTT broker on :1883 with its data in ./data.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/auth"
	"github.com/mqcluster/mqcluster/broker/listener"
	"github.com/mqcluster/mqcluster/broker/store"
	"github.com/mqcluster/mqcluster/cmd/mqcluster/bench"
	"github.com/mqcluster/mqcluster/cmd/mqcluster/config"
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
	if len(args) > 0 && args[0] == "passwd" {
		return passwdMain(args[1:])
	}
	if len(args) > 0 && args[0] == "ctl" {
		return ctlMain(args[1:], os.Environ(), os.Stdout)
	}
	if len(args) > 0 && args[0] == "serve" {
		args = args[1:]
	}
	ld, err := config.Load(args, os.Environ(), os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if ld.PrintConfig {
		return ld.Config.Write(os.Stdout)
	}
	log := newLogger(ld.Config.Log)
	for _, w := range ld.Warnings {
		log.Warn(w)
	}
	if ld.File != "" {
		log.Info("configuration read", "file", ld.File)
	}
	return serve(ld.Config, log)
}

// newLogger builds the process's one slog handler (the configuration is
// valid: the level parses).
func newLogger(c config.Log) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// serve runs the broker of cfg until SIGINT or SIGTERM (or a request to
// leave the cluster), then drains it (see shutdown); SIGHUP reloads the TLS
// certificates, the authentication files and the admin token.
func serve(cfg *config.Config, log *slog.Logger) error {
	// The listeners first: a port in use fails before anything starts.
	lns, err := listen(cfg, log)
	if err != nil {
		return err
	}
	admLn, err := listenAdmin(cfg)
	if err != nil {
		for _, ln := range lns {
			ln.Close()
		}
		return err
	}
	closeAll := func() {
		for _, ln := range lns {
			ln.Close()
		}
		if admLn != nil {
			admLn.Close()
		}
	}
	opts := broker.Options{Logger: log, Version: version}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			closeAll()
			return fmt.Errorf("data_dir: %w", err)
		}
		st, err := store.Open(filepath.Join(cfg.DataDir, "sessions.db"), store.Options{Logger: log})
		if err != nil {
			closeAll()
			return fmt.Errorf("data_dir: %w", err)
		}
		opts.Store = st
	}
	fail := func(err error) error {
		closeAll()
		if opts.Store != nil {
			opts.Store.Close()
		}
		return err
	}
	var au *auth.Auth
	if acfg, ok := cfg.AuthConfig(log); ok {
		if au, err = auth.New(acfg); err != nil {
			return fail(fmt.Errorf("auth: %w", err))
		}
		defer au.Close()
		opts.Auth, opts.ACL = au, au
	}
	var nd *node.Node
	if cfg.IsCluster() {
		ncfg, err := cfg.NodeConfig(log)
		if err != nil {
			return fail(err)
		}
		if nd, err = node.Start(ncfg); err != nil {
			return fail(err)
		}
		defer nd.Close()
		opts.Cluster = nd
		log.Info("cluster node started", "node_id", ncfg.NodeID, "gossip", nd.GossipAddr(), "raft", nd.RaftAddr(), "grpc", nd.GRPCAddr())
	}
	srv, err := broker.New(cfg.BrokerConfig(), opts)
	if err != nil {
		return fail(err)
	}
	if nd != nil {
		nd.AttachBroker(srv)
		// New clients wait until this node's copy of the cluster's state
		// has caught up (a restarted node's routes lack what changed while
		// it was down), or until catchUpWait has passed without a leader:
		// without quorum it serves what it knows.
		srv.SetUnavailable("this node is catching up with the cluster's state")
		go reconcile(nd, srv, log)
	}
	adm, leaveReq, err := startAdmin(cfg, log, srv, nd, admLn)
	if err != nil {
		srv.Close(context.Background())
		closeAll()
		return err
	}
	if adm != nil {
		defer closeAdmin(adm)
	}
	errc := make(chan error, len(lns))
	for i, ln := range lns {
		log.Info("mqcluster listening", "version", version, "transport", string(ln.Type()),
			"listener", ln.Addr().String(), "anonymous", cfg.Anonymous(i).String())
		go func() { errc <- srv.Serve(ln) }()
	}
	for _, i := range cfg.LoopbackOnlyAnonymous() {
		log.Warn("clients without credentials are admitted from loopback addresses only: no authentication is configured; "+
			"set allow_anonymous: true on the listener to admit them from anywhere, or configure auth.password_file or auth.jwt",
			"listener", cfg.Listeners[i].Address)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP {
				log.Info("reloading TLS certificates and authentication files", "signal", s.String())
				for _, ln := range lns {
					ln.Reload()
				}
				if au != nil {
					if err := au.Reload(); err != nil {
						log.Error("authentication files not reloaded", "err", err)
					}
				}
				if adm != nil {
					if err := adm.Reload(); err != nil {
						log.Error("admin token not reloaded", "err", err)
					}
				}
				continue
			}
			log.Info("shutting down", "signal", s.String())
			return shutdown(cfg, log, srv, nd, false, sig)
		case <-leaveReq:
			log.Info("leaving the cluster: shutting down")
			return shutdown(cfg, log, srv, nd, true, sig)
		case err := <-errc:
			if errors.Is(err, broker.ErrClosed) {
				continue
			}
			log.Error("listener failed; shutting down", "err", err)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Close(ctx)
			return err
		}
	}
}

// listen opens every configured listener, or none.
func listen(cfg *config.Config, log *slog.Logger) ([]*listener.Listener, error) {
	var lns []*listener.Listener
	for i := range cfg.Listeners {
		lc, err := cfg.ListenerConfig(i, log)
		if err == nil {
			var ln *listener.Listener
			if ln, err = listener.Listen(lc); err == nil {
				lns = append(lns, ln)
				continue
			}
		}
		for _, ln := range lns {
			ln.Close()
		}
		return nil, fmt.Errorf("listeners[%d] (%s %s): %w", i, cfg.Listeners[i].Type, cfg.Listeners[i].Address, err)
	}
	return lns, nil
}

// catchUpWait bounds how long a cluster node refuses new clients after its
// start while it has no leader to catch up from.
const catchUpWait = 15 * time.Second

// reconcile aligns the cluster's routes for this node with the broker's
// subscriptions once the node is in contact with a leader (after a restart:
// routes of sessions that died go, restored sessions' routes come), then
// admits new clients; after catchUpWait it admits them anyway.
func reconcile(nd *node.Node, srv *broker.Server, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	admit := time.AfterFunc(catchUpWait, func() {
		if !srv.Available() {
			log.Warn("not caught up with the cluster's state yet (no leader); admitting clients with the state this node has",
				"waited", catchUpWait.String())
			srv.SetUnavailable("")
		}
	})
	defer admit.Stop()
	defer srv.SetUnavailable("")
	for {
		err := nd.ReconcileRoutes(ctx)
		if err == nil {
			log.Info("caught up with the cluster's state; routes reconciled with local subscriptions")
			return
		}
		if ctx.Err() != nil || errors.Is(err, node.ErrClosed) {
			log.Warn("routes not reconciled", "err", err)
			return
		}
		time.Sleep(time.Second)
	}
}
