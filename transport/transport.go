package transport

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// Transport is this node's end of the cluster transport: the gRPC server
// the peers call, and the client connections to the peers.
type Transport struct {
	cfg   Config
	h     Handlers
	log   *slog.Logger
	tls   *tlsMaterial
	start time.Time // the origin of now(), a monotonic clock

	srv *grpc.Server

	ctx    context.Context // ends at Close; parent of every sender
	cancel context.CancelFunc
	wg     sync.WaitGroup // senders, their streams, receivers' readers, Start's Serve

	mu        sync.Mutex
	closed    bool
	conns     map[connKey]*grpc.ClientConn
	peers     atomic.Pointer[map[string]*peerSender] // copy on write under mu
	lastEpoch uint64                                 // under mu

	local   atomic.Uint64 // this node's applied index
	localN  notifier      // notified when local grows
	applied appliedTable  // the peers' applied indexes
	recv    receiverTable // per sending node: dedup state

	received       atomic.Uint64
	duplicates     atomic.Uint64
	deliverErrors  atomic.Uint64
	droppedUnknown atomic.Uint64
	refused        atomic.Uint64
	refusedLogged  atomic.Int64 // now() of the last "call refused" log, minus a second at start

	// unpacked makes the receiver answer hellos as one of a version before
	// packed batches (tests of a mixed-version cluster); legacyBatches
	// counts the batches of protobuf messages it received.
	unpacked      atomic.Bool
	legacyBatches atomic.Uint64

	closeOnce sync.Once
}

// connKey: one client connection per (address, expected node id); id is ""
// for calls made by address only (a seed to join, the leader's address).
type connKey struct {
	addr string
	id   string
}

// New returns a Transport that is not serving yet (see Start and Serve) and
// forwards to no peer yet (see SetPeer).
func New(cfg Config, h Handlers) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tm, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	t := &Transport{
		cfg:   cfg,
		h:     h,
		log:   log.With("component", "transport", "node_id", cfg.NodeID),
		tls:   tm,
		start: time.Now(),
		conns: map[connKey]*grpc.ClientConn{},
	}
	t.refusedLogged.Store(-int64(time.Second))
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.peers.Store(&map[string]*peerSender{})
	t.applied.init()
	t.recv.init()

	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(cfg.MaxMsgSize),
		grpc.MaxSendMsgSize(cfg.MaxMsgSize),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.MaxHeaderListSize(cfg.MaxHeaderListSize),
		grpc.ConnectionTimeout(cfg.DialTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             cfg.KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:    cfg.KeepaliveTime,
			Timeout: cfg.KeepaliveTimeout,
			// A connection without a call for this long is closed; a peer
			// always has its forwarding stream open.
			MaxConnectionIdle: 5 * time.Minute,
		}),
		grpc.ChainUnaryInterceptor(t.serverUnary),
		grpc.ChainStreamInterceptor(t.serverStream),
		grpc.WaitForHandlers(true),
		grpc.ForceServerCodecV2(codec{}),
		experimental.BufferPool(bufPool),
	}
	if tm != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tm.serverConfig())))
	}
	t.srv = grpc.NewServer(opts...)
	pb.RegisterClusterServer(t.srv, &server{t: t})
	return t, nil
}

// Start serves on cfg.Listener, or listens on cfg.ListenAddr, in a
// goroutine that Close stops, and returns the address it serves on.
func (t *Transport) Start() (net.Addr, error) {
	ln := t.cfg.Listener
	if ln == nil {
		if t.cfg.ListenAddr == "" {
			return nil, fmt.Errorf("%w: no ListenAddr or Listener", ErrInvalidConfig)
		}
		var err error
		if ln, err = net.Listen("tcp", t.cfg.ListenAddr); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		ln.Close()
		return nil, ErrClosed
	}
	t.wg.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		if err := t.Serve(ln); err != nil {
			t.log.Error("serve", "err", err)
		}
	}()
	return ln.Addr(), nil
}

