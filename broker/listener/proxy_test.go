package listener

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	proxyproto "github.com/pires/go-proxyproto"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
)

// dialProxied opens a TCP connection to addr and sends a PROXY header of
// version v (1 or 2) saying the client is src.
func dialProxied(t testing.TB, addr string, v byte, src string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	srcAddr, err := net.ResolveTCPAddr("tcp", src)
	if err != nil {
		t.Fatal(err)
	}
	h := proxyproto.HeaderProxyFromAddrs(v, srcAddr, nc.RemoteAddr())
	if _, err := h.WriteTo(nc); err != nil {
		t.Fatal(err)
	}
	return nc
}

// The broker sees the address of the PROXY header (v1 and v2) as the
// client's, also behind TLS and WebSocket.
func TestProxyProtocolRemoteAddr(t *testing.T) {
	for _, v := range []byte{1, 2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			rec := &recorder{}
			ln, _ := serve(t, Config{Type: TCP, ProxyProtocol: true}, nil, broker.Options{Auth: rec})
			src := fmt.Sprintf("203.0.113.%d:4242", v)
			mustConnect5(t, dialProxied(t, ln.Addr().String(), v, src), "proxied", "user").pubSub(t, "p/x", []byte("x"))
			if a, _ := rec.lastAuth(); a.Remote == nil || a.Remote.String() != src {
				t.Fatalf("the broker saw the client at %v, want %s", a.Remote, src)
			}
		})
	}
	t.Run("tls", func(t *testing.T) {
		p := newPKI(t, "ca")
		cfg := tlsListener(t, p, ClientAuthNone, IdentityNone)
		cfg.ProxyProtocol = true
		rec := &recorder{}
		ln, _ := serve(t, cfg, nil, broker.Options{Auth: rec})
		tc := clientTLS(t, p, "", "")
		tc.ServerName = "localhost"
		nc := tls.Client(dialProxied(t, ln.Addr().String(), 2, "[2001:db8::7]:1234"), tc)
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := nc.Handshake(); err != nil {
			t.Fatal(err)
		}
		nc.SetDeadline(time.Time{})
		mustConnect5(t, nc, "proxied-tls", "user")
		if a, _ := rec.lastAuth(); a.Remote == nil || a.Remote.String() != "[2001:db8::7]:1234" {
			t.Fatalf("the broker saw the client at %v", a.Remote)
		}
	})
	t.Run("ws", func(t *testing.T) {
		rec := &recorder{}
		ln, _ := serve(t, Config{Type: WS, ProxyProtocol: true}, nil, broker.Options{Auth: rec})
		d := websocket.Dialer{Subprotocols: []string{"mqtt"}, NetDialContext: func(context.Context, string, string) (net.Conn, error) {
			return dialProxied(t, ln.Addr().String(), 1, "198.51.100.9:999"), nil
		}}
		ws, resp, err := d.Dial(wsURL(ln, "ws"), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		mustConnect5(t, newWSConn(ws), "proxied-ws", "user")
		if a, _ := rec.lastAuth(); a.Remote == nil || a.Remote.String() != "198.51.100.9:999" {
			t.Fatalf("the broker saw the client at %v", a.Remote)
		}
	})
}

// closedWithoutConnack reports whether the broker closes nc instead of
// answering a CONNECT.
func closedWithoutConnack(t testing.TB, nc net.Conn) error {
	t.Helper()
	code, err := connect311(t, nc, "x", "user")
	if err == nil {
		return fmt.Errorf("got CONNACK %#x, want the connection closed", byte(code))
	}
	return nil
}

// The per-address connection limit counts the addresses of the headers.
func TestProxyProtocolPerIPLimit(t *testing.T) {
	bc := broker.DefaultConfig()
	bc.MaxConnectionsPerIP = 1
	ln, _ := serve(t, Config{Type: TCP, ProxyProtocol: true}, &bc, broker.Options{})
	mustConnect5(t, dialProxied(t, ln.Addr().String(), 2, "198.51.100.1:1000"), "first", "user")
	if err := closedWithoutConnack(t, dialProxied(t, ln.Addr().String(), 1, "198.51.100.1:1001")); err != nil {
		t.Fatalf("a second connection from the same client address: %v", err)
	}
	// Every connection comes from 127.0.0.1: only the header tells them apart.
	mustConnect5(t, dialProxied(t, ln.Addr().String(), 2, "198.51.100.2:1000"), "other", "user")
}

// A connection that does not begin with a valid PROXY header is closed,
// and one that sends nothing holds up no other.
func TestProxyProtocolRequired(t *testing.T) {
	bc := broker.DefaultConfig()
	bc.ConnectTimeout = 300 * time.Millisecond
	ln, _ := serve(t, Config{Type: TCP, ProxyProtocol: true}, &bc, broker.Options{})
	for name, prefix := range map[string]string{
		"no header":        "",
		"bad v1 header":    "PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n",
		"truncated header": "PROXY TCP4 10.0.0.1",
		"bad v2 signature": "\r\n\r\n\x00\r\nQUIX\x0a\x21\x11\x00\x0c",
	} {
		t.Run(name, func(t *testing.T) {
			nc, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.Write([]byte(prefix)); err != nil {
				t.Fatal(err)
			}
			if err := closedWithoutConnack(t, nc); err != nil {
				t.Fatal(err)
			}
		})
	}
	silent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	mustConnect5(t, dialProxied(t, ln.Addr().String(), 2, "198.51.100.3:1"), "after-silent", "user")
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := bufio.NewReader(silent).ReadByte(); err == nil {
		t.Fatal("the silent connection got bytes")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the silent connection was not closed at the header deadline")
	}
}

// The header's address decides the anonymous policy: with no credentials
// configured, only clients on loopback addresses are admitted.
func TestProxyProtocolAnonymousLoopback(t *testing.T) {
	ln, _ := serve(t, Config{Type: TCP, ProxyProtocol: true, Anonymous: AnonymousLoopback}, nil, broker.Options{})
	if _, ca, err := connect5(t, dialProxied(t, ln.Addr().String(), 2, "203.0.113.50:1"), "remote", ""); err == nil || ca == nil || ca.ReasonCode != byte(packet.NotAuthorized) {
		t.Fatalf("a remote anonymous client: %+v, %v", ca, err)
	}
	mustConnect5(t, dialProxied(t, ln.Addr().String(), 2, "127.0.0.1:1"), "local", "")
	mustConnect5(t, dialProxied(t, ln.Addr().String(), 2, "203.0.113.50:2"), "remote-user", "someone")
}
