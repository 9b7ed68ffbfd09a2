package listener

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// maxPendingHeaders bounds the connections of one listener whose PROXY
// header is still being read; more are closed at once.
const maxPendingHeaders = 1024

// proxyListener reads the PROXY protocol header (v1 or v2, required) of
// each connection in a goroutine of its own, so that a peer that sends it
// slowly never holds up Accept, and hands over the connections whose
// header arrived within the timeout.
type proxyListener struct {
	net.Listener
	timeout time.Duration
	log     *slog.Logger
	ready   chan net.Conn
	pending chan struct{} // a token per header being read
	done    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	err     error                 // why the accept loop stopped
	reading map[net.Conn]struct{} // connections whose header is being read
}

func newProxyListener(ln net.Listener, timeout time.Duration, log *slog.Logger) *proxyListener {
	p := &proxyListener{Listener: ln, timeout: timeout, log: log, ready: make(chan net.Conn),
		pending: make(chan struct{}, maxPendingHeaders), done: make(chan struct{}), reading: make(map[net.Conn]struct{})}
	go p.acceptLoop()
	return p
}

// acceptLoop accepts raw connections until the listener fails.
func (p *proxyListener) acceptLoop() {
	var backoff time.Duration
	for {
		nc, err := p.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				p.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-p.done:
				}
			}
			p.mu.Lock()
			p.err = err
			p.mu.Unlock()
			p.Close()
			return
		}
		backoff = 0
		select {
		case p.pending <- struct{}{}:
			go p.readHeader(nc)
		default:
			p.log.Warn("too many connections waiting for their PROXY header; closed", "peer", nc.RemoteAddr().String())
			nc.Close()
		}
	}
}

// readHeader reads one connection's header and hands the connection over.
func (p *proxyListener) readHeader(nc net.Conn) {
	defer func() { <-p.pending }()
	if !p.track(nc) {
		nc.Close()
		return
	}
	defer p.untrack(nc)
	pc := proxyproto.NewConn(nc, proxyproto.WithPolicy(proxyproto.REQUIRE), proxyproto.SetReadHeaderTimeout(p.timeout))
	if pc.ProxyHeader() == nil {
		// REQUIRE: no header is an error, whatever the reason.
		_, err := pc.Read(nil)
		p.log.Debug("connection without a valid PROXY header; closed", "peer", nc.RemoteAddr().String(), "err", err)
		nc.Close()
		return
	}
	c := &proxyConn{Conn: pc}
	c.tcp, _ = nc.(*net.TCPConn)
	select {
	case p.ready <- c:
	case <-p.done:
		nc.Close()
	}
}

// Accept returns the next connection whose header has been read.
func (p *proxyListener) Accept() (net.Conn, error) {
	select {
	case c := <-p.ready:
		return c, nil
	case <-p.done:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil && !errors.Is(p.err, net.ErrClosed) {
		return nil, p.err
	}
	return nil, net.ErrClosed
}

// Close stops accepting; connections reading their header are closed.
func (p *proxyListener) Close() error {
	var err error
	p.once.Do(func() {
		close(p.done)
		err = p.Listener.Close()
		p.mu.Lock()
		for nc := range p.reading {
			nc.Close()
		}
		p.reading = nil
		p.mu.Unlock()
	})
	return err
}

// track records a connection whose header is being read, unless the
// listener is closed.
func (p *proxyListener) track(nc net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.reading == nil {
		return false
	}
	p.reading[nc] = struct{}{}
	return true
}

func (p *proxyListener) untrack(nc net.Conn) {
	p.mu.Lock()
	delete(p.reading, nc)
	p.mu.Unlock()
}

// proxyConn is a connection that began with a PROXY header: RemoteAddr
// and LocalAddr are the addresses the header carries. Writes through
// SyscallConn go straight to the socket, as on a plain TCP connection.
type proxyConn struct {
	*proxyproto.Conn
	tcp *net.TCPConn
	peer
}

// SyscallConn gives the broker the socket for its non-blocking writes;
// reads go through Read, which first returns what followed the header.
func (c *proxyConn) SyscallConn() (syscall.RawConn, error) {
	if c.tcp == nil {
		return nil, errors.New("listener: not a TCP connection")
	}
	return c.tcp.SyscallConn()
}
