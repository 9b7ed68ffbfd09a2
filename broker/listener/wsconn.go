package listener

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// errNotBinary ends a connection that sent a text message: MQTT travels in
// binary messages only ([MQTT-6.0.0-1]).
var errNotBinary = errors.New("listener: WebSocket text message; MQTT needs binary messages")

// clientWriteBuffer is the write buffer of DialWebSocket's connections,
// taken from a pool while a message is written.
const clientWriteBuffer = 64 << 10

// closeWait bounds how long Close waits to send the WebSocket close frame.
const closeWait = 100 * time.Millisecond

// wsConn is a net.Conn over a WebSocket: the payloads of the binary
// messages it receives, one after the other, are the byte stream Read
// returns (so a message may hold several MQTT packets, and a packet may
// span several messages); each Write is sent as one binary message.
// One goroutine may read while another writes.
type wsConn struct {
	ws  *websocket.Conn
	r   io.Reader // the message being read; nil between messages
	err error     // the read error that ended the stream, returned again
	wmu sync.Mutex
	// wdeadline is the write deadline Write applies (SetWriteDeadline).
	wdeadline atomic.Pointer[time.Time]
	peer
	user, clientID string // from a verified client certificate (wss)
}

func newWSConn(ws *websocket.Conn) *wsConn { return &wsConn{ws: ws} }

// Read reads from the current message, moving on to the next one when it
// ends.
func (c *wsConn) Read(b []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	for {
		if c.r == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				c.err = wsError(err)
				return 0, c.err
			}
			if typ != websocket.BinaryMessage {
				c.ws.WriteControl(websocket.CloseMessage,
					websocket.FormatCloseMessage(websocket.CloseUnsupportedData, "binary messages only"), time.Now().Add(closeWait))
				c.err = errNotBinary
				return 0, c.err
			}
			c.r = r
		}
		n, err := c.r.Read(b)
		if err == io.EOF {
			c.r = nil
			if n == 0 && len(b) > 0 {
				continue // an empty message, or the end of one
			}
			err = nil
		}
		if err != nil {
			c.err = wsError(err)
			return n, c.err
		}
		return n, nil
	}
}

// wsError translates the WebSocket library's read errors into those of a
// socket: a close from the peer is the end of the stream, a deadline that
// passed is os.ErrDeadlineExceeded (which the broker's keep-alive expects).
func wsError(err error) error {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		return io.EOF
	case errors.As(err, &ne) && ne.Timeout():
		return os.ErrDeadlineExceeded
	}
	return err
}

// Write sends b as one binary message.
func (c *wsConn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	if d := c.wdeadline.Load(); d != nil {
		c.ws.SetWriteDeadline(*d)
	}
	err := c.ws.WriteMessage(websocket.BinaryMessage, b)
	c.wmu.Unlock()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			err = os.ErrDeadlineExceeded
		}
		return 0, err
	}
	return len(b), nil
}

// Close sends a close frame if the socket takes it at once, then closes.
func (c *wsConn) Close() error {
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
		time.Now().Add(closeWait))
	return c.ws.Close()
}

func (c *wsConn) LocalAddr() net.Addr  { return c.ws.LocalAddr() }
func (c *wsConn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

func (c *wsConn) SetDeadline(t time.Time) error {
	c.SetWriteDeadline(t)
	return c.ws.SetReadDeadline(t)
}

func (c *wsConn) SetReadDeadline(t time.Time) error { return c.ws.SetReadDeadline(t) }

// SetWriteDeadline may be called from any goroutine, as on a net.Conn: the
// library's own setter is not safe for that, so the deadline is kept here
// and given to the library by Write, under the write lock.
func (c *wsConn) SetWriteDeadline(t time.Time) error {
	c.wdeadline.Store(&t)
	return nil
}

// PeerIdentity implements broker.PeerIdentifier for wss listeners that
// verify client certificates.
func (c *wsConn) PeerIdentity() (username, clientID string) { return c.user, c.clientID }

// DialWebSocket connects to an MQTT WebSocket endpoint (ws://host:port/path
// or wss://...) with the subprotocol mqtt and returns the connection as a
// byte stream, for clients: tests and the benchmark. dial, when not nil,
// opens the TCP connection.
func DialWebSocket(ctx context.Context, url string, tc *tls.Config, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (net.Conn, error) {
	// A Write of up to clientWriteBuffer bytes goes out as one frame.
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, TLSClientConfig: tc, HandshakeTimeout: 10 * time.Second,
		NetDialContext: dial, WriteBufferSize: clientWriteBuffer, WriteBufferPool: &sync.Pool{}}
	ws, resp, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return newWSConn(ws), nil
}