// Serve serves the cluster service on ln until Close; it returns nil after
// Close. It closes ln.
func (t *Transport) Serve(ln net.Listener) error {
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		ln.Close()
		return ErrClosed
	}
	err := t.srv.Serve(netutil.LimitListener(ln, t.cfg.MaxConnections))
	t.mu.Lock()
	closed = t.closed
	t.mu.Unlock()
	if closed {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// Close stops the server, the senders (whose pending messages get
// ErrClosed) and the client connections, and waits for every goroutine of
// the Transport. It may be called more than once, and concurrently.
func (t *Transport) Close() error {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		for _, s := range *t.peers.Load() {
			s.stop(ErrClosed)
		}
		t.mu.Unlock()
		t.cancel()
		t.srv.Stop() // closes the listeners and connections, waits for handlers
		t.applied.close()
		t.wg.Wait()
		t.mu.Lock()
		conns := t.conns
		t.conns = map[connKey]*grpc.ClientConn{}
		t.mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return nil
}

// SetPeer tells the transport where peer nodeID serves (its gRPC address),
// and starts forwarding to it: its sender opens the stream at once (applied
// indexes travel on it even when no message does). Calling it again with
// another address moves the stream there.
func (t *Transport) SetPeer(nodeID, addr string) error {
	if nodeID == "" || len(nodeID) > maxNodeIDLen || addr == "" {
		return fmt.Errorf("%w: peer %q at %q", ErrInvalid, nodeID, addr)
	}
	if nodeID == t.cfg.NodeID {
		return fmt.Errorf("%w: %q is this node", ErrInvalid, nodeID)
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrClosed
	}
	peers := *t.peers.Load()
	if s := peers[nodeID]; s != nil {
		old := s.setAddr(addr)
		var stale *grpc.ClientConn
		if old != addr {
			// The sender is on the old connection: closing it ends the
			// stream, and the sender reopens it at the new address.
			k := connKey{old, nodeID}
			stale = t.conns[k]
			delete(t.conns, k)
		}
		t.mu.Unlock()
		if stale != nil {
			stale.Close()
			t.log.Info("peer moved", "peer", nodeID, "from", old, "to", addr)
		}
		return nil
	}
	s := newPeerSender(t, nodeID, addr, t.nextEpochLocked())
	next := make(map[string]*peerSender, len(peers)+1)
	for k, v := range peers {
		next[k] = v
	}
	next[nodeID] = s
	t.peers.Store(&next)
	t.wg.Add(1)
	t.mu.Unlock()
	go s.run()
	t.log.Info("peer added", "peer", nodeID, "addr", addr)
	return nil
}

// RemovePeer stops forwarding to nodeID: messages still pending for it get
// ErrPeerRemoved (not waiting for that is why it may be called from a done
// callback), its connection is closed, and waiters on its applied index get
// ErrPeerRemoved.
func (t *Transport) RemovePeer(nodeID string) {
	t.mu.Lock()
	peers := *t.peers.Load()
	s := peers[nodeID]
	if s == nil {
		t.mu.Unlock()
		return
	}
	next := make(map[string]*peerSender, len(peers))
	for k, v := range peers {
		if k != nodeID {
			next[k] = v
		}
	}
	t.peers.Store(&next)
	s.stop(ErrPeerRemoved)
	k := connKey{s.address(), nodeID}
	c := t.conns[k]
	delete(t.conns, k)
	t.mu.Unlock()
	if c != nil {
		c.Close()
	}
	t.applied.remove(nodeID)
	t.log.Info("peer removed", "peer", nodeID)
}

// Peers returns the node ids of the peers set with SetPeer, sorted.
func (t *Transport) Peers() []string {
	peers := *t.peers.Load()
	ids := make([]string, 0, len(peers))
	for id := range peers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// nextEpochLocked draws a forwarding epoch: wall-clock nanoseconds, strictly
// increasing within the process. Called with t.mu held.
func (t *Transport) nextEpochLocked() uint64 {
	e := uint64(time.Now().UnixNano())
	if e <= t.lastEpoch {
		e = t.lastEpoch + 1
	}
	t.lastEpoch = e
	return e
}

// now is the time since New on the monotonic clock.
func (t *Transport) now() time.Duration { return time.Since(t.start) }

// conn returns the client connection for (addr, id), creating it. With id
// "", a connection to addr made for a peer is used if there is one.
func (t *Transport) conn(addr, id string) (*grpc.ClientConn, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if c := t.conns[connKey{addr, id}]; c != nil {
		return c, nil
	}
	if id == "" {
		for k, c := range t.conns {
			if k.addr == addr {
				return c, nil
			}
		}
	}
	// grpc.NewClient does no I/O: it connects on the first call.
	c, err := grpc.NewClient(addr, t.dialOptions(id)...)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, addr, err)
	}
	t.conns[connKey{addr, id}] = c
	return c, nil
}

func (t *Transport) dialOptions(id string) []grpc.DialOption {
	c := t.cfg
	creds := insecure.NewCredentials()
	if t.tls != nil {
		creds = credentials.NewTLS(t.tls.clientConfig(id))
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(c.MaxMsgSize),
			grpc.MaxCallSendMsgSize(c.MaxMsgSize),
			grpc.ForceCodecV2(codec{}),
		),
		experimental.WithBufferPool(bufPool),
		grpc.WithMaxHeaderListSize(c.MaxHeaderListSize),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                c.KeepaliveTime,
			Timeout:             c.KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  c.ReconnectMin,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   c.ReconnectMax,
			},
			MinConnectTimeout: c.DialTimeout,
		}),
		grpc.WithChainUnaryInterceptor(t.clientUnary),
		grpc.WithChainStreamInterceptor(t.clientStream),
	}
	if c.Dialer != nil {
		opts = append(opts, grpc.WithContextDialer(c.Dialer))
	}
	return opts
}
