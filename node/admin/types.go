package admin

import "time"

// The JSON documents of the admin API. `mqcluster ctl` decodes the same
// types. Times are RFC 3339; durations are whole seconds.

// Status is GET /api/v1/status: this node, its view of the cluster and its
// broker's figures.
type Status struct {
	NodeID    string    `json:"node_id"`
	Version   string    `json:"version"`
	StartedAt time.Time `json:"started_at"`
	// Cluster is false for a broker alone (no Raft, no gossip).
	Cluster bool          `json:"cluster"`
	Leader  string        `json:"leader,omitempty"`
	Raft    *Raft         `json:"raft,omitempty"`
	Members []Member      `json:"members,omitempty"`
	Broker  BrokerFigures `json:"broker"`
	Ready   Readiness     `json:"readiness"`
}

// Raft is this node's view of Raft.
type Raft struct {
	State           string     `json:"state"`
	Term            uint64     `json:"term"`
	LeaderID        string     `json:"leader_id,omitempty"`
	LeaderAddr      string     `json:"leader_addr,omitempty"`
	LastContact     *time.Time `json:"last_contact,omitempty"`
	CommitIndex     uint64     `json:"commit_index"`
	AppliedIndex    uint64     `json:"applied_index"`
	LastLogIndex    uint64     `json:"last_log_index"`
	FSMAppliedIndex uint64     `json:"fsm_applied_index"`
}

// Member is one node of the cluster.
type Member struct {
	ID string `json:"id"`
	// Gossip is memberlist's view: alive, suspect, dead, left, or unknown
	// (a Raft server gossip does not list).
	Gossip     string `json:"gossip"`
	GossipAddr string `json:"gossip_addr,omitempty"`
	RaftAddr   string `json:"raft_addr,omitempty"`
	GRPCAddr   string `json:"grpc_addr,omitempty"`
	// Raft is voter, nonvoter, or empty when the node is not in the Raft
	// configuration.
	Raft   string `json:"raft,omitempty"`
	Leader bool   `json:"leader,omitempty"`
	Self   bool   `json:"self,omitempty"`
	// Recorded is what the replicated state records of the node: down or
	// removed; empty while it is up.
	Recorded string `json:"recorded,omitempty"`
}

// BrokerFigures are this node's broker figures.
type BrokerFigures struct {
	Accepting     bool  `json:"accepting"`
	Draining      bool  `json:"draining"`
	Connections   int64 `json:"connections"`
	Sessions      int64 `json:"sessions"`         // connected and offline, on this node
	Offline       int64 `json:"offline_sessions"` // persistent sessions without a connection
	Subscriptions int64 `json:"subscriptions"`
	Queued        int64 `json:"queued_messages"`
	Inflight      int64 `json:"inflight_messages"`
	Retained      int64 `json:"retained_messages"`
	MessagesIn    int64 `json:"messages_in"`
	MessagesOut   int64 `json:"messages_out"`
	Dropped       int64 `json:"messages_dropped"`
}

// Client is one client connected to this node.
type Client struct {
	ClientID         string    `json:"client_id"`
	Username         string    `json:"username,omitempty"`
	Remote           string    `json:"remote"`
	Protocol         string    `json:"protocol"` // 3.1, 3.1.1 or 5.0
	KeepAliveSeconds int       `json:"keep_alive"`
	ConnectedAt      time.Time `json:"connected_at"`
	Persistent       bool      `json:"persistent"`
	Subscriptions    int       `json:"subscriptions"`
	Queued           int       `json:"queued_messages"`
	Inflight         int       `json:"inflight_messages"`
}

// Session is one session. In a cluster the list is the replicated one:
// every persistent session, whichever node owns it; a broker alone lists
// the sessions it holds.
type Session struct {
	ClientID string `json:"client_id"`
	Owner    string `json:"owner,omitempty"`
	Epoch    uint64 `json:"epoch,omitempty"`
	// Connected: its owner has a live connection for it.
	Connected bool `json:"connected"`
	// ExpirySeconds is the session expiry interval; nil: it never expires.
	ExpirySeconds  *uint32    `json:"expiry_seconds"`
	DisconnectedAt *time.Time `json:"disconnected_at,omitempty"`
	// ExpiresAt is when an offline session ends, if it does.
	ExpiresAt     *time.Time `json:"expires_at,omitempty"`
	Subscriptions int        `json:"subscriptions"`
	// Queued and Inflight are known for sessions held by this node.
	Queued   *int `json:"queued_messages,omitempty"`
	Inflight *int `json:"inflight_messages,omitempty"`
}

// Subscription is one subscription with its options.
type Subscription struct {
	ClientID          string `json:"client_id"`
	Filter            string `json:"filter"` // as subscribed, $share/{group}/ included
	Group             string `json:"share_group,omitempty"`
	QoS               byte   `json:"qos"`
	NoLocal           bool   `json:"no_local,omitempty"`
	RetainAsPublished bool   `json:"retain_as_published,omitempty"`
	RetainHandling    byte   `json:"retain_handling,omitempty"`
	SubscriptionID    uint32 `json:"subscription_identifier,omitempty"`
	// Source is "local" (a session held by this node) or "cluster" (the
	// subscriptions the cluster recorded for a persistent session held
	// elsewhere).
	Source string `json:"source"`
}

// Page is one page of a list: at most limit items after the cursor.
type Page[T any] struct {
	Items []T `json:"items"`
	// Total is the length of the whole list.
	Total int `json:"total"`
	// Next, when set, is the cursor of the next page (?after=Next).
	Next string `json:"next,omitempty"`
}

// Readiness is GET /readyz's body.
type Readiness struct {
	Ready  bool     `json:"ready"`
	Failed []string `json:"failed,omitempty"`
	Checks []Check  `json:"checks"`
}

// Check is one readiness condition.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Error is the body of every error answer.
type Error struct {
	Error string `json:"error"`
	// Leader is the leader's node id when the request needs the leader and
	// this node could not reach it for you.
	Leader string `json:"leader,omitempty"`
}

// Accepted is the body of POST /api/v1/leave and DELETE
// /api/v1/members/{id}.
type Accepted struct {
	NodeID string `json:"node_id"`
	Action string `json:"action"`
}
