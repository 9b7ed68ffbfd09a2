package listener

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"
)

// Type is the transport of a listener.
type Type string

// The transports.
const (
	TCP Type = "tcp" // MQTT over TCP
	TLS Type = "tls" // MQTT over TLS
	WS  Type = "ws"  // MQTT over WebSocket
	WSS Type = "wss" // MQTT over WebSocket over TLS
)

// Anonymous is a listener's policy for clients that present no
// credentials.
type Anonymous int

// The anonymous policies.
const (
	// AnonymousLoopback admits them from loopback addresses only (with the
	// PROXY protocol: the address the proxy reports).
	AnonymousLoopback Anonymous = iota
	// AnonymousAllow admits them from anywhere.
	AnonymousAllow
	// AnonymousDeny refuses them (CONNACK 0x87 / return code 5).
	AnonymousDeny
)

func (a Anonymous) String() string {
	switch a {
	case AnonymousAllow:
		return "allow"
	case AnonymousDeny:
		return "deny"
	}
	return "loopback"
}

// Config is one listener.
type Config struct {
	Type    Type
	Address string // host:port; port 0 picks one
	// ProxyProtocol requires a PROXY protocol v1 or v2 header at the start
	// of every connection (from a load balancer); the address it carries
	// becomes the connection's RemoteAddr. A connection without a valid
	// header is closed.
	ProxyProtocol bool
	Anonymous     Anonymous
	// TLS is required by tls and wss listeners.
	TLS *TLSConfig
	// Path is the HTTP path of a ws or wss listener.
	Path string
	// AllowedOrigins, when not empty, are the only Origin header values a
	// WebSocket upgrade may carry (a request without Origin, from a
	// non-browser client, is always accepted).
	AllowedOrigins []string
	// HandshakeTimeout bounds reading a PROXY header and a WebSocket
	// upgrade request (the broker's CONNECT deadline covers the rest).
	HandshakeTimeout time.Duration
	// MaxMessageSize bounds one WebSocket message (the broker's maximum
	// packet size).
	MaxMessageSize int
	Logger         *slog.Logger
}

// DefaultConfig is a TCP listener on :1883.
func DefaultConfig() Config {
	return Config{Type: TCP, Address: ":1883", Path: "/mqtt", HandshakeTimeout: 10 * time.Second, MaxMessageSize: 1 << 20}
}

// Validate reports the bad settings by name.
func (c *Config) Validate() error {
	var errs []error
	switch c.Type {
	case TCP, WS:
		if c.TLS != nil {
			errs = append(errs, fmt.Errorf("tls: only for tls and wss listeners, not %s", c.Type))
		}
	case TLS, WSS:
		if c.TLS == nil {
			errs = append(errs, fmt.Errorf("tls: required by a %s listener", c.Type))
		} else {
			for _, err := range Unjoin(c.TLS.Validate()) {
				errs = append(errs, fmt.Errorf("tls.%w", err))
			}
		}
	default:
		errs = append(errs, fmt.Errorf("type: %q: want tcp, tls, ws or wss", c.Type))
	}
	if _, _, err := net.SplitHostPort(c.Address); err != nil {
		errs = append(errs, fmt.Errorf("address: %q: %w", c.Address, err))
	}
	if c.Type == WS || c.Type == WSS {
		if !strings.HasPrefix(c.Path, "/") {
			errs = append(errs, fmt.Errorf("path: %q: want an absolute path such as /mqtt", c.Path))
		}
		if c.MaxMessageSize < 16 {
			errs = append(errs, fmt.Errorf("max message size: %d: want >= 16", c.MaxMessageSize))
		}
	}
	if c.HandshakeTimeout <= 0 {
		errs = append(errs, fmt.Errorf("handshake timeout: %v: want > 0", c.HandshakeTimeout))
	}
	return errors.Join(errs...)
}

