package listener

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
)

func wsURL(ln *Listener, scheme string) string {
	return scheme + "://" + ln.Addr().String() + "/mqtt"
}

// A real MQTT client over a real WebSocket client: small and large
// messages both ways.
func TestWebSocketClient(t *testing.T) {
	ln, _ := serve(t, Config{Type: WS}, nil, broker.Options{})
	nc, err := DialWebSocket(context.Background(), wsURL(ln, "ws"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := mustConnect5(t, nc, "ws-client", "")
	c.pubSub(t, "ws/small", []byte("hello"))
	c.pubSub(t, "ws/large", bytes.Repeat([]byte("x"), 200<<10))
}

// dialRaw opens a WebSocket with the given write buffer size (small ones
// make the library split a message into continuation frames) and returns
// it with a reader of the byte stream the broker sends.
func dialRaw(t *testing.T, url string, writeBuf int, header http.Header) (*websocket.Conn, *bufio.Reader) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{"mqtt"}, WriteBufferSize: writeBuf}
	ws, resp, err := d.Dial(url, header)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	t.Cleanup(func() { ws.Close() })
	return ws, bufio.NewReader(newWSConn(ws))
}

func encode(t *testing.T, pks ...packet.Packet) []byte {
	t.Helper()
	var b []byte
	for _, pk := range pks {
		var err error
		if b, err = pk.Append(b, packet.V311); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// expect reads the next packets and checks their types.
func expect(t *testing.T, r *bufio.Reader, types ...packet.Type) []packet.Packet {
	t.Helper()
	var out []packet.Packet
	for _, want := range types {
		pk, err := readPacket(r, packet.V311)
		if err != nil {
			t.Fatalf("waiting for %v: %v", want, err)
		}
		if pk.Type() != want {
			t.Fatalf("got %v, want %v", pk.Type(), want)
		}
		out = append(out, pk)
	}
	return out
}

// The WebSocket is a byte stream: several MQTT packets in one message, a
// packet spread over several messages, and a message in continuation
// frames all reach the broker whole.
func TestWebSocketFraming(t *testing.T) {
	ln, _ := serve(t, Config{Type: WS}, nil, broker.Options{})
	connect := &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, CleanStart: true, KeepAlive: 30, ClientID: "framing"}
	sub := &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "f/#", Options: packet.SubOptions{QoS: 0}}}}
	pub := func(payload string) *packet.Publish { return &packet.Publish{Topic: "f/x", Payload: []byte(payload)} }

	t.Run("several packets in one message", func(t *testing.T) {
		ws, r := dialRaw(t, wsURL(ln, "ws"), 0, nil)
		if err := ws.WriteMessage(websocket.BinaryMessage, encode(t, connect, sub, pub("one"), pub("two"))); err != nil {
			t.Fatal(err)
		}
		got := expect(t, r, packet.CONNACK, packet.SUBACK, packet.PUBLISH, packet.PUBLISH)
		if p := got[3].(*packet.Publish); string(p.Payload) != "two" {
			t.Fatalf("second message %q", p.Payload)
		}
	})
	t.Run("one packet over several messages", func(t *testing.T) {
		ws, r := dialRaw(t, wsURL(ln, "ws"), 0, nil)
		b := encode(t, connect, sub)
		for i := range b { // a byte per message
			if err := ws.WriteMessage(websocket.BinaryMessage, b[i:i+1]); err != nil {
				t.Fatal(err)
			}
		}
		expect(t, r, packet.CONNACK, packet.SUBACK)
		p := encode(t, pub(strings.Repeat("y", 1000)))
		for _, part := range [][]byte{p[:3], p[3:500], {}, p[500:]} {
			if err := ws.WriteMessage(websocket.BinaryMessage, part); err != nil {
				t.Fatal(err)
			}
		}
		if got := expect(t, r, packet.PUBLISH)[0].(*packet.Publish); len(got.Payload) != 1000 {
			t.Fatalf("payload of %d bytes", len(got.Payload))
		}
	})
	t.Run("continuation frames", func(t *testing.T) {
		ws, r := dialRaw(t, wsURL(ln, "ws"), 64, nil)
		w, err := ws.NextWriter(websocket.BinaryMessage)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(encode(t, connect, sub, pub(strings.Repeat("z", 700))))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		expect(t, r, packet.CONNACK, packet.SUBACK, packet.PUBLISH)
	})
}

