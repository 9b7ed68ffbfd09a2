package broker

import "errors"

// SetUnavailable makes the broker refuse new clients while reason is not
// empty: their CONNECT gets CONNACK 0x88 Server unavailable (3.1.1: 0x03),
// so that they connect to another node, and the refusal is logged with
// reason. Connected clients are not touched. A cluster node is unavailable
// from its start until its copy of the cluster's state has caught up:
// before that its routes may be missing the subscriptions made while it
// was down, and a publish it acknowledged could reach no one.
// SetUnavailable("") ends it.
func (s *Server) SetUnavailable(reason string) {
	if reason == "" {
		s.unavailable.Store(nil)
		return
	}
	err := errors.New(reason)
	s.unavailable.Store(&err)
}

// Available reports whether the broker admits new clients (SetUnavailable).
func (s *Server) Available() bool { return s.unavailable.Load() == nil }

// unavailableErr is the reason new clients are refused, or nil.
func (s *Server) unavailableErr() error {
	if p := s.unavailable.Load(); p != nil {
		return *p
	}
	return nil
}
