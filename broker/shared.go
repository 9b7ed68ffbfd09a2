package broker

import (
	"hash/fnv"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/mqcluster/mqcluster/broker/topic"
)

// shareRef names one share group of one filter; deliveries made through it
// carry it so that they can go to another member when theirs leaves.
type shareRef struct {
	filter, group string
}

// shareGroup collects the members of one share group matched by a message.
type shareGroup struct {
	ref     shareRef
	members []topic.Entry[subValue]
}

// shareState is the per-group memory of the selection strategies.
type shareState struct {
	mu     sync.RWMutex
	rr     map[shareRef]*atomic.Uint32
	sticky map[shareRef]string
	refs   map[shareRef]*shareRef
}

func (st *shareState) init() {
	st.rr = make(map[shareRef]*atomic.Uint32)
	st.sticky = make(map[shareRef]string)
	st.refs = make(map[shareRef]*shareRef)
}

// ref returns the interned pointer for a group.
func (st *shareState) ref(r shareRef) *shareRef {
	st.mu.RLock()
	p := st.refs[r]
	st.mu.RUnlock()
	if p != nil {
		return p
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if p = st.refs[r]; p == nil {
		p = &r
		st.refs[r] = p
	}
	return p
}

func (st *shareState) counter(r shareRef) *atomic.Uint32 {
	st.mu.RLock()
	c := st.rr[r]
	st.mu.RUnlock()
	if c != nil {
		return c
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if c = st.rr[r]; c == nil {
		c = new(atomic.Uint32)
		st.rr[r] = c
	}
	return c
}

// addShareEntry files a matched shared subscription under its group.
func addShareEntry(groups []shareGroup, e *topic.Entry[subValue]) []shareGroup {
	r := shareRef{filter: e.Filter, group: e.Group}
	for i := range groups {
		if groups[i].ref == r {
			groups[i].members = append(groups[i].members, *e)
			return groups
		}
	}
	return append(groups, shareGroup{ref: r, members: []topic.Entry[subValue]{*e}})
}

// pickShared chooses the one member of the group that gets m
// ([MQTT-4.8.2-...]: each message goes to one session of a share group),
// preferring members that are connected, by the configured strategy.
func (s *Server) pickShared(g *shareGroup, m *Message) (target, bool) {
	members := g.members
	online := members[:0:0]
	for _, e := range members {
		if e.Value.sess.online() {
			online = append(online, e)
		}
	}
	if len(online) > 0 {
		members = online
	}
	if s.acl != nil {
		allowed := members[:0:0]
		for _, e := range members {
			if s.canRead(e.Value.sess, m.Topic) {
				allowed = append(allowed, e)
			}
		}
		members = allowed
	}
	if len(members) == 0 {
		return target{}, false
	}
	v := &s.pickMember(g.ref, members, m).Value
	t := target{sess: v.sess, qos: min(m.QoS, v.opts.QoS), retain: v.opts.RetainAsPublished && m.Retain, share: s.shares.ref(g.ref)}
	if v.subID != 0 {
		t.subIDs = []uint32{v.subID}
	}
	return t, true
}

// pickMember applies the share strategy.
func (s *Server) pickMember(r shareRef, members []topic.Entry[subValue], m *Message) *topic.Entry[subValue] {
	n := len(members)
	switch s.cfg.SharedStrategy {
	case ShareRandom:
		return &members[rand.IntN(n)]
	case ShareHash:
		h := fnv.New32a()
		h.Write([]byte(m.Origin))
		return &members[int(h.Sum32()%uint32(n))]
	case ShareSticky:
		s.shares.mu.RLock()
		last := s.shares.sticky[r]
		s.shares.mu.RUnlock()
		for i := range members {
			if members[i].Subscriber == last {
				return &members[i]
			}
		}
		pick := &members[rand.IntN(n)]
		s.shares.mu.Lock()
		s.shares.sticky[r] = pick.Subscriber
		s.shares.mu.Unlock()
		return pick
	}
	i := s.shares.counter(r).Add(1)
	return &members[int(i%uint32(n))]
}

// sharedOrphans takes the messages a session holds through share groups,
// queued or unacknowledged. Caller holds ss.mu.
func (ss *session) sharedOrphans() []outMsg {
	var out []outMsg
	for _, o := range ss.inflight {
		if o.share != nil && o.state == statePublish {
			out = append(out, o)
		}
	}
	ss.queue.each(func(o *outMsg) {
		if o.share != nil {
			out = append(out, *o)
		}
	})
	return out
}

// redistribute hands messages of a departed share-group member to the
// remaining members of the same group.
func (s *Server) redistribute(orphans []outMsg) {
	var entries []topic.Entry[subValue]
	for _, o := range orphans {
		entries = s.subs.Match(o.msg.Topic, entries[:0])
		g := shareGroup{ref: *o.share}
		for i := range entries {
			if entries[i].Filter == o.share.filter && entries[i].Group == o.share.group {
				g.members = append(g.members, entries[i])
			}
		}
		if t, ok := s.pickShared(&g, o.msg); ok {
			sc := scratchPool.Get().(*routeScratch)
			s.dispatch(o.msg, []target{t}, nil, nil, ackTo{}, false, sc)
			scratchPool.Put(sc)
		}
	}
}