// MQTT travels in binary messages: a text message ends the connection, as
// does a message over the broker's maximum packet size.
func TestWebSocketRefusals(t *testing.T) {
	bc := broker.DefaultConfig()
	bc.MaxPacketSize = 1024
	ln, _ := serve(t, Config{Type: WS}, &bc, broker.Options{})
	connect := encode(t, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, CleanStart: true, ClientID: "r"})
	for name, send := range map[string]func(*websocket.Conn) error{
		"text message": func(ws *websocket.Conn) error { return ws.WriteMessage(websocket.TextMessage, connect) },
		"message over the limit": func(ws *websocket.Conn) error {
			return ws.WriteMessage(websocket.BinaryMessage, append(connect, make([]byte, 2000)...))
		},
	} {
		t.Run(name, func(t *testing.T) {
			ws, r := dialRaw(t, wsURL(ln, "ws"), 0, nil)
			if err := send(ws); err != nil {
				t.Fatal(err)
			}
			ws.SetReadDeadline(time.Now().Add(5 * time.Second))
			if pk, err := readPacket(r, packet.V311); err == nil {
				t.Fatalf("got %v, want the connection closed", pk.Type())
			}
		})
	}
}

// The upgrade negotiates the subprotocol mqtt or mqttv3.1, refuses others,
// and checks the Origin of browsers against allowed_origins.
func TestWebSocketUpgrade(t *testing.T) {
	ln, _ := serve(t, Config{Type: WS, AllowedOrigins: []string{"https://app.example"}}, nil, broker.Options{})
	for _, tc := range []struct {
		protocols []string
		origin    string
		want      string // negotiated subprotocol; "refused" when the upgrade fails
	}{
		{[]string{"mqtt"}, "", "mqtt"},
		{[]string{"mqttv3.1"}, "", "mqttv3.1"},
		{nil, "", ""},
		{[]string{"chat"}, "", "refused"},
		{[]string{"mqtt"}, "https://app.example", "mqtt"},
		{[]string{"mqtt"}, "https://evil.example", "refused"},
	} {
		h := http.Header{}
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		d := websocket.Dialer{Subprotocols: tc.protocols}
		ws, resp, err := d.Dial(wsURL(ln, "ws"), h)
		if resp != nil {
			resp.Body.Close()
		}
		got := "refused"
		if err == nil {
			got = ws.Subprotocol()
			ws.Close()
		}
		if got != tc.want {
			t.Errorf("subprotocols %q origin %q: got %q, want %q", tc.protocols, tc.origin, got, tc.want)
		}
	}
	// Another path is not the MQTT endpoint.
	if _, resp, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/other", nil); err == nil || resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("another path: %v %v", resp, err)
	}
}

// Secure WebSocket with a client certificate whose CN is the username.
func TestSecureWebSocketClientCert(t *testing.T) {
	p := newPKI(t, "ca")
	cfg := tlsListener(t, p, ClientAuthRequired, IdentityCNAsUsername)
	cfg.Type = WSS
	rec := &recorder{}
	ln, _ := serve(t, cfg, nil, broker.Options{Auth: rec, ACL: rec})
	cert, key := p.issue(t, "client", "carol", false, nil)
	nc, err := DialWebSocket(context.Background(), wsURL(ln, "wss"), clientTLS(t, p, cert, key), nil)
	if err != nil {
		t.Fatal(err)
	}
	mustConnect5(t, nc, "wss", "").pubSub(t, "wss/x", []byte("secure"))
	if sub, _ := rec.lastSub(); sub.Username != "carol" {
		t.Fatalf("the Authorizer saw %+v", sub)
	}
	if _, err := DialWebSocket(context.Background(), wsURL(ln, "wss"), clientTLS(t, p, "", ""), nil); err == nil {
		t.Fatal("a client without a certificate upgraded")
	}
}
