package main

import (
	"fmt"
	"sort"
)

// epoch is one uninterrupted life of a persistent subscriber's
// subscription: from its SUBACK until its session ended (clean start,
// UNSUBACK, a reconnect that found no session) or the end of the run.
type epoch struct {
	Start, End int64
	Filter     string
	QoS        int
}

// subscriber is a client with a persistent session and what it received.
type subscriber struct {
	ID        string
	Epochs    []epoch
	Delivered map[string]int // payload -> deliveries
	Order     []Op           // deliveries in order
	Lost      []any          // sessions that vanished before they could expire
	Connects  []Op
}

// persistent reports whether a connect asks for a session that outlives
// its connection: 5.0 with a session expiry, 3.1.1 clean session 0.
func persistent(op Op) bool { return op.Expiry != 0 }

// subscribers rebuilds every persistent subscriber's epochs.
//
// A subscription's epoch starts when its SUBACK arrives. It ends at the
// invocation of a clean-start connect, or of an UNSUBSCRIBE; and when a
// reconnect with clean start 0 finds no session (session present 0): if
// the session may have expired by then (more than its expiry since the
// previous connection began, the earliest it could have gone offline), the
// epoch ends when that connection ended (a message acknowledged after it
// could only reach a later connection, and there was none before the
// session expired), or at that earliest expiry when the history does not
// say when it ended; otherwise the session was lost by the broker, which
// is recorded, and the epoch ends at that reconnect.
func (ix *index) subscribers() map[string]*subscriber {
	out := map[string]*subscriber{}
	for id, ops := range ix.byClient {
		isPersistent := false
		for _, op := range ops {
			if op.F == "connect" && op.Type == "ok" && persistent(op) {
				isPersistent = true
				break
			}
		}
		if !isPersistent {
			continue
		}
		s := &subscriber{ID: id, Delivered: map[string]int{}}
		var cur *epoch
		var lastConnOK, lastConnEnd, expiry int64 = 0, 0, 0
		closeAt := func(t int64) {
			if cur != nil {
				cur.End = t
				s.Epochs = append(s.Epochs, *cur)
				cur = nil
			}
		}
		for _, op := range ops {
			switch {
			case op.F == "deliver":
				s.Delivered[op.Payload]++
				s.Order = append(s.Order, op)
			case op.F == "connect" && op.Type == "ok":
				s.Connects = append(s.Connects, op)
				inv := ix.invokeTime(op)
				switch {
				case op.CleanStart:
					closeAt(inv)
				case op.SessionPresent != nil && !*op.SessionPresent && cur != nil:
					if expiry >= 0 && inv-lastConnOK > expiry*1e9 {
						if lastConnEnd > lastConnOK {
							closeAt(lastConnEnd)
						} else {
							closeAt(lastConnOK + expiry*1e9)
						}
					} else {
						s.Lost = append(s.Lost, map[string]any{"client": id, "node": op.Node, "conn": op.Conn,
							"at": secs(op.Time), "previous_connect": secs(lastConnOK), "expiry_s": expiry,
							"what": "reconnect with clean start 0 found no session (session present 0) before it could expire"})
						closeAt(op.Time)
					}
				}
				lastConnOK, expiry = op.Time, op.Expiry
			case (op.F == "disconnect" || op.F == "abort" || op.F == "conn-lost") && op.Type != "invoke" &&
				lastConnEnd <= lastConnOK:
				lastConnEnd = op.Time
			case op.F == "subscribe" && op.Type == "ok" && op.Reason != nil && *op.Reason < 0x80:
				if cur == nil {
					cur = &epoch{Start: op.Time, Filter: op.Topic, QoS: min(op.QoS, *op.Reason)}
				}
			case op.F == "unsubscribe" && op.Type == "ok":
				closeAt(ix.invokeTime(op))
			}
		}
		closeAt(forever)
		out[id] = s
	}
	return out
}

// required reports whether s must receive p: p was acknowledged to its
// publisher, invoked after the SUBACK of an epoch of s whose filter
// matches, and acknowledged before that epoch ended, at QoS >= 1 both ways.
func (s *subscriber) required(p *pubOp) (epoch, bool) {
	if !p.acked() || p.QoS == 0 {
		return epoch{}, false
	}
	for _, e := range s.Epochs {
		if p.Invoke > e.Start && p.Done < e.End && e.QoS >= 1 && topicMatch(e.Filter, p.Topic) {
			return e, true
		}
	}
	return epoch{}, false
}

