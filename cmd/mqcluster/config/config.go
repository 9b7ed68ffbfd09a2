package config

import (
	"io"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/node"
	"github.com/mqcluster/mqcluster/node/admin"
)

// Config is the configuration of one `mqcluster serve`. Every field is a
// key of the YAML file (its yaml tag), an environment variable and a flag
// (see Keys), except listeners, which only the file (and --listen) sets.
type Config struct {
	DataDir   string     `yaml:"data_dir" help:"directory for persistent sessions, retained messages and Raft's log; empty keeps everything in memory (a broker alone only)"`
	Log       Log        `yaml:"log"`
	Listeners []Listener `yaml:"listeners"`
	Limits    Limits     `yaml:"limits"`
	MQTT      MQTT       `yaml:"mqtt"`
	Cluster   Cluster    `yaml:"cluster"`
	Auth      Auth       `yaml:"auth"`
	Admin     Admin      `yaml:"admin"`
	Drain     Drain      `yaml:"drain"`
}

// Log is the process's log.
type Log struct {
	Level  string `yaml:"level" help:"log level: debug, info, warn or error"`
	Format string `yaml:"format" help:"log format: text or json"`
}

// Listener is one way clients reach the broker.
type Listener struct {
	Type    string `yaml:"type"`
	Address string `yaml:"address"`
	// Path and AllowedOrigins are for ws and wss listeners.
	Path           string   `yaml:"path,omitempty"`
	AllowedOrigins []string `yaml:"allowed_origins,omitempty"`
	ProxyProtocol  bool     `yaml:"proxy_protocol"`
	// AllowAnonymous overrides auth.allow_anonymous and the default
	// (anonymous from loopback only, when no authentication is configured).
	AllowAnonymous *bool `yaml:"allow_anonymous,omitempty"`
	TLS            *TLS  `yaml:"tls,omitempty"`
}

// TLS is the TLS side of a tls or wss listener.
type TLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file,omitempty"`
	ClientAuth   string `yaml:"client_auth"`
	MinVersion   string `yaml:"min_version"`
	Identity     string `yaml:"identity"`
}

// Limits are the broker's bounds (broker.Config).
type Limits struct {
	MaxPacketSize        int           `yaml:"max_packet_size" help:"largest packet accepted, in bytes (announced to 5.0 clients)"`
	ConnectTimeout       time.Duration `yaml:"connect_timeout" help:"time from accept (TLS handshake, WebSocket upgrade included) to a complete CONNECT"`
	MaxKeepAlive         uint16        `yaml:"max_keep_alive" help:"cap on a client's keep-alive, in seconds (0: the client's own)"`
	ReceiveMaximum       uint16        `yaml:"receive_maximum" help:"unacknowledged QoS 1/2 PUBLISHes accepted from one client"`
	MaxInflight          uint16        `yaml:"max_inflight" help:"unacknowledged QoS 1/2 messages sent to one client"`
	MaxAwaitingRel       int           `yaml:"max_awaiting_rel" help:"QoS 2 messages awaiting PUBREL per 3.1.1 client"`
	TopicAliasMaximum    uint16        `yaml:"topic_alias_maximum" help:"topic aliases a 5.0 client may set (0: none)"`
	OutboundTopicAliases uint16        `yaml:"outbound_topic_aliases" help:"topic aliases the broker assigns to a 5.0 client that allows them"`
	MaxTopicLevels       int           `yaml:"max_topic_levels" help:"levels of a topic name or filter"`
	MaxClientIDLen       int           `yaml:"max_client_id_len" help:"bytes of a client identifier"`
	MaxSessionExpiry     uint32        `yaml:"max_session_expiry" help:"cap on a session expiry interval, in seconds (0: none)"`
	MaxQueuedMessages    int           `yaml:"max_queued_messages" help:"messages one session may queue (offline, or beyond its in-flight window)"`
	MaxQueuedBytes       int           `yaml:"max_queued_bytes" help:"bytes one session may queue"`
	DropOldest           bool          `yaml:"drop_oldest" help:"a full session queue drops its oldest message instead of the newest"`
	QueueQoS0            bool          `yaml:"queue_qos0" help:"queue QoS 0 messages for offline persistent sessions too"`
	WriteQueueBytes      int           `yaml:"write_queue_bytes" help:"bytes waiting for one connection's socket before its QoS 0 messages are dropped"`
	WriteTimeout         time.Duration `yaml:"write_timeout" help:"a connection whose socket takes nothing for this long is closed"`
	MaxConnections       int           `yaml:"max_connections" help:"connections in all (0: no bound)"`
	MaxConnectionsPerIP  int           `yaml:"max_connections_per_ip" help:"connections from one client address (0: no bound)"`
	ConnectRate          float64       `yaml:"connect_rate" help:"CONNECTs accepted per second in all (0: no bound)"`
	ConnectBurst         int           `yaml:"connect_burst" help:"CONNECTs accepted at once above connect_rate"`
	MaxPublishRate       float64       `yaml:"max_publish_rate" help:"PUBLISH packets per second one connection may send (0: no bound)"`
	PublishBurst         int           `yaml:"publish_burst" help:"PUBLISH packets accepted at once above max_publish_rate"`
}

