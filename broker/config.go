package broker

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Config is the behaviour of one broker. Every limit has a safe default
// (DefaultConfig) so that a broker with no configuration survives hostile
// input.
type Config struct {
	// MaxPacketSize is the largest packet accepted, whole packet in bytes;
	// announced as Maximum Packet Size to 5.0 clients.
	MaxPacketSize int
	// ConnectTimeout bounds the time between accept and a complete CONNECT.
	ConnectTimeout time.Duration
	// MaxKeepAlive caps the client's keep-alive; a 5.0 client asking for more
	// (or for 0) is told Server Keep Alive. 0 leaves the client's value.
	MaxKeepAlive uint16
	// ReceiveMaximum is the number of unacknowledged QoS 1/2 PUBLISHes the
	// server accepts from one client (announced in 5.0).
	ReceiveMaximum uint16
	// MaxAwaitingRel caps QoS 2 messages awaiting PUBREL per client (3.1.1,
	// where no Receive Maximum exists); past it the client is disconnected.
	MaxAwaitingRel int
	// MaxInflight bounds unacknowledged QoS 1/2 messages sent to a client that
	// announced no Receive Maximum (3.1.1), and caps a 5.0 client's.
	MaxInflight uint16
	// TopicAliasMaximum is the number of topic aliases a client may set
	// (announced in 5.0); 0 disables inbound aliases.
	TopicAliasMaximum uint16
	// OutboundTopicAliases is the most aliases the server assigns to a client
	// that allows them.
	OutboundTopicAliases uint16
	// MaxTopicLevels bounds the levels of topic names and filters.
	MaxTopicLevels int
	// MaxClientIDLen bounds client identifiers (bytes) in every protocol
	// version; the specifications guarantee 23, like Mosquitto we accept
	// more by default.
	MaxClientIDLen int
	// MaxSessionExpiry caps a 5.0 session expiry interval (seconds); it also
	// applies to 3.1.1 clean-session-0 sessions when non-zero.
	MaxSessionExpiry uint32
	// QueueMessages and QueueBytes bound one session's queue of messages
	// waiting for delivery (offline, or beyond the in-flight window). A
	// stored (persistent) session's queue is also bounded by the packet-id
	// space: 65,535 minus MaxInflight.
	QueueMessages int
	QueueBytes    int
	// DropOldest chooses what a full queue drops: the oldest message (true)
	// or the newest (false, the default, as Mosquitto).
	DropOldest bool
	// QueueQoS0 also queues QoS 0 messages for offline persistent sessions.
	QueueQoS0 bool
	// WriteQueueBytes bounds bytes waiting in a connection's write queue; a
	// consumer that lets more pile up loses its QoS 0 messages (counted) and
	// keeps its QoS 1/2 messages in its session queue. A client that lets
	// that much of control packets (acknowledgements, PINGRESPs), which
	// cannot be dropped, pile up behind a blocked write is disconnected.
	WriteQueueBytes int
	// WriteTimeout closes a connection whose socket accepts nothing for this long.
	WriteTimeout time.Duration
	// RetainAvailable, WildcardSubscriptions, SubscriptionIdentifiers and
	// SharedSubscriptions switch those features (announced in 5.0 CONNACK).
	RetainAvailable         bool
	WildcardSubscriptions   bool
	SubscriptionIdentifiers bool
	SharedSubscriptions     bool
	// MaximumQoS is the highest QoS accepted from clients (0, 1 or 2).
	MaximumQoS byte
	// SharedStrategy picks one member of a share group per message.
	SharedStrategy SharedStrategy
	// MaxConnections bounds connections in all; MaxConnectionsPerIP those
	// from one source address (0: no bound). A connection over either is
	// closed at once, before anything is read from it.
	MaxConnections      int
	MaxConnectionsPerIP int
	// ConnectRate is the number of CONNECTs per second accepted overall,
	// with bursts up to ConnectBurst (0: no bound); a CONNECT over it gets
	// CONNACK 0x9F (5.0) / 0x03 (3.1.1).
	ConnectRate  float64
	ConnectBurst int
	// MaxPublishRate is the number of PUBLISH packets per second one
	// connection may send, with bursts up to PublishBurst (0: no bound).
	// Over it, QoS 0 is dropped; 5.0 QoS 1/2 get PUBACK / PUBREC 0x97
	// (quota exceeded) and are not delivered; 3.1.1 QoS 1/2 are held back
	// (the connection is not read until the rate allows). A client refused
	// more than ten times what the limit allows within one second is
	// disconnected (DISCONNECT 0x96 in 5.0). See ratelimit.go.
	MaxPublishRate float64
	PublishBurst   int
	// SysInterval is the period of the $SYS/broker/... figures this node
	// publishes (Mosquitto's sys_interval); 0 publishes none.
	SysInterval time.Duration
	// ClusterTimeout bounds what a client waits for the cluster (a route to
	// be in force before its SUBACK).
	ClusterTimeout time.Duration
	// MoveTimeout bounds a session's move to another node: the node it
	// left keeps collecting its messages until the new node asks for the
	// rest, and past MoveTimeout hands them to the session's owner (the
	// new node died meanwhile); the new node gives up asking then. 0: one
	// minute.
	MoveTimeout time.Duration
	// ServerReference, when set, is sent to 5.0 clients told to go elsewhere.
	ServerReference string
	// ResponseInformation is returned to 5.0 clients that request it.
	ResponseInformation string
}

