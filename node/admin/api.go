package admin

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/topic"
	"github.com/mqcluster/mqcluster/fsm"
	"github.com/mqcluster/mqcluster/node"
)

// Lists are capped: ?limit= (default DefaultLimit, at most MaxLimit) items
// after the cursor ?after=.
const (
	DefaultLimit = 1000
	MaxLimit     = 100000
)

// removeTimeout bounds DELETE /api/v1/members/{id}.
const removeTimeout = 15 * time.Second

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, Error{Error: msg})
}

// nodeID is this node's id.
func (s *Server) nodeID() string {
	if s.cl != nil {
		return s.cl.ID()
	}
	return s.cfg.NodeID
}

func (s *Server) getStatus(w http.ResponseWriter, r *http.Request) {
	st := Status{NodeID: s.nodeID(), Version: s.cfg.Version, StartedAt: s.start, Cluster: s.cl != nil,
		Broker: s.brokerFigures(), Ready: s.readiness()}
	if s.cl != nil {
		rs := s.cl.RaftStatus()
		st.Leader = rs.LeaderID
		st.Raft = &Raft{State: rs.State, Term: rs.Term, LeaderID: rs.LeaderID, LeaderAddr: rs.LeaderAddr,
			CommitIndex: rs.CommitIndex, AppliedIndex: rs.AppliedIndex, LastLogIndex: rs.LastLogIndex, FSMAppliedIndex: rs.FSMAppliedIndex}
		if !rs.LastContact.IsZero() {
			st.Raft.LastContact = &rs.LastContact
		}
		st.Members = s.members()
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) brokerFigures() BrokerFigures {
	f := s.brk.Figures()
	bs := s.brk.Stats()
	return BrokerFigures{Accepting: s.brk.Accepting(), Draining: s.brk.Draining(), Connections: bs.Connected.Load(),
		Sessions: f.Connected + f.Offline, Offline: f.Offline, Subscriptions: f.Subscriptions, Queued: f.Queued,
		Inflight: f.Inflight, Retained: f.Retained, MessagesIn: bs.MessagesIn.Load(), MessagesOut: bs.MessagesOut.Load(),
		Dropped: bs.DroppedQoS0.Load() + bs.DroppedQueueFull.Load() + bs.DroppedExpired.Load() + bs.DroppedTooLarge.Load()}
}

// members joins gossip's and Raft's view with what the replicated state
// records of each node.
func (s *Server) members() []Member {
	recorded := map[string]string{}
	for _, n := range s.cl.FSM().Nodes() {
		recorded[n.ID] = n.State.String()
	}
	self := s.cl.ID()
	var out []Member
	for _, m := range s.cl.Members() {
		out = append(out, Member{ID: m.ID, Gossip: m.Gossip, GossipAddr: m.GossipAddr, RaftAddr: m.RaftAddr,
			GRPCAddr: m.GRPCAddr, Raft: m.Raft, Leader: m.Leader, Self: m.ID == self, Recorded: recorded[m.ID]})
	}
	return out
}

func (s *Server) getMembers(w http.ResponseWriter, r *http.Request) {
	if s.cl == nil {
		writeJSON(w, http.StatusOK, Page[Member]{Items: []Member{{ID: s.nodeID(), Gossip: "alive", Self: true}}, Total: 1})
		return
	}
	serveList(w, r, s.members(), func(m Member) string { return m.ID })
}

func (s *Server) getClients(w http.ResponseWriter, r *http.Request) {
	cs := s.brk.Clients()
	out := make([]Client, len(cs))
	for i, c := range cs {
		out[i] = Client{ClientID: c.ClientID, Username: c.Username, Remote: c.Remote, Protocol: c.Version.String(),
			KeepAliveSeconds: int(c.KeepAlive / time.Second), ConnectedAt: c.ConnectedAt.UTC(), Persistent: c.Persistent,
			Subscriptions: c.Subscriptions, Queued: c.Queued, Inflight: c.Inflight}
	}
	serveList(w, r, out, func(c Client) string { return c.ClientID })
}

// getSessions lists the cluster's persistent sessions, or with ?local=true
// (and always for a broker alone) the sessions this node holds.
func (s *Server) getSessions(w http.ResponseWriter, r *http.Request) {
	held := s.brk.Sessions()
	var out []Session
	if s.cl == nil || r.URL.Query().Get("local") == "true" {
		for _, ss := range held {
			out = append(out, s.localSession(ss))
		}
	} else {
		local := make(map[string]broker.SessionStatus, len(held))
		for _, ss := range held {
			local[ss.ClientID] = ss
		}
		for _, fs := range s.cl.FSM().Sessions() {
			se := clusterSession(fs)
			if ls, ok := local[fs.ClientID]; ok && fs.Owner == s.cl.ID() {
				se.Queued, se.Inflight = &ls.Queued, &ls.Inflight
			}
			out = append(out, se)
		}
	}
	serveList(w, r, out, func(se Session) string { return se.ClientID })
}

func (s *Server) localSession(ss broker.SessionStatus) Session {
	se := Session{ClientID: ss.ClientID, Owner: s.nodeID(), Epoch: ss.Epoch, Connected: ss.Connected,
		Subscriptions: ss.Subscriptions, Queued: &ss.Queued, Inflight: &ss.Inflight}
	if ss.Expiry != ^uint32(0) {
		e := ss.Expiry
		se.ExpirySeconds = &e
	}
	return se
}

func clusterSession(fs fsm.Session) Session {
	se := Session{ClientID: fs.ClientID, Owner: fs.Owner, Epoch: fs.Epoch, Connected: fs.Connected,
		Subscriptions: len(fs.Subscriptions)}
	never := fs.ExpirySeconds == ^uint32(0)
	if !never {
		e := fs.ExpirySeconds
		se.ExpirySeconds = &e
	}
	if !fs.Connected && fs.DisconnectedAtUnixMs != 0 {
		at := time.UnixMilli(fs.DisconnectedAtUnixMs).UTC()
		se.DisconnectedAt = &at
		if !never {
			exp := at.Add(time.Duration(fs.ExpirySeconds) * time.Second)
			se.ExpiresAt = &exp
		}
	}
	return se
}

// getSubscriptions lists the subscriptions of ?client= (held here, else as
// the cluster recorded them), or of every session this node holds.
func (s *Server) getSubscriptions(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("client")
	subs, ok := s.brk.Subscriptions(id)
	var out []Subscription
	for _, cs := range subs {
		out = append(out, Subscription{ClientID: cs.ClientID, Filter: cs.Filter, Group: cs.Group, QoS: cs.Opts.QoS,
			NoLocal: cs.Opts.NoLocal, RetainAsPublished: cs.Opts.RetainAsPublished, RetainHandling: cs.Opts.RetainHandling,
			SubscriptionID: cs.SubID, Source: "local"})
	}
	if !ok && s.cl != nil {
		var fs fsm.Session
		if fs, ok = s.cl.FSM().Session(id); ok {
			for _, sub := range fs.Subscriptions {
				group, _, _, _ := topic.ParseShare(sub.Filter)
				out = append(out, Subscription{ClientID: id, Filter: sub.Filter, Group: group, QoS: sub.QoS, NoLocal: sub.NoLocal,
					RetainAsPublished: sub.RetainAsPublished, RetainHandling: sub.RetainHandling, SubscriptionID: sub.SubscriptionID,
					Source: "cluster"})
			}
			slices.SortFunc(out, func(a, b Subscription) int { return strings.Compare(a.Filter, b.Filter) })
		}
	}
	if !ok {
		writeError(w, http.StatusNotFound, "no session of client "+strconv.Quote(id))
		return
	}
	serveList(w, r, out, func(sub Subscription) string { return sub.ClientID + "\x00" + sub.Filter })
}

func (s *Server) postLeave(w http.ResponseWriter, r *http.Request) {
	switch {
	case s.cl == nil:
		writeError(w, http.StatusConflict, "a broker alone is in no cluster")
	case s.cfg.OnLeave == nil:
		writeError(w, http.StatusNotImplemented, "this node cannot be asked to leave")
	default:
		if s.leaving.CompareAndSwap(false, true) {
			s.log.Info("asked to leave the cluster", "remote", r.RemoteAddr)
			s.cfg.OnLeave()
		}
		writeJSON(w, http.StatusAccepted, Accepted{NodeID: s.cl.ID(), Action: "leaving"})
	}
}

func (s *Server) deleteMember(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if s.cl == nil {
		writeError(w, http.StatusConflict, "a broker alone is in no cluster")
		return
	}
	if id == s.cl.ID() {
		writeError(w, http.StatusBadRequest, "this is node "+id+": ask it to leave instead (POST /api/v1/leave), which drains it first")
		return
	}
	rs := s.cl.RaftStatus()
	if !slices.ContainsFunc(rs.Servers, func(srv node.RaftServer) bool { return srv.ID == id }) {
		writeError(w, http.StatusNotFound, "node "+strconv.Quote(id)+" is not in the Raft configuration")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), removeTimeout)
	defer cancel()
	err := s.cl.RemoveMember(ctx, id)
	switch {
	case err == nil:
		s.log.Info("member removed on request", "peer", id, "remote", r.RemoteAddr)
		writeJSON(w, http.StatusOK, Accepted{NodeID: id, Action: "removed"})
	case errors.Is(err, node.ErrNoLeader):
		writeError(w, http.StatusServiceUnavailable, "no leader (no quorum): "+err.Error())
	case errors.Is(err, node.ErrNotLeader):
		leader := s.cl.RaftStatus().LeaderID
		writeJSON(w, http.StatusConflict, Error{Error: "ask the leader: " + err.Error(), Leader: leader})
	default:
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// serveList answers one page of items, sorted by key: ?limit= items whose
// key is above ?after=.
func serveList[T any](w http.ResponseWriter, r *http.Request, items []T, key func(T) string) {
	q := r.URL.Query()
	limit := DefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxLimit {
			writeError(w, http.StatusBadRequest, "limit: want 1.."+strconv.Itoa(MaxLimit))
			return
		}
		limit = n
	}
	slices.SortStableFunc(items, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
	p := Page[T]{Items: items, Total: len(items)}
	if after := q.Get("after"); after != "" {
		i, _ := slices.BinarySearchFunc(items, after, func(it T, k string) int { return cmp.Compare(key(it), k) })
		for i < len(items) && key(items[i]) == after {
			i++
		}
		p.Items = items[i:]
	}
	if len(p.Items) > limit {
		p.Items = p.Items[:limit]
		p.Next = key(p.Items[limit-1])
	}
	if p.Items == nil {
		p.Items = []T{}
	}
	writeJSON(w, http.StatusOK, p)
}
