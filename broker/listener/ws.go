package listener

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"

	"github.com/gorilla/websocket"
)

// subprotocols are the WebSocket subprotocols of MQTT: "mqtt" (3.1.1 and
// 5.0) and "mqttv3.1", which older clients still ask for.
var subprotocols = []string{"mqtt", "mqttv3.1"}

// wsServer serves the WebSocket upgrades of a ws or wss listener: an HTTP
// server whose handler upgrades requests on the listener's path and hands
// the connections to Accept. Each request is read by the HTTP server in a
// goroutine of its own, within the handshake timeout.
type wsServer struct {
	l     *Listener
	srv   *http.Server
	up    websocket.Upgrader
	ready chan net.Conn
	done  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	err   error // why the HTTP server stopped
}

func newWSServer(l *Listener) *wsServer {
	s := &wsServer{l: l, ready: make(chan net.Conn), done: make(chan struct{})}
	s.up = websocket.Upgrader{
		HandshakeTimeout: l.cfg.HandshakeTimeout,
		Subprotocols:     subprotocols,
		// Write buffers are borrowed only while a message is written: an
		// idle connection keeps none.
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     s.checkOrigin,
	}
	mux := http.NewServeMux()
	mux.Handle(l.cfg.Path, s)
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: l.cfg.HandshakeTimeout,
		IdleTimeout:       l.cfg.HandshakeTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(l.log.Handler(), slog.LevelDebug),
	}
	var ln net.Listener = l.inner
	if l.cfg.Type == WSS {
		tc := l.tls.Clone()
		tc.NextProtos = []string{"http/1.1"}
		ln = tls.NewListener(ln, tc)
	}
	go func() {
		err := s.srv.Serve(ln)
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		s.close()
	}()
	return s
}

// ServeHTTP upgrades one request and waits until Accept takes the
// connection.
func (s *wsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if offered := websocket.Subprotocols(r); len(offered) > 0 && !slices.ContainsFunc(offered, isMQTTSubprotocol) {
		http.Error(w, "MQTT over WebSocket needs the subprotocol mqtt", http.StatusBadRequest)
		return
	}
	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		s.l.log.Debug("WebSocket upgrade failed", "peer", r.RemoteAddr, "err", err)
		return // Upgrade has answered
	}
	ws.SetReadLimit(int64(s.l.cfg.MaxMessageSize))
	c := newWSConn(ws)
	c.peer = s.l.peer(ws.RemoteAddr())
	if r.TLS != nil && s.l.cfg.TLS != nil {
		c.user, c.clientID = certIdentity(s.l.cfg.TLS.Identity, *r.TLS)
	}
	select {
	case s.ready <- c:
	case <-s.done:
		c.Close()
	}
}

func isMQTTSubprotocol(p string) bool { return slices.Contains(subprotocols, p) }

// checkOrigin admits a request without Origin (not from a browser), and
// one from a browser when no origins are configured or its Origin is one
// of them.
func (s *wsServer) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	return origin == "" || len(s.l.cfg.AllowedOrigins) == 0 || slices.Contains(s.l.cfg.AllowedOrigins, origin)
}

func (s *wsServer) accept() (net.Conn, error) {
	select {
	case c := <-s.ready:
		return c, nil
	case <-s.done:
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil && !errors.Is(s.err, http.ErrServerClosed) && !errors.Is(s.err, net.ErrClosed) {
		return nil, s.err
	}
	return nil, net.ErrClosed
}

// close stops the HTTP server: no more upgrades. Upgraded connections are
// the broker's and stay open.
func (s *wsServer) close() {
	s.once.Do(func() {
		close(s.done)
		s.srv.Close()
	})
}