// SharedStrategy chooses the member of a $share group that gets a message.
type SharedStrategy string

// Shared subscription strategies.
const (
	ShareRoundRobin SharedStrategy = "round_robin"
	ShareRandom     SharedStrategy = "random"
	ShareSticky     SharedStrategy = "sticky"
	ShareHash       SharedStrategy = "hash"
)

// DefaultConfig returns the defaults listed in the documentation.
func DefaultConfig() Config {
	return Config{
		MaxPacketSize:           1 << 20,
		ConnectTimeout:          10 * time.Second,
		MaxKeepAlive:            0,
		ReceiveMaximum:          32,
		MaxAwaitingRel:          100,
		MaxInflight:             32,
		TopicAliasMaximum:       64,
		OutboundTopicAliases:    64,
		MaxTopicLevels:          128,
		MaxClientIDLen:          256,
		MaxSessionExpiry:        0,
		QueueMessages:           1000,
		QueueBytes:              10 << 20,
		WriteQueueBytes:         4 << 20,
		WriteTimeout:            30 * time.Second,
		RetainAvailable:         true,
		WildcardSubscriptions:   true,
		SubscriptionIdentifiers: true,
		SharedSubscriptions:     true,
		MaximumQoS:              2,
		SharedStrategy:          ShareRoundRobin,
		MaxConnections:          100000,
		ClusterTimeout:          5 * time.Second,
		MoveTimeout:             time.Minute,
		SysInterval:             10 * time.Second,
	}
}

// Validate reports the first invalid setting by name.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxPacketSize < 16 || c.MaxPacketSize > 268435460 {
		errs = append(errs, fmt.Errorf("max_packet_size %d: want 16..268435460", c.MaxPacketSize))
	}
	if c.ClusterTimeout <= 0 {
		errs = append(errs, fmt.Errorf("cluster_timeout %v: want > 0", c.ClusterTimeout))
	}
	if c.ConnectTimeout <= 0 {
		errs = append(errs, fmt.Errorf("connect_timeout %v: want > 0", c.ConnectTimeout))
	}
	if c.ReceiveMaximum == 0 {
		errs = append(errs, errors.New("receive_maximum 0: want 1..65535"))
	}
	if c.MaxInflight == 0 {
		errs = append(errs, errors.New("max_inflight 0: want 1..65535"))
	}
	if c.MaxAwaitingRel <= 0 {
		errs = append(errs, fmt.Errorf("max_awaiting_rel %d: want > 0", c.MaxAwaitingRel))
	}
	if c.MaxTopicLevels <= 0 {
		errs = append(errs, fmt.Errorf("max_topic_levels %d: want > 0", c.MaxTopicLevels))
	}
	if c.MaxClientIDLen < 23 || c.MaxClientIDLen > 65535 {
		errs = append(errs, fmt.Errorf("max_client_id_len %d: want 23..65535", c.MaxClientIDLen))
	}
	if c.QueueMessages <= 0 || c.QueueBytes <= 0 {
		errs = append(errs, fmt.Errorf("queue_messages %d / queue_bytes %d: want > 0", c.QueueMessages, c.QueueBytes))
	}
	if c.MaxInflight > 65000 {
		errs = append(errs, fmt.Errorf("max_inflight %d: want at most 65000 (packet ids)", c.MaxInflight))
	}
	if c.WriteQueueBytes <= 0 {
		errs = append(errs, fmt.Errorf("write_queue_bytes %d: want > 0", c.WriteQueueBytes))
	}
	if c.MaxConnections < 0 || c.MaxConnectionsPerIP < 0 {
		errs = append(errs, fmt.Errorf("max_connections %d / max_connections_per_ip %d: want >= 0", c.MaxConnections, c.MaxConnectionsPerIP))
	}
	if c.ConnectRate < 0 || c.ConnectRate > 0 && c.ConnectBurst <= 0 {
		errs = append(errs, fmt.Errorf("connect_rate %v / connect_burst %d: want a rate >= 0 and, with a rate, a burst > 0", c.ConnectRate, c.ConnectBurst))
	}
	if c.MaxPublishRate < 0 || c.MaxPublishRate > 0 && c.PublishBurst <= 0 || math.IsNaN(c.MaxPublishRate) || math.IsInf(c.MaxPublishRate, 0) {
		errs = append(errs, fmt.Errorf("max_publish_rate %v / publish_burst %d: want a finite rate >= 0 and, with a rate, a burst > 0", c.MaxPublishRate, c.PublishBurst))
	}
	if c.SysInterval < 0 {
		errs = append(errs, fmt.Errorf("sys_interval %v: want >= 0", c.SysInterval))
	}
	if c.MaximumQoS > 2 {
		errs = append(errs, fmt.Errorf("maximum_qos %d: want 0..2", c.MaximumQoS))
	}
	switch c.SharedStrategy {
	case ShareRoundRobin, ShareRandom, ShareSticky, ShareHash:
	default:
		errs = append(errs, fmt.Errorf("shared_strategy %q: want round_robin, random, sticky or hash", c.SharedStrategy))
	}
	return errors.Join(errs...)
}
