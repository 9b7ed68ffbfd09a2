package broker

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
	"github.com/mqcluster/mqcluster/broker/topic"
)

// ErrClosed is returned by Serve after Close or Drain.
var ErrClosed = errors.New("broker: server closed")

// Options are the collaborators of a Server; every one may be nil.
type Options struct {
	Logger *slog.Logger
	// Auth authenticates CONNECTs; nil admits everyone.
	Auth Authenticator
	// ACL authorizes publishes and subscriptions; nil allows everything.
	ACL Authorizer
	// Store persists sessions, their queues and the retained set; nil keeps
	// everything in memory only.
	Store Store
	// Cluster, when set, makes this broker one node of a cluster.
	Cluster Cluster
	// Version is the build version published in $SYS/broker/version
	// ("dev" when empty).
	Version string
}

// Server is one MQTT broker: it accepts connections on any number of
// listeners and routes messages between their clients.
type Server struct {
	cfg     Config
	log     *slog.Logger
	auth    Authenticator
	acl     Authorizer
	store   Store
	cluster Cluster
	lim     packet.Limits

	subs     *topic.Trie[subValue]
	retained *retainedSet
	shares   shareState
	sys      *sysTree

	mu        sync.Mutex
	sessions  map[string]*session
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	perIP     map[string]int
	connects  *rateLimiter
	closed    bool
	draining  bool // Drain: no new connections (drain.go)
	// unavailable refuses new clients while set (availability.go).
	unavailable atomic.Pointer[error]
	wg          sync.WaitGroup

	routes        routeCounts
	recent        recentSet     // hand-on deduplication (handon.go)
	moved         movedSessions // sessions that left lately (passon.go)
	stats         Stats
	start         time.Time
	forwardLogged atomic.Int64 // unix ns of the last forward-failure log line
	passOnLogged  atomic.Int64 // the same for pass-on failures (passon.go)
	// msgIDs draws Message.ID; it starts at the start time in nanoseconds
	// so that ids keep growing across restarts.
	msgIDs atomic.Uint64
}

// Stats are the broker's counters, read with atomic loads.
type Stats struct {
	ConnectionsTotal atomic.Int64
	Connected        atomic.Int64
	MessagesIn       atomic.Int64
	MessagesOut      atomic.Int64
	BytesIn          atomic.Int64
	BytesOut         atomic.Int64
	DroppedQoS0      atomic.Int64 // slow consumer: QoS 0 dropped from a full write queue
	DroppedQueueFull atomic.Int64 // session queue full
	DroppedExpired   atomic.Int64 // message expiry passed before delivery
	DroppedTooLarge  atomic.Int64 // larger than the client's Maximum Packet Size
	ProtocolErrors   atomic.Int64
	// RefusedConnections counts connections closed by MaxConnections or
	// MaxConnectionsPerIP; RateLimitedConnects CONNECTs refused with 0x9F.
	RefusedConnections atomic.Int64
	// ForwardFailures counts messages some other node did not acknowledge.
	ForwardFailures atomic.Int64
	// PassedOn counts messages sent on to a session that moved to another
	// node, PassOnFailures those its new owner did not acknowledge
	// (passon.go).
	PassedOn       atomic.Int64
	PassOnFailures atomic.Int64
	// HoldsTimedOut counts session queues the cluster released after the
	// hold bound while another node could still hold older messages of
	// the session (hold.go).
	HoldsTimedOut atomic.Int64
	// RetainFailures counts retained changes the cluster did not record.
	RetainFailures      atomic.Int64
	RateLimitedConnects atomic.Int64
	Panics              atomic.Int64
	SlowConsumers       atomic.Int64 // disconnected: their queue of control packets was full
	// MaxConnected is the most clients connected at once; PacketsIn and
	// PacketsOut count control packets of every type, PublishesIn the
	// PUBLISH packets received from clients ($SYS figures, see sys.go).
	MaxConnected atomic.Int64
	PacketsIn    atomic.Int64
	PacketsOut   atomic.Int64
	PublishesIn  atomic.Int64
	// RateLimitedPublishes counts PUBLISHes over MaxPublishRate: refused,
	// dropped or held back (see ratelimit.go).
	RateLimitedPublishes atomic.Int64
	// PublishesInQoS splits PublishesIn and MessagesOutQoS MessagesOut by
	// QoS; each connection adds its counts once per read or write batch.
	PublishesInQoS [3]atomic.Int64
	MessagesOutQoS [3]atomic.Int64
}

// New builds a server. It does not listen yet: call Serve.
func New(cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:       cfg,
		log:       log.With("component", "broker"),
		auth:      opts.Auth,
		acl:       opts.ACL,
		store:     opts.Store,
		cluster:   opts.Cluster,
		subs:      topic.New[subValue](),
		retained:  newRetainedSet(),
		sessions:  make(map[string]*session),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		perIP:     make(map[string]int),
		connects:  newRateLimiter(cfg.ConnectRate, cfg.ConnectBurst),
		start:     time.Now(),
	}
	s.lim = packet.DefaultLimits()
	s.lim.MaxPacketSize = cfg.MaxPacketSize
	s.lim.TopicAliasMaximum = cfg.TopicAliasMaximum
	s.lim.MaxTopicLevels = cfg.MaxTopicLevels
	s.lim.MaxClientIDLen = cfg.MaxClientIDLen
	s.lim.MaxClientIDLenV5 = cfg.MaxClientIDLen
	s.lim.ReceiveMaximum = cfg.ReceiveMaximum
	s.shares.init()
	s.sys = newSysTree(s, opts.Version)
	s.msgIDs.Store(uint64(s.start.UnixNano()))
	if s.store != nil {
		if err := s.restore(); err != nil {
			return nil, err
		}
	}
	s.sys.start(time.Now())
	return s, nil
}

// StartedAt is when this server started: what its sessions hold that was
// not restored from its store (StoredMessage.Restored) came since.
func (s *Server) StartedAt() time.Time { return s.start }

// Stats returns the live counters.
func (s *Server) Stats() *Stats { return &s.stats }

// Serve accepts connections on ln until Close or Drain. It always returns a
// non-nil error; after Close or Drain it is ErrClosed.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed || s.draining {
		s.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed || s.draining
			s.mu.Unlock()
			if closed {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.accept(nc)
	}
}

// accept starts the goroutine that owns one new connection.
func (s *Server) accept(nc net.Conn) {
	c := newConn(s, nc)
	s.mu.Lock()
	if s.closed || s.draining {
		s.mu.Unlock()
		nc.Close()
		return
	}
	if !s.admitLocked(c) {
		s.mu.Unlock()
		s.stats.RefusedConnections.Add(1)
		s.log.Debug("connection over the limits; closed", "remote", nc.RemoteAddr().String())
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	s.stats.ConnectionsTotal.Add(1)
	go func() {
		defer s.wg.Done()
		c.serve()
		s.mu.Lock()
		delete(s.conns, c)
		s.releaseLocked(c)
		s.mu.Unlock()
	}()
}

// Close stops the listeners, disconnects every client (5.0 clients get
// DISCONNECT 0x8B) and waits for their goroutines until ctx ends.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.disconnect(packet.ServerShuttingDown)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	s.sys.stop()
	s.stopTimers()
	if s.store != nil {
		if cerr := s.store.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}
