package admin

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/fsm"
	"github.com/mqcluster/mqcluster/node"
	"github.com/mqcluster/mqcluster/transport"
)

// Sentinel errors.
var (
	ErrInvalidConfig = errors.New("admin: invalid config")
	ErrClosed        = errors.New("admin: closed")
)

// Broker is what the endpoints read of the broker; *broker.Server
// satisfies it.
type Broker interface {
	Stats() *broker.Stats
	Figures() broker.Figures
	Clients() []broker.ClientStatus
	Sessions() []broker.SessionStatus
	Subscriptions(clientID string) ([]broker.ClientSubscription, bool)
	Accepting() bool
	Available() bool
	Draining() bool
}

// Cluster is what they read of the cluster node, and the one change they
// ask of it; *node.Node satisfies it.
type Cluster interface {
	ID() string
	RaftStatus() node.RaftStatus
	InContact() bool
	Members() []node.MemberStatus
	HealthScore() int
	TransportStats() transport.Stats
	Latencies() node.Latencies
	LaggingRoutes() int64
	FSM() *fsm.FSM
	RemoveMember(ctx context.Context, id string) error
}

// Config is the admin endpoints' configuration.
type Config struct {
	// Address is the host:port to listen on (port 0 picks one).
	Address string
	// TokenFile, when set, holds the bearer token that /metrics and the
	// API require (surrounding white space ignored). The health endpoints
	// never need it.
	TokenFile string
	// NodeID names a broker alone in the API (a cluster node's id comes
	// from the node).
	NodeID  string
	Version string
	Logger  *slog.Logger
	// OnLeave, when set, starts this node's departure from the cluster:
	// POST /api/v1/leave calls it once and answers 202 at once.
	OnLeave func()
	// MaxApplyLag is how far the state machine may trail the commit index
	// and the node still be ready, once it caught up after its start.
	MaxApplyLag uint64
}

// DefaultConfig listens on loopback port 8081.
func DefaultConfig() Config {
	return Config{Address: "127.0.0.1:8081", MaxApplyLag: 10000}
}

// Validate reports every bad setting.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		errs = append(errs, fmt.Errorf("%w: address %q: want host:port", ErrInvalidConfig, c.Address))
	}
	if c.TokenFile != "" {
		if _, err := readToken(c.TokenFile); err != nil {
			errs = append(errs, fmt.Errorf("%w: token_file: %w", ErrInvalidConfig, err))
		}
	}
	return errors.Join(errs...)
}

// readToken reads a bearer token file.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok := string(bytes.TrimSpace(b))
	if tok == "" {
		return "", errors.New("the file is empty")
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", errors.New("the token holds white space")
	}
	return tok, nil
}

// Server serves the admin endpoints.
type Server struct {
	cfg     Config
	log     *slog.Logger
	brk     Broker
	cl      Cluster // nil for a broker alone
	reg     *prometheus.Registry
	start   time.Time
	token   atomic.Pointer[string]
	srv     *http.Server
	leaving atomic.Bool

	readyMu sync.Mutex
	ready   readyState
}

// New builds the server: its metrics registry and routes. cl is nil for a
// broker that is not a cluster node (a nil *node.Node must not be passed
// as a non-nil Cluster).
func New(cfg Config, b Broker, cl Cluster) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log.With("component", "admin"), brk: b, cl: cl, start: time.Now()}
	if cl != nil {
		s.log = s.log.With("node_id", cl.ID())
	}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	s.reg = prometheus.NewRegistry()
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newBrokerCollector(b, cfg.Version))
	if cl != nil {
		s.reg.MustRegister(newClusterCollector(cl))
	}
	s.srv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	return s, nil
}

// Reload reads the token file again (on SIGHUP); the previous token stays
// when it cannot be read.
func (s *Server) Reload() error {
	if s.cfg.TokenFile == "" {
		return nil
	}
	tok, err := readToken(s.cfg.TokenFile)
	if err != nil {
		return fmt.Errorf("admin: token_file: %w", err)
	}
	s.token.Store(&tok)
	return nil
}

// Listen binds cfg.Address (the command binds it before anything else
// starts, so that a port in use fails early).
func Listen(cfg Config) (net.Listener, error) {
	ln, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	return ln, nil
}

// Serve serves ln until Close; it then returns ErrClosed.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return ErrClosed
}

// Close stops serving: requests in progress get until ctx ends.
func (s *Server) Close(ctx context.Context) error {
	return s.srv.Shutdown(ctx)
}

// routes maps the endpoints.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.authorized(promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn), ErrorHandling: promhttp.ContinueOnError})))
	api := func(pattern string, h http.HandlerFunc) { mux.Handle(pattern, s.authorized(h)) }
	api("GET /api/v1/status", s.getStatus)
	api("GET /api/v1/members", s.getMembers)
	api("GET /api/v1/nodes", s.getMembers)
	api("GET /api/v1/clients", s.getClients)
	api("GET /api/v1/sessions", s.getSessions)
	api("GET /api/v1/subscriptions", s.getSubscriptions)
	api("POST /api/v1/leave", s.postLeave)
	api("DELETE /api/v1/members/{id}", s.deleteMember)
	return mux
}

// authorized requires the bearer token, when one is configured.
func (s *Server) authorized(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok := s.token.Load(); tok != nil {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(*tok)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="mqcluster"`)
				writeJSON(w, http.StatusUnauthorized, Error{Error: "a valid bearer token is required"})
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

// The broker and the node are what the command hands to New.
var (
	_ Broker  = (*broker.Server)(nil)
	_ Cluster = (*node.Node)(nil)
)
