package transport

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Config of a Transport. Start from DefaultConfig.
type Config struct {
	// NodeID is this node's stable id; it is sent with every call and, with
	// mutual TLS, must be named by this node's certificate.
	NodeID string

	// ListenAddr is where Start listens (host:port; port 0 picks one), unless
	// Listener is set, in which case Start serves on Listener.
	ListenAddr string
	Listener   net.Listener

	// Mutual TLS with a cluster CA: all three set, or none. When set, the
	// server requires and verifies a client certificate signed by the CA,
	// and clients verify the server's; a certificate names its node id in
	// its Common Name or a DNS SAN (and should carry both ExtKeyUsage
	// ServerAuth and ClientAuth, as every node is both).
	CertFile string
	KeyFile  string
	CAFile   string

	// MaxMsgSize bounds every gRPC message sent and received (a forwarding
	// batch, a command, a takeover state). All nodes should use the same.
	MaxMsgSize int
	// MaxConcurrentStreams bounds the streams of one connection (HTTP/2
	// SETTINGS_MAX_CONCURRENT_STREAMS); a client waits for a free one.
	MaxConcurrentStreams uint32
	// MaxHeaderListSize bounds the metadata of a call, both directions.
	MaxHeaderListSize uint32
	// MaxTakeOverBytes bounds the session state a TakeOver brings back (it
	// travels in chunks of MaxMsgSize/2).
	MaxTakeOverBytes int
	// MaxConnections bounds the connections the server holds at once; it
	// stops accepting at the limit (a connection that does not complete its
	// handshake within DialTimeout is closed).
	MaxConnections int

	// Forwarding, per peer.
	//
	// OutboxMessages and OutboxBytes bound what is waiting to be sent plus
	// what was sent and is not yet acknowledged; a Send beyond either gets
	// ErrOutboxFull at once.
	OutboxMessages int
	OutboxBytes    int
	// MaxBatchMessages and MaxBatchBytes bound one ForwardBatch frame.
	MaxBatchMessages int
	MaxBatchBytes    int
	// AckTimeout: a message not acknowledged this long after Send gets
	// ErrUnacknowledged. MaxAttempts: nor is a message sent more often
	// than this (a first send plus resends after reconnects).
	AckTimeout  time.Duration
	MaxAttempts int
	// HeartbeatInterval: an idle stream sends a heartbeat (with the applied
	// index) this often, in both directions. PeerTimeout: a stream that
	// hears nothing from the peer for this long is closed and reopened.
	HeartbeatInterval time.Duration
	PeerTimeout       time.Duration
	// ReconnectMin and ReconnectMax bound the backoff between attempts to
	// open a forwarding stream (doubling, with jitter).
	ReconnectMin time.Duration
	ReconnectMax time.Duration

	// DialTimeout bounds establishing a connection (TCP, TLS, HTTP/2) and,
	// on the server, the handshake of an accepted connection; it also bounds
	// opening a forwarding stream (the hello and its answer).
	DialTimeout time.Duration
	// CallTimeout is the deadline of a unary call whose context has none.
	CallTimeout time.Duration
	// HandlerTimeout bounds a unary handler on the server, whatever
	// deadline the caller sent.
	HandlerTimeout time.Duration

	// Keepalive: clients ping an idle connection every KeepaliveTime and
	// drop it when the answer takes longer than KeepaliveTimeout; the
	// server does the same and closes a connection whose client pings more
	// often than KeepaliveMinTime (gRPC's enforcement policy).
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	KeepaliveMinTime time.Duration

	// Dialer, if set, opens client connections (tests use it to break them).
	Dialer func(ctx context.Context, addr string) (net.Conn, error)

	// Logger gets component=transport; nil discards.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults; NodeID and ListenAddr (or Listener)
// are still to be set.
func DefaultConfig() Config {
	return Config{
		MaxMsgSize:           4 << 20,
		MaxConcurrentStreams: 256,
		MaxHeaderListSize:    16 << 10,
		MaxConnections:       1024,
		MaxTakeOverBytes:     64 << 20,
		OutboxMessages:       10000,
		OutboxBytes:          32 << 20,
		MaxBatchMessages:     512,
		MaxBatchBytes:        256 << 10,
		AckTimeout:           5 * time.Second,
		MaxAttempts:          5,
		HeartbeatInterval:    100 * time.Millisecond,
		PeerTimeout:          3 * time.Second,
		ReconnectMin:         50 * time.Millisecond,
		ReconnectMax:         2 * time.Second,
		DialTimeout:          3 * time.Second,
		CallTimeout:          5 * time.Second,
		HandlerTimeout:       15 * time.Second,
		KeepaliveTime:        10 * time.Second,
		KeepaliveTimeout:     5 * time.Second,
		KeepaliveMinTime:     5 * time.Second,
	}
}

// maxNodeIDLen bounds a node id (it travels in metadata and certificates).
const maxNodeIDLen = 253

// batchOverhead is what a ForwardFrame with a ForwardBatch adds to its
// messages, with room to spare: frame and batch tags and lengths, seq_first,
// applied_index.
const batchOverhead = 64

// msgOverhead is what one message adds to a batch: its tag and length.
const msgOverhead = 1 + 5

// Validate reports the first problem of c, wrapping ErrInvalidConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	switch {
	case c.NodeID == "":
		return bad("NodeID is empty")
	case len(c.NodeID) > maxNodeIDLen:
		return bad("NodeID is longer than %d bytes", maxNodeIDLen)
	case (c.CertFile != "" || c.KeyFile != "" || c.CAFile != "") &&
		(c.CertFile == "" || c.KeyFile == "" || c.CAFile == ""):
		return bad("CertFile, KeyFile and CAFile go together")
	case c.MaxMsgSize < 4<<10:
		return bad("MaxMsgSize %d is below 4 KiB", c.MaxMsgSize)
	case c.MaxConcurrentStreams < 4:
		return bad("MaxConcurrentStreams %d is below 4", c.MaxConcurrentStreams)
	case c.MaxHeaderListSize < 1<<10:
		return bad("MaxHeaderListSize %d is below 1 KiB", c.MaxHeaderListSize)
	case c.MaxConnections < 1:
		return bad("MaxConnections must be positive")
	case c.MaxTakeOverBytes < 0:
		return bad("MaxTakeOverBytes must not be negative")
	case c.OutboxMessages < 1 || c.OutboxBytes < 1:
		return bad("OutboxMessages and OutboxBytes must be positive")
	case c.MaxBatchMessages < 1:
		return bad("MaxBatchMessages must be positive")
	case c.MaxBatchBytes < 1 || c.MaxBatchBytes > c.MaxMsgSize-batchOverhead:
		return bad("MaxBatchBytes %d must be positive and fit in MaxMsgSize", c.MaxBatchBytes)
	case c.MaxAttempts < 1:
		return bad("MaxAttempts must be at least 1")
	case c.AckTimeout <= 0, c.HeartbeatInterval <= 0, c.PeerTimeout <= 0,
		c.ReconnectMin <= 0, c.DialTimeout <= 0, c.CallTimeout <= 0, c.HandlerTimeout <= 0,
		c.KeepaliveTime <= 0, c.KeepaliveTimeout <= 0, c.KeepaliveMinTime <= 0:
		return bad("every duration must be positive")
	case c.ReconnectMax < c.ReconnectMin:
		return bad("ReconnectMax %v is below ReconnectMin %v", c.ReconnectMax, c.ReconnectMin)
	case c.PeerTimeout <= c.HeartbeatInterval:
		return bad("PeerTimeout %v must exceed HeartbeatInterval %v", c.PeerTimeout, c.HeartbeatInterval)
	case c.KeepaliveTime < c.KeepaliveMinTime:
		// A client pinging more often than the servers allow is cut off
		// with GOAWAY "too_many_pings".
		return bad("KeepaliveTime %v is below KeepaliveMinTime %v", c.KeepaliveTime, c.KeepaliveMinTime)
	}
	return nil
}
