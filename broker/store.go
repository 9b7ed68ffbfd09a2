package broker

// Store persists what must survive a restart: persistent sessions with their
// subscriptions, and the retained set. Implementations must be safe for
// concurrent use.
type Store interface {
	// SaveSession writes a persistent session's record, replacing any
	// earlier one.
	SaveSession(rec *SessionRecord) error
	// DeleteSession removes a session and everything queued for it.
	DeleteSession(clientID string) error
	// SaveRetained sets (m non-nil) or clears the retained message of topic.
	SaveRetained(topic string, m *Message) error
	// Load returns everything stored, for a restart.
	Load() (*Snapshot, error)
	Close() error
}

// SessionRecord is the stored form of a persistent session.
type SessionRecord struct {
	ClientID      string
	Version       byte
	Expiry        uint32
	Username      string
	Subscriptions []subscription
}

// Snapshot is what a Store hands back on start.
type Snapshot struct {
	Sessions []SessionRecord
	Retained []*Message
}

// persistSession writes ss's record; failures are logged (the session goes
// on in memory).
func (s *Server) persistSession(ss *session) {
	ss.mu.Lock()
	rec := &SessionRecord{ClientID: ss.id, Version: byte(ss.version), Expiry: ss.expiry, Username: ss.info.Username}
	for _, sub := range ss.subs {
		rec.Subscriptions = append(rec.Subscriptions, sub)
	}
	ss.mu.Unlock()
	if err := s.store.SaveSession(rec); err != nil {
		s.log.Error("saving session failed", "client_id", ss.id, "err", err)
	}
}

// persistRetained writes one retained change.
func (s *Server) persistRetained(topic string, m *Message) {
	if err := s.store.SaveRetained(topic, m); err != nil {
		s.log.Error("saving retained message failed", "topic", topic, "err", err)
	}
}

// restore loads the stored sessions and retained set before the first
// connection.
func (s *Server) restore() error {
	snap, err := s.store.Load()
	if err != nil {
		return err
	}
	for _, m := range snap.Retained {
		s.retained.set(m)
	}
	for i := range snap.Sessions {
		rec := &snap.Sessions[i]
		ss := newSession(s, rec.ClientID)
		ss.persistent = true
		ss.expiry = rec.Expiry
		ss.info = ClientInfo{ClientID: rec.ClientID, Username: rec.Username}
		for _, sub := range rec.Subscriptions {
			ss.subs[sub.Filter] = sub
			s.subs.Add(sub.Real, sub.Group, ss.id, subValue{sess: ss, opts: sub.Opts, subID: sub.SubID})
		}
		ss.nsubs.Store(int32(len(ss.subs)))
		s.sessions[ss.id] = ss
	}
	return nil
}