// Unjoin returns the errors that errors.Join joined into err (err itself
// when it is not a joined error; none when it is nil), so that a caller
// can prefix each with where it comes from.
func Unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// Listener accepts MQTT connections of one transport. It is a net.Listener.
type Listener struct {
	cfg   Config
	log   *slog.Logger
	inner net.Listener // TCP, possibly behind the PROXY reader
	certs *certStore   // tls and wss
	tls   *tls.Config  // tls
	ws    *wsServer    // ws and wss
}

// Listen opens the listener's socket and starts whatever serves it.
func Listen(cfg Config) (*Listener, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Listener{cfg: cfg, log: log.With("component", "listener", "transport", string(cfg.Type))}
	if cfg.TLS != nil {
		var err error
		if l.certs, err = newCertStore(cfg.TLS.CertFile, cfg.TLS.KeyFile, l.log); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		if l.tls, err = cfg.TLS.serverConfig(l.certs); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
	}
	ln, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, err
	}
	l.inner = ln
	if cfg.ProxyProtocol {
		l.inner = newProxyListener(ln, cfg.HandshakeTimeout, l.log)
	}
	l.log = l.log.With("addr", ln.Addr().String())
	if cfg.Type == WS || cfg.Type == WSS {
		l.ws = newWSServer(l)
	}
	return l, nil
}

// Accept waits for the next connection. TLS connections are returned
// before their handshake, which runs at their first read.
func (l *Listener) Accept() (net.Conn, error) {
	if l.ws != nil {
		return l.ws.accept()
	}
	nc, err := l.inner.Accept()
	if err != nil {
		return nil, err
	}
	p := l.peer(nc.RemoteAddr())
	if l.cfg.Type == TLS {
		return &tlsConn{Conn: tls.Server(nc, l.tls), peer: p, identity: l.cfg.TLS.Identity}, nil
	}
	switch c := nc.(type) {
	case *net.TCPConn:
		return &tcpConn{TCPConn: c, peer: p}, nil
	case *proxyConn:
		c.peer = p
		return c, nil
	}
	return nc, nil
}

// Close stops accepting; connections already returned stay open.
func (l *Listener) Close() error {
	if l.ws != nil {
		l.ws.close()
		l.inner.Close() // already closed, unless the HTTP server had not started
		return nil
	}
	return l.inner.Close()
}

// Addr is the address the listener is bound to.
func (l *Listener) Addr() net.Addr { return l.inner.Addr() }

// Type is the listener's transport.
func (l *Listener) Type() Type { return l.cfg.Type }

// Reload reloads the TLS certificate and key from their files now (on
// SIGHUP); they are also reloaded on their own when the files change. A
// pair that fails to load is logged and the previous one kept.
func (l *Listener) Reload() {
	if l.certs != nil {
		l.certs.reload(true)
	}
}

// peer is what the broker learns from any accepted connection beyond
// net.Conn: whether a client without credentials may connect on it.
type peer struct{ anonymous bool }

// AllowAnonymous implements broker.AnonymousPolicy.
func (p peer) AllowAnonymous() bool { return p.anonymous }

// peer returns the policy for a connection from remote.
func (l *Listener) peer(remote net.Addr) peer {
	switch l.cfg.Anonymous {
	case AnonymousAllow:
		return peer{anonymous: true}
	case AnonymousDeny:
		return peer{}
	}
	return peer{anonymous: IsLoopback(remote)}
}

// IsLoopback reports whether a is a loopback address.
func IsLoopback(a net.Addr) bool {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case nil:
		return false
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		host = a.String()
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// IsLoopbackAddress reports whether a listen address (host:port) binds
// loopback interfaces only: "localhost", 127.0.0.0/8 or ::1. An empty host
// binds every interface.
func IsLoopbackAddress(address string) bool {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// tcpConn is a plain TCP connection. Embedding *net.TCPConn keeps its
// SyscallConn, through which the broker writes without a goroutine and,
// since nothing is buffered in front of the socket (ReadsSocket), reads.
type tcpConn struct {
	*net.TCPConn
	peer
}

// ReadsSocket reports that Read reads straight from the socket of
// SyscallConn.
func (*tcpConn) ReadsSocket() bool { return true }
