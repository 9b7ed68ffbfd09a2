package broker

import (
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

// retain replaces the retained message of m's topic, or deletes it when the
// payload is empty ([MQTT-3.3.1-6], [MQTT-3.3.1-7]).
func (s *Server) retain(m *Message) {
	if len(m.Payload) == 0 {
		s.retained.delete(m.Topic)
		if s.store != nil {
			s.persistRetained(m.Topic, nil)
		}
		return
	}
	s.retained.set(m)
	if s.store != nil {
		s.persistRetained(m.Topic, m)
	}
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
