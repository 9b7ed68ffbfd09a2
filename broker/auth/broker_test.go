package auth

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/golang-jwt/jwt/v5"
)

// newTestAuth writes a password file of alice (a-pass) and bob (b-pass),
// and acl when not empty, and builds an Auth over them that polls every 5 ms.
func newTestAuth(t *testing.T, acl string, modify ...func(*Config)) (*Auth, string) {
	t.Helper()
	dir := t.TempDir()
	pw := fmt.Sprintf("alice:%s\nbob:%s\n", cheapHash(t, "a-pass"), cheapHash(t, "b-pass"))
	cfg := Config{PasswordFile: writeFile(t, dir, "passwd", []byte(pw)), ReloadInterval: 5 * time.Millisecond}
	if acl != "" {
		cfg.ACLFile = writeFile(t, dir, "acl", []byte(acl))
	}
	for _, f := range modify {
		f(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a, dir
}

// What real clients see when they connect: CONNACK 0x86 Bad user name or
// password / 3.1.1 return code 4 for wrong credentials, 0x87 Not
// authorized / return code 5 for an anonymous client or a will topic the
// ACL refuses (5.0 [MQTT-3.1.4-2]: a server that refuses a CONNECT may send a
// CONNACK with a code of 0x80 or above, then closes the connection).
func TestConnectCredentials(t *testing.T) {
	a, _ := newTestAuth(t, "user alice\nallow readwrite alice/#\n")
	addr := startBroker(t, a)
	will := func(topic string) func(*paho.Connect) {
		return func(cp *paho.Connect) { cp.WillMessage = &paho.WillMessage{Topic: topic, Payload: []byte("bye")} }
	}
	for _, tc := range []struct {
		name, user, password string
		will                 string
		v5                   byte
		v3                   error
	}{
		{"good password", "alice", "a-pass", "", 0x00, nil},
		{"will topic allowed", "alice", "a-pass", "alice/status", 0x00, nil},
		{"wrong password", "alice", "b-pass", "", 0x86, packets.ErrorRefusedBadUsernameOrPassword},
		{"unknown user", "mallory", "a-pass", "", 0x86, packets.ErrorRefusedBadUsernameOrPassword},
		{"user name without password", "alice", "", "", 0x86, packets.ErrorRefusedBadUsernameOrPassword},
		{"anonymous", "", "", "", 0x87, packets.ErrorRefusedNotAuthorised},
		{"will topic refused", "alice", "a-pass", "bob/status", 0x87, packets.ErrorRefusedNotAuthorised},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mods []func(*paho.Connect)
			if tc.will != "" {
				mods = append(mods, will(tc.will))
			}
			_, ca, err := dialV5(t, addr, "c5", tc.user, tc.password, mods...)
			if ca == nil {
				t.Fatalf("5.0: no CONNACK: %v", err)
			}
			if ca.ReasonCode != tc.v5 {
				t.Errorf("5.0: CONNACK %#x, want %#x", ca.ReasonCode, tc.v5)
			}
			if tc.will != "" {
				return // paho.mqtt.golang's will is tested elsewhere; the ACL check is the same
			}
			_, _, err = dialV3(t, addr, "c3", tc.user, tc.password)
			if !errors.Is(err, tc.v3) || (tc.v3 == nil) != (err == nil) {
				t.Errorf("3.1.1: connect error %v, want %v", err, tc.v3)
			}
		})
	}
}

// AllowAnonymous admits clients without credentials, and only those: a
// wrong password is still refused.
func TestAnonymousAllowed(t *testing.T) {
	a, _ := newTestAuth(t, "", func(c *Config) { c.AllowAnonymous = true })
	addr := startBroker(t, a)
	mustV5(t, addr, "anon", "", "")
	if _, ca, _ := dialV5(t, addr, "bad", "alice", "wrong"); ca == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("wrong password with anonymous access on: %+v", ca)
	}
	if _, _, err := dialV3(t, addr, "anon3", "", ""); err != nil {
		t.Fatalf("3.1.1 anonymous: %v", err)
	}
}

// An edit of the ACL file applies to the next SUBSCRIBE of a connected
// client, without a restart.
func TestReloadOverBroker(t *testing.T) {
	a, dir := newTestAuth(t, "user alice\nallow read a/#\n")
	addr := startBroker(t, a)
	c := mustV5(t, addr, "alice", "alice", "a-pass")
	if got := c.subscribe(t, "a/x", "b/x"); got[0] != 1 || got[1] != subackRefusedV5 {
		t.Fatalf("before the edit: SUBACK %#v", got)
	}
	writeFile(t, dir, "acl", []byte("user alice\nallow read b/#\n"))
	eventually(t, 5*time.Second, func() error {
		if got := c.subscribe(t, "b/y"); got[0] != 1 {
			return fmt.Errorf("SUBACK %#x after the edit", got[0])
		}
		return nil
	})
	if got := c.subscribe(t, "a/y"); got[0] != subackRefusedV5 {
		t.Fatalf("a/y still allowed after the edit: %#x", got[0])
	}
	if c.publish(t, "b/y", "now readable", false) != 0x87 {
		t.Fatal("read does not grant publish")
	}
}

// A token that expires while the client is connected ends the
// connection: the 5.0 client gets DISCONNECT 0xA0 (Maximum connect time),
// the connection closes, and its will is published.
func TestJWTExpiresMidConnection(t *testing.T) {
	k := keysOnce()
	a, _ := newTestAuth(t, "", func(c *Config) {
		c.JWT = &JWTConfig{SecretFile: writeFile(t, t.TempDir(), "secret", k.secret)}
	})
	addr := startBroker(t, a)
	watcher := mustV5(t, addr, "watcher", "bob", "b-pass")
	watcher.subscribe(t, "will/#")

	exp := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second) // 2–3 s ahead, in whole seconds
	tok := token(t, jwt.SigningMethodHS256, k.secret, "", jwt.MapClaims{"sub": "device-7", "exp": exp.Unix()})
	c := mustV5(t, addr, "device-7", "", tok, func(cp *paho.Connect) {
		cp.WillMessage = &paho.WillMessage{Topic: "will/device-7", Payload: []byte("lost"), QoS: 1}
	})
	if c.publish(t, "data/device-7", "while valid", false) != 0 {
		t.Fatal("publish refused while the token is valid")
	}
	select {
	case d := <-c.disconnects:
		if d.ReasonCode != 0xA0 {
			t.Fatalf("DISCONNECT %#x, want 0xA0", d.ReasonCode)
		}
		if early := time.Until(exp); early > 50*time.Millisecond {
			t.Fatalf("disconnected %v before the token's exp", early)
		}
	case <-time.After(time.Until(exp) + 5*time.Second):
		t.Fatal("no DISCONNECT after the token expired")
	}
	// The will goes out once the server has ended the connection.
	m := watcher.next(5 * time.Second)
	if m == nil || m.Topic != "will/device-7" || !strings.EqualFold(string(m.Payload), "lost") {
		t.Fatalf("will not published: %v", m)
	}
	// The same token cannot connect again.
	if _, ca, _ := dialV5(t, addr, "device-7", "", tok); ca == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("expired token: CONNACK %+v, want 0x86", ca)
	}
}