// MQTT are the protocol features the broker announces.
type MQTT struct {
	MaximumQoS              uint8         `yaml:"maximum_qos" help:"highest QoS accepted from clients: 0, 1 or 2"`
	RetainAvailable         bool          `yaml:"retain_available" help:"retained messages"`
	WildcardSubscriptions   bool          `yaml:"wildcard_subscriptions" help:"subscriptions with + and #"`
	SubscriptionIdentifiers bool          `yaml:"subscription_identifiers" help:"5.0 subscription identifiers"`
	SharedSubscriptions     bool          `yaml:"shared_subscriptions" help:"$share/group/filter subscriptions"`
	SharedStrategy          string        `yaml:"shared_strategy" help:"member of a share group that gets a message: round_robin, random, sticky or hash"`
	ServerReference         string        `yaml:"server_reference" help:"server reference sent to 5.0 clients told to go elsewhere"`
	ResponseInformation     string        `yaml:"response_information" help:"response information returned to 5.0 clients that ask for it"`
	SysInterval             time.Duration `yaml:"sys_interval" help:"period of the $SYS/broker/... figures (0: none)"`
}

// Cluster makes the broker one node of a cluster.
type Cluster struct {
	NodeID          string        `yaml:"node_id" help:"stable node id (default: the host name)"`
	BootstrapExpect int           `yaml:"bootstrap_expect" help:"run as a cluster node: bootstrap once this many members see each other (0: a broker alone, unless join is set)"`
	Join            []string      `yaml:"join" help:"memberlist seeds host:port to join (comma-separated in a flag or variable)"`
	RaftAddr        string        `yaml:"raft_addr" help:"Raft listen address"`
	RaftAdvertise   string        `yaml:"raft_advertise" help:"Raft address peers dial (default: the bound address)"`
	GossipAddr      string        `yaml:"gossip_addr" help:"memberlist listen address"`
	GRPCAddr        string        `yaml:"grpc_addr" help:"node-to-node gRPC listen address"`
	GossipKeyFile   string        `yaml:"gossip_key_file" help:"file holding the memberlist encryption key: 16, 24 or 32 bytes, raw or base64"`
	TLSCertFile     string        `yaml:"tls_cert_file" help:"this node's certificate for mutual TLS between nodes (gRPC); names the node id in its CN or a DNS SAN; with tls_key_file and tls_ca_file"`
	TLSKeyFile      string        `yaml:"tls_key_file" help:"the key of tls_cert_file"`
	TLSCAFile       string        `yaml:"tls_ca_file" help:"the cluster CA that signs every node's certificate"`
	MaxVoters       int           `yaml:"max_voters" help:"Raft voters at most; later nodes join as non-voters"`
	ApplyTimeout    time.Duration `yaml:"apply_timeout" help:"bound on one Raft proposal"`
	NodeDownAfter   time.Duration `yaml:"node_down_after" help:"how long the leader waits after gossip declared a node dead before its routes go and its clients' wills start"`
	ContactLease    time.Duration `yaml:"contact_lease" help:"how long a node that hears from no leader, and reaches no majority of the voters, keeps connections whose wills the cluster holds before it closes them (0x9C use another server), since the other side may publish those wills; the leader records no node as down before it has been gone this long"`
	SessionHold     time.Duration `yaml:"session_hold" help:"how long a persistent session that moved waits for older messages a node killed or cut off with it may still hand on, before newer ones go out; 0 does not wait"`
	MoveTimeout     time.Duration `yaml:"move_timeout" help:"how long a node that a session left keeps collecting its messages for the node it moved to; past it they go to the session's owner (the new node died before it asked)"`
	Timeout         time.Duration `yaml:"timeout" help:"what a client waits for the cluster (a route in force before its SUBACK)"`
	LeaveOnShutdown bool          `yaml:"leave_on_shutdown" help:"leave the cluster for good on shutdown (scale-down): Raft removal and memberlist leave after the drain"`
}

// Admin is the HTTP endpoint of /metrics, /healthz, /readyz and the admin
// API (package node/admin).
type Admin struct {
	Address   string `yaml:"address" help:"host:port of the admin HTTP endpoint: /metrics, /healthz, /readyz and the admin API (empty: none)"`
	TokenFile string `yaml:"token_file" help:"file holding a bearer token that /metrics and the admin API require; reloaded on SIGHUP"`
}

