package broker

import (
	"net"
	"sync"
	"time"
)

// admit decides whether a freshly accepted connection may stay, by the
// overall and per-address bounds; it counts the connection when it may.
// Caller holds s.mu.
func (s *Server) admitLocked(c *conn) bool {
	if max := s.cfg.MaxConnections; max > 0 && len(s.conns) >= max {
		return false
	}
	if max := s.cfg.MaxConnectionsPerIP; max > 0 {
		ip := remoteIP(c.nc)
		if s.perIP[ip] >= max {
			return false
		}
		s.perIP[ip]++
		c.ip = ip
	}
	return true
}

// releaseLocked forgets an admitted connection. Caller holds s.mu.
func (s *Server) releaseLocked(c *conn) {
	if c.ip == "" {
		return
	}
	if n := s.perIP[c.ip] - 1; n > 0 {
		s.perIP[c.ip] = n
	} else {
		delete(s.perIP, c.ip)
	}
}

func remoteIP(nc net.Conn) string {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	h, _, err := net.SplitHostPort(nc.RemoteAddr().String())
	if err != nil {
		return nc.RemoteAddr().String()
	}
	return h
}

// rateLimiter is a token bucket of CONNECTs.
type rateLimiter struct {
	mu     sync.Mutex
	rate   float64 // tokens per second; 0 = unlimited
	burst  float64
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

// allow takes a token if one is there.
func (l *rateLimiter) allow(now time.Time) bool {
	if l.rate == 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}
