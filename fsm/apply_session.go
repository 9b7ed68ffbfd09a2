package fsm

import (
	"fmt"
	"slices"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

// applySessionClaim makes op.NodeId the owner of the session, connected, if
// op.Epoch is above the stored epoch. The same claim again (same epoch,
// same node) is a no-op; any other claim at or below the stored epoch is
// stale.
func applySessionClaim(s *state, op *pb.SessionClaim) (kinds, error) {
	id, node, epoch := op.GetClientId(), op.GetNodeId(), op.GetEpoch()
	if id == "" || node == "" || epoch == 0 {
		return 0, fmt.Errorf("%w: session_claim needs client_id, node_id and an epoch > 0", ErrInvalid)
	}
	old := s.sessions[id]
	if old != nil && epoch <= old.Epoch {
		if epoch == old.Epoch && node == old.Owner {
			return 0, nil // this claim, applied before
		}
		return 0, fmt.Errorf("%w: claim of %q by %q at epoch %d, stored epoch %d (owner %q)",
			ErrStaleEpoch, id, node, epoch, old.Epoch, old.Owner)
	}
	if s.removed(node) {
		return 0, fmt.Errorf("%w: session_claim from %q", ErrNodeRemoved, node)
	}
	next := &Session{ClientID: id, Owner: node, Epoch: epoch, ExpirySeconds: op.GetExpirySeconds(), Connected: true,
		ClaimedAtUnixMs: op.GetClaimedAtUnixMs()}
	if old != nil && !op.GetCleanStart() {
		next.Subscriptions = old.Subscriptions // immutable, shared
		next.Holders = claimHolders(old, node)
	}
	s.sessions[id] = next
	s.maxEpoch = max(s.maxEpoch, epoch)
	return KindSessions.bit(), nil
}

// claimHolders is the holders of a session that node claims from old: the
// previous owner joins them, the claimer leaves them (its own copy, if any,
// is part of the claim).
func claimHolders(old *Session, node string) []string {
	var out []string
	for _, h := range old.Holders {
		if h != node {
			out = append(out, h)
		}
	}
	if old.Owner != "" && old.Owner != node && !slices.Contains(out, old.Owner) {
		out = append(out, old.Owner)
	}
	slices.Sort(out)
	return out
}

// applySessionHandedOn removes op.NodeId from the holders of a session.
func applySessionHandedOn(s *state, op *pb.SessionHandedOn) (kinds, error) {
	id, node := op.GetClientId(), op.GetNodeId()
	if id == "" || node == "" {
		return 0, fmt.Errorf("%w: session_handed_on needs client_id and node_id", ErrInvalid)
	}
	old := s.sessions[id]
	if old == nil || !slices.Contains(old.Holders, node) {
		return 0, nil
	}
	next := *old
	next.Holders = slices.DeleteFunc(slices.Clone(old.Holders), func(h string) bool { return h == node })
	if len(next.Holders) == 0 {
		next.Holders = nil
	}
	s.sessions[id] = &next
	return KindSessions.bit(), nil
}

// applySessionSubscriptions replaces the subscription list of a session at
// the stored epoch.
func applySessionSubscriptions(s *state, op *pb.SessionSubscriptions) (kinds, error) {
	old, err := s.sessionAt("session_subscriptions", op.GetClientId(), op.GetEpoch())
	if err != nil {
		return 0, err
	}
	subs, err := subscriptionsFromProto(op.GetSubscriptions())
	if err != nil {
		return 0, err
	}
	if slices.Equal(subs, old.Subscriptions) {
		return 0, nil
	}
	next := *old
	next.Subscriptions = subs
	s.sessions[old.ClientID] = &next
	return KindSessions.bit(), nil
}

// applySessionRelease marks a session disconnected at the stored epoch; the
// claim stays.
func applySessionRelease(s *state, op *pb.SessionRelease) (kinds, error) {
	old, err := s.sessionAt("session_release", op.GetClientId(), op.GetEpoch())
	if err != nil {
		return 0, err
	}
	next := *old
	next.Connected = false
	next.DisconnectedAtUnixMs = op.GetDisconnectedAtUnixMs()
	if op.ExpirySeconds != nil {
		next.ExpirySeconds = op.GetExpirySeconds()
	}
	if sameSession(&next, old) {
		return 0, nil
	}
	s.sessions[old.ClientID] = &next
	return KindSessions.bit(), nil
}

// applySessionDelete removes a session at the stored epoch; a missing
// session is already deleted.
func applySessionDelete(s *state, op *pb.SessionDelete) (kinds, error) {
	id := op.GetClientId()
	if id == "" {
		return 0, fmt.Errorf("%w: session_delete needs client_id", ErrInvalid)
	}
	if s.sessions[id] == nil {
		return 0, nil
	}
	if _, err := s.sessionAt("session_delete", id, op.GetEpoch()); err != nil {
		return 0, err
	}
	delete(s.sessions, id)
	return KindSessions.bit(), nil
}

// sessionAt returns the session of id if its epoch is epoch.
func (s *state) sessionAt(what, id string, epoch uint64) (*Session, error) {
	if id == "" {
		return nil, fmt.Errorf("%w: %s needs client_id", ErrInvalid, what)
	}
	old := s.sessions[id]
	switch {
	case old == nil:
		return nil, fmt.Errorf("%w: %s for %q", ErrNoSession, what, id)
	case old.Epoch != epoch:
		return nil, fmt.Errorf("%w: %s for %q at epoch %d, stored epoch %d (owner %q)",
			ErrStaleEpoch, what, id, epoch, old.Epoch, old.Owner)
	}
	return old, nil
}

// releaseSessionsOf clears the owner of every session node owned, keeping
// the epoch: the session waits for a claim from another node. Sessions still
// connected count as disconnected at atMs.
func (s *state) releaseSessionsOf(node string, atMs int64) bool {
	changed := false
	for id, old := range s.sessions { // each session independently: order does not matter
		if old.Owner != node {
			continue
		}
		next := *old
		next.Owner = ""
		if next.Connected {
			next.Connected = false
			next.DisconnectedAtUnixMs = atMs
		}
		s.sessions[id] = &next
		changed = true
	}
	return changed
}

func sameSession(a, b *Session) bool {
	return a.ClientID == b.ClientID && a.Owner == b.Owner && a.Epoch == b.Epoch &&
		a.ExpirySeconds == b.ExpirySeconds && a.Connected == b.Connected &&
		a.DisconnectedAtUnixMs == b.DisconnectedAtUnixMs && slices.Equal(a.Subscriptions, b.Subscriptions) &&
		slices.Equal(a.Holders, b.Holders) && a.ClaimedAtUnixMs == b.ClaimedAtUnixMs
}

func subscriptionsFromProto(in []*pb.Subscription) ([]Subscription, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]Subscription, len(in))
	for i, p := range in {
		if p.GetFilter() == "" || p.GetQos() > 2 || p.GetRetainHandling() > 2 {
			return nil, fmt.Errorf("%w: subscription %d: empty filter, or qos or retain_handling above 2", ErrInvalid, i)
		}
		out[i] = Subscription{
			Filter:            p.GetFilter(),
			QoS:               byte(p.GetQos()),
			NoLocal:           p.GetNoLocal(),
			RetainAsPublished: p.GetRetainAsPublished(),
			RetainHandling:    byte(p.GetRetainHandling()),
			SubscriptionID:    p.GetSubscriptionId(),
		}
	}
	return out, nil
}

func subscriptionsToProto(in []Subscription) []*pb.Subscription {
	if len(in) == 0 {
		return nil
	}
	out := make([]*pb.Subscription, len(in))
	for i, v := range in {
		out[i] = &pb.Subscription{
			Filter:            v.Filter,
			Qos:               uint32(v.QoS),
			NoLocal:           v.NoLocal,
			RetainAsPublished: v.RetainAsPublished,
			RetainHandling:    uint32(v.RetainHandling),
			SubscriptionId:    v.SubscriptionID,
		}
	}
	return out
}
