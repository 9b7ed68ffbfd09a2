package node

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/mqcluster/mqcluster/transport"
)

// tlsStream is Raft's stream layer over mutual TLS with the cluster CA,
// used when the node has a certificate: Raft's traffic (log entries,
// votes, snapshots) is then as private and as closed to non-members as
// the gRPC transport's.
type tlsStream struct {
	net.Listener
	advertise net.Addr
	client    *tls.Config
}

func newTLSStream(addr string, advertise net.Addr, server, client *tls.Config) (*tlsStream, error) {
	ln, err := tls.Listen("tcp", addr, server)
	if err != nil {
		return nil, err
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && advertise == nil && tcp.IP.IsUnspecified() {
		ln.Close()
		return nil, fmt.Errorf("raft listens on %s: set raft_advertise to the address other nodes reach it at", tcp)
	}
	return &tlsStream{Listener: ln, advertise: advertise, client: client}, nil
}

// Addr is the address other nodes reach this one at.
func (s *tlsStream) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.Listener.Addr()
}

// Dial opens a TLS connection to another node's Raft address.
func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return tls.DialWithDialer(d, "tcp", string(addr), s.client)
}

// raftTransport is Raft's network transport: over mutual TLS when the node
// has a cluster certificate, plain TCP otherwise.
func (n *Node) raftTransport(advertise net.Addr, hl hclog.Logger) (*raft.NetworkTransport, error) {
	tcfg := transport.Config{NodeID: n.cfg.NodeID, CertFile: n.cfg.TLSCertFile, KeyFile: n.cfg.TLSKeyFile, CAFile: n.cfg.TLSCAFile}
	server, client, err := transport.PeerTLS(tcfg)
	if err != nil {
		return nil, err
	}
	if server == nil {
		return raft.NewTCPTransportWithLogger(n.cfg.RaftAddr, advertise, 3, 10*time.Second, hl)
	}
	stream, err := newTLSStream(n.cfg.RaftAddr, advertise, server, client)
	if err != nil {
		return nil, err
	}
	return raft.NewNetworkTransportWithLogger(stream, 3, 10*time.Second, hl), nil
}
