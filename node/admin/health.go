package admin

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/mqcluster/mqcluster/node"
)

// healthz answers 200 while the process serves HTTP at all: liveness.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

// readyz answers 200 when the node should get clients, 503 otherwise, with
// the checks in the body either way.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	rd := s.readiness()
	code := http.StatusOK
	if !rd.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, rd)
}

// readyState remembers, across checks, whether the state machine caught up
// once since the start: the commit index seen at the first contact with a
// leader is the target.
type readyState struct {
	target   uint64
	targeted bool
	caughtUp bool
}

// readiness evaluates the checks, in order: listeners, cluster, leader,
// fsm. A broker alone passes the last three.
func (s *Server) readiness() Readiness {
	var checks []Check
	add := func(name string, ok bool, format string, args ...any) {
		checks = append(checks, Check{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}
	switch {
	case s.brk.Draining():
		add("listeners", false, "draining: the listeners are closed")
	case !s.brk.Accepting():
		add("listeners", false, "no listener open yet")
	case !s.brk.Available():
		add("listeners", false, "refusing new clients: catching up with the cluster's state")
	default:
		add("listeners", true, "accepting connections")
	}
	if s.cl == nil {
		add("cluster", true, "a broker alone (no cluster)")
		add("leader", true, "a broker alone (no cluster)")
		add("fsm", true, "a broker alone (no cluster)")
	} else {
		st := s.cl.RaftStatus()
		s.checkCluster(st, add)
	}
	rd := Readiness{Ready: true, Checks: checks}
	for _, c := range checks {
		if !c.OK {
			rd.Ready = false
			rd.Failed = append(rd.Failed, c.Name)
		}
	}
	return rd
}

func (s *Server) checkCluster(st node.RaftStatus, add func(name string, ok bool, format string, args ...any)) {
	id := s.cl.ID()
	member := slices.ContainsFunc(st.Servers, func(rs node.RaftServer) bool { return rs.ID == id })
	if member {
		add("cluster", true, "in the Raft configuration (%d servers)", len(st.Servers))
	} else {
		add("cluster", false, "not in the Raft configuration yet: waiting to bootstrap or to be added")
	}
	contact := s.cl.InContact()
	switch {
	case st.LeaderID == "":
		add("leader", false, "no leader known (no quorum, or an election in progress)")
	case !contact:
		since := "never"
		if !st.LastContact.IsZero() {
			since = time.Since(st.LastContact).Round(time.Millisecond).String() + " ago"
		}
		add("leader", false, "leader %s not heard lately (last contact %s)", st.LeaderID, since)
	default:
		add("leader", true, "leader %s", st.LeaderID)
	}
	if err := s.cl.FSM().Err(); err != nil {
		add("fsm", false, "the state machine halted: %v", err)
		return
	}
	s.readyMu.Lock()
	r := &s.ready
	if !r.targeted && contact && member {
		r.target, r.targeted = st.CommitIndex, true
	}
	if r.targeted && st.AppliedIndex >= r.target {
		r.caughtUp = true
	}
	caughtUp, target, targeted := r.caughtUp, r.target, r.targeted
	s.readyMu.Unlock()
	lag := uint64(0)
	if st.CommitIndex > st.AppliedIndex {
		lag = st.CommitIndex - st.AppliedIndex
	}
	switch {
	case !targeted:
		add("fsm", false, "waiting for a leader to learn the commit index")
	case !caughtUp:
		add("fsm", false, "catching up: applied %d of %d", st.AppliedIndex, target)
	case lag > s.cfg.MaxApplyLag:
		add("fsm", false, "applied index %d trails the commit index %d by more than %d", st.AppliedIndex, st.CommitIndex, s.cfg.MaxApplyLag)
	default:
		add("fsm", true, "caught up: applied %d, commit %d", st.AppliedIndex, st.CommitIndex)
	}
}
