package broker

import (
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// expiringAuth admits every CONNECT; a client id starting with "expiring"
// gets credentials valid for connect, and a re-authentication of the
// method "renew" credentials valid for reauth from then on.
type expiringAuth struct {
	connect, reauth time.Duration
}

func (a *expiringAuth) Authenticate(req *AuthRequest) AuthResult {
	var d time.Duration
	switch {
	case req.Method == "renew" && req.Data != nil:
		d = a.reauth
	case strings.HasPrefix(req.ClientID, "expiring"):
		d = a.connect
	}
	if d == 0 {
		return AuthResult{Code: packet.Success}
	}
	return AuthResult{Code: packet.Success, Expiry: time.Now().Add(d)}
}

func withAuth(a Authenticator) func(*Options) { return func(o *Options) { o.Auth = a } }

func withWill(topic string) func(*packet.Connect) {
	return func(cp *packet.Connect) { cp.Will = &packet.Will{Topic: topic, Payload: []byte("gone"), QoS: 1} }
}

// When the credentials expire the connection ends: a 5.0 client gets
// DISCONNECT 0xA0 (Maximum connect time) and the socket closes, a 3.1.1
// client is closed; both wills are published, as after any close the
// client did not ask for ([MQTT-3.1.2-8]).
func TestCredentialExpiryEndsConnection(t *testing.T) {
	const valid = 700 * time.Millisecond
	s := startServer(t, nil, withAuth(&expiringAuth{connect: valid}))
	watcher := dialV5(t, s.addr, "watcher")
	watcher.subscribe(t, paho.SubscribeOptions{Topic: "will/#", QoS: 1})

	for _, v := range []packet.Version{packet.V5, packet.V311} {
		t.Run(v.String(), func(t *testing.T) {
			start := time.Now()
			r := dialRaw(t, s.addr)
			r.connect(v, "expiring-"+v.String(), withWill("will/"+v.String()))
			got := r.expectClosed(valid + 5*time.Second)
			if elapsed := time.Since(start); elapsed < valid {
				t.Fatalf("closed after %v, before the credentials expired (%v)", elapsed, valid)
			}
			switch {
			case v == packet.V5 && len(got) != 1:
				t.Fatalf("5.0: want one DISCONNECT before the close, got %v", got)
			case v == packet.V5:
				d, ok := got[0].(*packet.Disconnect)
				if !ok || d.ReasonCode != packet.MaximumConnectTime {
					t.Fatalf("5.0: want DISCONNECT 0xA0, got %#v", got[0])
				}
			case len(got) != 0:
				t.Fatalf("3.1.1: want a plain close, got %v", got)
			}
			if m := watcher.expect(t); m.Topic != "will/"+v.String() {
				t.Fatalf("will: got %q", m.Topic)
			}
		})
	}
}

// A successful re-authentication replaces the deadline: the connection
// outlives the first credentials and ends when the renewed ones expire.
func TestReauthenticationMovesCredentialExpiry(t *testing.T) {
	const first, renewed = 400 * time.Millisecond, 1500 * time.Millisecond
	s := startServer(t, nil, withAuth(&expiringAuth{connect: first, reauth: renewed}))
	r := dialRaw(t, s.addr)
	start := time.Now()
	r.connect(packet.V5, "expiring-renewed", func(cp *packet.Connect) {
		cp.Properties.AuthMethod = "renew"
		cp.Properties.Set(packet.PropAuthMethod)
	})
	auth := &packet.Auth{ReasonCode: packet.ReAuthenticate}
	auth.Properties.AuthMethod = "renew"
	auth.Properties.AuthData = []byte("fresh")
	auth.Properties.Set(packet.PropAuthMethod)
	auth.Properties.Set(packet.PropAuthData)
	r.send(auth)
	renewedAt := time.Now()
	if a, ok := r.read().(*packet.Auth); !ok || a.ReasonCode != packet.Success {
		t.Fatalf("re-authentication: got %#v", a)
	}
	got := r.expectClosed(renewed + 5*time.Second)
	if elapsed := time.Since(renewedAt); elapsed < renewed {
		t.Fatalf("closed %v after the renewal (%v after the connect): the renewed credentials were valid for %v",
			elapsed, time.Since(start), renewed)
	}
	if len(got) != 1 {
		t.Fatalf("want one DISCONNECT, got %v", got)
	}
	if d, ok := got[0].(*packet.Disconnect); !ok || d.ReasonCode != packet.MaximumConnectTime {
		t.Fatalf("want DISCONNECT 0xA0, got %#v", got[0])
	}
}

// Credentials without an expiry arm no timer: the connection carries none.
func TestNoCredentialExpiryNoTimer(t *testing.T) {
	s := startServer(t, nil, withAuth(&expiringAuth{}))
	c := dialV5(t, s.addr, "forever")
	c.subscribe(t, paho.SubscribeOptions{Topic: "x", QoS: 0}) // the connection is established
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for cn := range s.conns {
		n++
		if cn.authTimer != nil {
			t.Fatalf("connection %q holds a credential timer without an expiry", cn.clientID)
		}
	}
	if n == 0 {
		t.Fatal("no connection registered")
	}
}
