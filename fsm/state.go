package fsm

import (
	"github.com/mqcluster/mqcluster/broker/topic"
)

// RouteNode is one node's share of a route: how many local subscribers it
// has for the route's (filter, group). For a non-shared route Members is 1.
type RouteNode struct {
	NodeID  string
	Members uint32
}

// Route is the set of nodes with subscribers for one (filter, group), sorted
// by node id. Group is "" for non-shared subscriptions.
type Route struct {
	Filter string
	Group  string
	Nodes  []RouteNode
}

// RouteMatch is one node with subscribers for a filter (and share group)
// that matches a topic name.
type RouteMatch struct {
	NodeID  string
	Filter  string
	Group   string // "" for a non-shared route
	Members uint32 // local subscribers of the node in Group (1 when Group is "")
}

// Subscription is one subscription of a persistent session.
type Subscription struct {
	Filter            string // as the client sent it, $share/{group}/ included
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
	SubscriptionID    uint32 // 0: none
}

// Session is a persistent session as the cluster knows it.
type Session struct {
	ClientID string
	// Owner is the node that holds the session (its queue); "" once that
	// node was removed from the cluster.
	Owner         string
	Epoch         uint64
	ExpirySeconds uint32
	// Connected: the owner has a live connection for it (claimed and not
	// released since).
	Connected            bool
	DisconnectedAtUnixMs int64
	Subscriptions        []Subscription
	// Holders are the nodes that may hold messages of the session that
	// its owner has not received: each claim adds the previous owner, and
	// a node leaves once it handed them on (SessionHandedOn). The owner
	// delivers nothing queued while there are holders (up to a bound), so
	// that older messages are not overtaken.
	Holders []string
	// ClaimedAtUnixMs is the claiming node's clock at the claim (0:
	// unknown, or claimed before a node recorded it).
	ClaimedAtUnixMs int64
}

// Will is the will message of one connection.
type Will struct {
	ID                   string
	ClientID             string
	NodeID               string // the node holding the connection
	DelaySeconds         uint32
	SessionExpirySeconds uint32
	Topic                string
	Payload              []byte // shared: never modify
	QoS                  byte
	Retain               bool
	Properties           []byte // shared: never modify
}

// Retained is the retained message of a topic.
type Retained struct {
	Topic           string
	Payload         []byte // shared: never modify
	QoS             byte
	Properties      []byte // shared: never modify
	ExpiresAtUnixMs int64  // 0: never
	SetAtUnixMs     int64
}

// NodeState says why the cluster remembers a node: only nodes that are down
// or removed are recorded.
type NodeState uint8

const (
	NodeUp NodeState = iota // not recorded
	NodeDown
	NodeRemoved
)

func (s NodeState) String() string {
	switch s {
	case NodeUp:
		return "up"
	case NodeDown:
		return "down"
	case NodeRemoved:
		return "removed"
	}
	return "unknown"
}

// Node is a node that is down or removed.
type Node struct {
	ID           string
	State        NodeState
	DownAtUnixMs int64 // when it was confirmed down (kept when removed)
}

// state is everything the FSM replicates, plus indexes derived from it.
//
// The values behind the pointers in the maps are never modified once
// stored: an op that changes a route, session, will or retained message
// stores a new value. That is what makes Snapshot cheap: it copies the
// pointers under the read lock and Persist reads them while Apply goes on.
type state struct {
	routes   map[routeKey]*Route
	sessions map[string]*Session
	wills    map[string]*Will
	retained map[string]*Retained
	nodes    map[string]Node

	// fired remembers the wills fired (will_clear with fire) within the
	// last firedKeep log entries, by id, with the index of the fire;
	// firedOrder holds their ids in that order, for pruning. The values
	// are copied into a snapshot.
	fired      map[string]uint64
	firedOrder []string

	// maxEpoch is the highest session epoch ever accepted (replicated: it
	// survives the deletion of the session that had it).
	maxEpoch uint64

	// Derived indexes, rebuilt by Restore, never snapshotted.
	trie     *topic.Trie[uint32]              // (filter, group, node id) -> members
	rtree    *retainedTree                    // topic levels -> retained message
	expiring map[string]int64                 // topic -> expires at, for retained with an expiry
	routesOf map[string]map[routeKey]struct{} // node id -> its routes
}

type routeKey struct{ filter, group string }

func newState() *state {
	return &state{
		routes:   map[routeKey]*Route{},
		sessions: map[string]*Session{},
		wills:    map[string]*Will{},
		retained: map[string]*Retained{},
		nodes:    map[string]Node{},
		fired:    map[string]uint64{},
		trie:     topic.New[uint32](),
		rtree:    newRetainedTree(),
		expiring: map[string]int64{},
		routesOf: map[string]map[routeKey]struct{}{},
	}
}

// removed reports whether node id was removed from the cluster.
func (s *state) removed(id string) bool {
	n, ok := s.nodes[id]
	return ok && n.State == NodeRemoved
}