// connectsAround lists where s was connected from a little before t on.
func (s *subscriber) connectsAround(t int64) []string {
	var out []string
	for _, c := range s.Connects {
		if c.Time >= t-5e9 && len(out) < 8 {
			out = append(out, fmt.Sprintf("conn %d on n%d at %s (session present %v)", c.Conn, c.Node, secs(c.Time), c.SessionPresent != nil && *c.SessionPresent))
		}
	}
	return out
}

// checkLost: every publish acknowledged while a persistent subscriber was
// subscribed (see required) reaches that subscriber. QoS 1 duplicates are
// counted here too.
func checkLost(ix *index) *Result {
	r := newResult("lost")
	subs := ix.subscribers()
	ids := sortedKeys(subs)
	for _, id := range ids {
		s := subs[id]
		for _, p := range ix.pubList {
			if _, ok := s.required(p); !ok {
				continue
			}
			r.Counts["required"]++
			if s.Delivered[p.Payload] == 0 {
				r.Counts["lost@"+id]++
				r.fail("lost", map[string]any{"payload": p.Payload, "topic": p.Topic, "qos": p.QoS,
					"publisher": p.Client, "ingress_node": p.Node, "invoked": secs(p.Invoke), "acked": secs(p.Done),
					"subscriber": id, "subscriber_connections": s.connectsAround(p.Invoke),
					"faults": ix.activeFaults(p.Invoke-2e9, p.Done+2e9)})
			} else if s.Delivered[p.Payload] > 1 && p.QoS == 1 {
				r.Counts["qos1-duplicates"] += s.Delivered[p.Payload] - 1
			}
		}
	}
	r.Counts["subscribers"] = len(subs)
	return r
}

// checkQoS2Duplicates: a message published at QoS 2 and received on a QoS 2
// subscription reaches the application once.
func checkQoS2Duplicates(ix *index) *Result {
	r := newResult("qos2-duplicates")
	subs := ix.subscribers()
	for _, id := range sortedKeys(subs) {
		s := subs[id]
		for payload, n := range s.Delivered {
			p, ok := ix.pubs[payload]
			if !ok || p.QoS != 2 {
				continue
			}
			if e, ok := s.epochFor(p); ok && e.QoS == 2 {
				r.Counts["checked"]++
				if n > 1 {
					r.fail("duplicate", map[string]any{"payload": payload, "subscriber": id, "deliveries": n,
						"publisher": p.Client, "ingress_node": p.Node, "acked": secs(p.Done)})
				}
			}
		}
	}
	return r
}

// epochFor is the epoch p was published in, acknowledged or not.
func (s *subscriber) epochFor(p *pubOp) (epoch, bool) {
	for _, e := range s.Epochs {
		if p.Invoke > e.Start && p.Invoke < e.End && topicMatch(e.Filter, p.Topic) {
			return e, true
		}
	}
	return epoch{}, false
}

// checkOrder: per subscriber, publisher connection and topic, first
// deliveries come in increasing sequence ([MQTT-4.6.0-6]: one publisher's
// messages on one topic keep their order).
func checkOrder(ix *index) *Result {
	r := newResult("order")
	subs := ix.subscribers()
	for _, id := range sortedKeys(subs) {
		s := subs[id]
		seen := map[string]bool{}
		last := map[string]*pubOp{}
		for _, d := range s.Order {
			if seen[d.Payload] {
				continue
			}
			seen[d.Payload] = true
			p, ok := ix.pubs[d.Payload]
			if !ok || p.Seq < 0 {
				continue
			}
			key := fmt.Sprintf("%s/%d/%s", p.Client, p.Conn, p.Topic)
			if prev := last[key]; prev != nil && p.Seq < prev.Seq {
				r.fail("reorder", map[string]any{"subscriber": id, "stream": key, "got": p.Payload, "after": prev.Payload,
					"at": secs(d.Time), "node": d.Node, "conn": d.Conn})
				continue
			}
			last[key] = p
		}
		r.Counts["streams"] += len(last)
	}
	return r
}

// checkSessions: a persistent session is there on every reconnect until
// it may have expired.
func checkSessions(ix *index) *Result {
	r := newResult("sessions")
	subs := ix.subscribers()
	for _, id := range sortedKeys(subs) {
		r.Counts["sessions"]++
		for _, l := range subs[id].Lost {
			r.fail("session-lost", l)
		}
	}
	return r
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
