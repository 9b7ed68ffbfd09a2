package main

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/cmd/mqcluster/config"
	"github.com/mqcluster/mqcluster/node"
	"github.com/mqcluster/mqcluster/node/admin"
)

// closeWait bounds the last step of a shutdown (Close: connections that
// did not go during the drain, the store).
const closeWait = 10 * time.Second

// settleWait bounds the wait for the node to commit its clients' last
// changes (session releases, will clears) before it stops.
const settleWait = 5 * time.Second

// listenAdmin binds the admin endpoint, when one is configured.
func listenAdmin(cfg *config.Config) (net.Listener, error) {
	if cfg.Admin.Address == "" {
		return nil, nil
	}
	return admin.Listen(cfg.AdminConfig(nil))
}

// startAdmin serves the admin endpoint on ln (nil: none). The channel it
// returns gets a value when the API asks this node to leave the cluster.
func startAdmin(cfg *config.Config, log *slog.Logger, srv *broker.Server, nd *node.Node, ln net.Listener) (*admin.Server, <-chan struct{}, error) {
	leave := make(chan struct{}, 1)
	if ln == nil {
		return nil, leave, nil
	}
	ac := cfg.AdminConfig(log)
	ac.Version = version
	if ac.NodeID == "" {
		ac.NodeID, _ = os.Hostname()
	}
	var cl admin.Cluster
	if nd != nil {
		cl = nd
		ac.OnLeave = func() {
			select {
			case leave <- struct{}{}:
			default:
			}
		}
	}
	adm, err := admin.New(ac, srv, cl)
	if err != nil {
		return nil, nil, err
	}
	go func() {
		if err := adm.Serve(ln); !errors.Is(err, admin.ErrClosed) {
			log.Error("admin endpoint failed", "err", err)
		}
	}()
	log.Info("admin endpoint listening", "admin", ln.Addr().String(), "token", cfg.Admin.TokenFile != "")
	if !cfg.AdminIsLoopback() && cfg.Admin.TokenFile == "" {
		log.Warn("the admin endpoint is reachable from other hosts and asks for no token: anyone who reaches it can read "+
			"client ids and remove nodes; set admin.token_file, or bind admin.address to a loopback address or a private network",
			"admin", cfg.Admin.Address)
	}
	return adm, leave, nil
}

func closeAdmin(adm *admin.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	adm.Close(ctx)
}

// shutdown takes the node out of service gracefully:
//
//  1. the broker drains: its listeners close and its clients are
//     disconnected at drain.rate per second (5.0 clients get DISCONNECT
//     0x8B, or 0x9C with mqtt.server_reference), within drain.timeout;
//  2. a cluster node keeps Raft and the transport running for up to
//     drain.handoff_grace, until no persistent session is left here: the
//     clients reconnect to other nodes, which take their sessions over
//     from this one; then it lets the commands of its clients' last
//     changes commit;
//  3. when leaving (a leave request, or cluster.leave_on_shutdown), the
//     node leaves Raft and memberlist for good; otherwise it stays a
//     member and a restart rejoins as the same node;
//  4. the broker closes (the store with it); the node closes when serve
//     returns.
//
// A second SIGINT or SIGTERM cuts the drain and the grace short.
func shutdown(cfg *config.Config, log *slog.Logger, srv *broker.Server, nd *node.Node, leave bool, sig <-chan os.Signal) error {
	abort, cancelAbort := context.WithCancel(context.Background())
	defer cancelAbort()
	go func() {
		for {
			select {
			case s := <-sig:
				if s == syscall.SIGHUP {
					continue
				}
				log.Warn("second signal: cutting the drain short", "signal", s.String())
				cancelAbort()
				return
			case <-abort.Done():
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(abort, cfg.Drain.Timeout)
	err := srv.Drain(ctx, cfg.Drain.Rate)
	cancel()
	if err != nil {
		log.Warn("clients not all drained in time", "err", err, "timeout", cfg.Drain.Timeout.String())
	}
	if nd != nil {
		ctx, cancel := context.WithTimeout(abort, cfg.Drain.HandoffGrace)
		left := srv.WaitHandedOff(ctx)
		cancel()
		if left > 0 {
			log.Info("persistent sessions stay on this node: their clients did not reconnect elsewhere in time",
				"sessions", left, "handoff_grace", cfg.Drain.HandoffGrace.String())
		}
		ctx, cancel = context.WithTimeout(abort, settleWait)
		if err := nd.Settle(ctx); err != nil {
			log.Warn("cluster changes of the last clients not all committed", "err", err)
		}
		cancel()
		if leave || cfg.Cluster.LeaveOnShutdown {
			if err := nd.Leave(); err != nil {
				log.Error("leaving the cluster failed", "err", err)
			} else {
				log.Info("left the cluster")
			}
		}
	}
	ctx, cancel = context.WithTimeout(context.Background(), closeWait)
	defer cancel()
	err = srv.Close(ctx)
	log.Info("stopped", "node_id", cmp.Or(cfg.Cluster.NodeID, "-"))
	return err
}
