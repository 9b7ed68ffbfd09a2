package broker

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mqcluster/mqcluster/broker/topic"
)

// retainedSet holds the last retained message per topic.
type retainedSet struct {
	mu   sync.RWMutex
	msgs map[string]*Message
}

func newRetainedSet() *retainedSet {
	return &retainedSet{msgs: make(map[string]*Message)}
}

// retainInMemory replaces the retained message of m's topic, or deletes it
// when the payload is empty ([MQTT-3.3.1-6], [MQTT-3.3.1-7]).
func (s *Server) retainInMemory(m *Message) {
	if len(m.Payload) == 0 {
		s.retained.delete(m.Topic)
		return
	}
	s.retained.set(m)
}

// retainedOp is the store write of a retained change.
func retainedOp(m *Message) StoreOp {
	if len(m.Payload) == 0 {
		return StoreOp{Kind: OpDeleteRetained, Topic: m.Topic}
	}
	return StoreOp{Kind: OpPutRetained, Topic: m.Topic, Retained: m}
}

func (r *retainedSet) set(m *Message) {
	r.mu.Lock()
	r.msgs[m.Topic] = m
	r.mu.Unlock()
}

func (r *retainedSet) delete(name string) {
	r.mu.Lock()
	delete(r.msgs, name)
	r.mu.Unlock()
}

// match returns the live retained messages whose topics match filter;
// expired ones are dropped on the way ([MQTT-3.3.2-5]).
func (r *retainedSet) match(filter string) []*Message {
	now := time.Now().UnixNano()
	var out, expired []*Message
	r.mu.RLock()
	for name, m := range r.msgs {
		if !topic.Match(filter, name) {
			continue
		}
		if m.expired(now) {
			expired = append(expired, m)
			continue
		}
		out = append(out, m)
	}
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Message) int { return strings.Compare(a.Topic, b.Topic) })
	if len(expired) > 0 {
		r.mu.Lock()
		for _, m := range expired {
			if r.msgs[m.Topic] == m {
				delete(r.msgs, m.Topic)
			}
		}
		r.mu.Unlock()
	}
	return out
}

// len is the number of retained messages.
func (r *retainedSet) len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.msgs)
}