// Drain is the graceful shutdown on SIGTERM.
type Drain struct {
	Rate         float64       `yaml:"rate" help:"client connections closed per second on shutdown (0: all at once)"`
	Timeout      time.Duration `yaml:"timeout" help:"bound on closing the client connections on shutdown"`
	HandoffGrace time.Duration `yaml:"handoff_grace" help:"how long a cluster node keeps serving the takeover of its persistent sessions after its clients are gone"`
}

// Auth is authentication and authorization (package broker/auth).
type Auth struct {
	PasswordFile string `yaml:"password_file" help:"file of user:hash lines (mqcluster passwd); reloaded when it changes"`
	ACLFile      string `yaml:"acl_file" help:"access rules; reloaded when it changes"`
	// AllowAnonymous is the default of the listeners' allow_anonymous.
	AllowAnonymous *bool `yaml:"allow_anonymous,omitempty" help:"admit clients without credentials on every listener that does not say otherwise"`
	JWT            *JWT  `yaml:"jwt,omitempty"`
}

// JWT admits clients whose password is a signed token.
type JWT struct {
	SecretFile    string        `yaml:"secret_file,omitempty" help:"HS256 shared secret, at least 32 bytes"`
	PublicKeyFile string        `yaml:"public_key_file,omitempty" help:"PEM public key or certificate (RS256, ES256)"`
	JWKSFile      string        `yaml:"jwks_file,omitempty" help:"JSON Web Key Set; the token's kid picks the key"`
	Issuer        string        `yaml:"issuer,omitempty" help:"required iss of tokens"`
	Audience      string        `yaml:"audience,omitempty" help:"required member of tokens' aud"`
	UsernameClaim string        `yaml:"username_claim,omitempty" help:"claim holding the username (default sub)"`
	Leeway        time.Duration `yaml:"leeway,omitempty" help:"clock skew tolerated in exp and nbf"`
	AllowNoExpiry bool          `yaml:"allow_no_expiry,omitempty" help:"admit tokens without exp"`
}

// Default is the configuration with nothing set: a broker alone with one
// TCP listener on :1883 (added by Load when no listener is configured) and
// its data in ./data.
func Default() *Config {
	b := broker.DefaultConfig()
	n := node.DefaultConfig()
	return &Config{
		DataDir: "data",
		Log:     Log{Level: "info", Format: "text"},
		Limits: Limits{
			MaxPacketSize: b.MaxPacketSize, ConnectTimeout: b.ConnectTimeout, MaxKeepAlive: b.MaxKeepAlive,
			ReceiveMaximum: b.ReceiveMaximum, MaxInflight: b.MaxInflight, MaxAwaitingRel: b.MaxAwaitingRel,
			TopicAliasMaximum: b.TopicAliasMaximum, OutboundTopicAliases: b.OutboundTopicAliases,
			MaxTopicLevels: b.MaxTopicLevels, MaxClientIDLen: b.MaxClientIDLen, MaxSessionExpiry: b.MaxSessionExpiry,
			MaxQueuedMessages: b.QueueMessages, MaxQueuedBytes: b.QueueBytes, DropOldest: b.DropOldest,
			QueueQoS0: b.QueueQoS0, WriteQueueBytes: b.WriteQueueBytes, WriteTimeout: b.WriteTimeout,
			MaxConnections: b.MaxConnections, MaxConnectionsPerIP: b.MaxConnectionsPerIP,
			ConnectRate: b.ConnectRate, ConnectBurst: b.ConnectBurst, MaxPublishRate: b.MaxPublishRate, PublishBurst: b.PublishBurst,
		},
		MQTT: MQTT{
			MaximumQoS: b.MaximumQoS, RetainAvailable: b.RetainAvailable, WildcardSubscriptions: b.WildcardSubscriptions,
			SubscriptionIdentifiers: b.SubscriptionIdentifiers, SharedSubscriptions: b.SharedSubscriptions,
			SharedStrategy: string(b.SharedStrategy), ServerReference: b.ServerReference, ResponseInformation: b.ResponseInformation,
			SysInterval: b.SysInterval,
		},
		Cluster: Cluster{
			RaftAddr: n.RaftAddr, RaftAdvertise: n.RaftAdvertise, GossipAddr: n.GossipAddr, GRPCAddr: n.GRPCAddr,
			MaxVoters: n.MaxVoters, ApplyTimeout: n.ApplyTimeout, NodeDownAfter: n.NodeDownAfter, ContactLease: n.ContactLease, SessionHold: n.SessionHold, MoveTimeout: b.MoveTimeout, Timeout: b.ClusterTimeout,
		},
		Admin: Admin{Address: admin.DefaultConfig().Address},
		Drain: Drain{Rate: 500, Timeout: 30 * time.Second, HandoffGrace: 10 * time.Second},
	}
}

// Write prints the configuration as YAML, in the form a --config file
// takes.
func (c *Config) Write(w io.Writer) error {
	if _, err := io.WriteString(w, "# mqcluster: the effective configuration (defaults < file < environment < flags)\n"); err != nil {
		return err
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return err
	}
	return enc.Close()
}
