package listener

import (
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
)

func dialTCP(t testing.TB, ln *Listener) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// A listener that requires credentials refuses a CONNECT without any:
// CONNACK 0x87 Not authorized in 5.0, return code 5 in 3.1.1. A username,
// or a password alone (5.0), goes on to the Authenticator.
func TestAnonymousDenied(t *testing.T) {
	rec := &recorder{}
	ln, _ := serve(t, Config{Type: TCP, Anonymous: AnonymousDeny}, nil, broker.Options{Auth: rec})
	if _, ca, err := connect5(t, dialTCP(t, ln), "anon5", ""); err == nil || ca == nil || ca.ReasonCode != byte(packet.NotAuthorized) {
		t.Fatalf("5.0 anonymous: %+v, %v", ca, err)
	}
	if code, err := connect311(t, dialTCP(t, ln), "anon3", ""); err != nil || code != packet.V3NotAuthorized {
		t.Fatalf("3.1.1 anonymous: return code %d, %v", code, err)
	}
	if _, asked := rec.lastAuth(); asked {
		t.Fatal("the Authenticator was asked about an anonymous client")
	}
	if code, err := connect311(t, dialTCP(t, ln), "named3", "someone"); err != nil || code != packet.V3Accepted {
		t.Fatalf("3.1.1 with a username: return code %d, %v", code, err)
	}
	mustConnect5(t, dialTCP(t, ln), "named5", "someone")
	if a, _ := rec.lastAuth(); a.Username != "someone" {
		t.Fatalf("the Authenticator saw %+v", a)
	}
}

// allow admits anonymous clients; loopback admits them from loopback
// addresses (every test client is on 127.0.0.1; remote addresses are
// covered through PROXY headers in TestProxyProtocolAnonymousLoopback).
func TestAnonymousAllowedAndLoopback(t *testing.T) {
	for _, a := range []Anonymous{AnonymousAllow, AnonymousLoopback} {
		t.Run(a.String(), func(t *testing.T) {
			ln, _ := serve(t, Config{Type: TCP, Anonymous: a}, nil, broker.Options{})
			mustConnect5(t, dialTCP(t, ln), "anon", "").pubSub(t, "anon/x", []byte("x"))
			if code, err := connect311(t, dialTCP(t, ln), "anon3", ""); err != nil || code != packet.V3Accepted {
				t.Fatalf("3.1.1: return code %d, %v", code, err)
			}
		})
	}
}

func TestIsLoopbackAddress(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:1883": true, "localhost:1883": true, "[::1]:1883": true, "127.1.2.3:0": true,
		":1883": false, "0.0.0.0:1883": false, "[::]:1883": false, "10.0.0.1:1883": false, "example.com:1883": false,
	} {
		if got := IsLoopbackAddress(addr); got != want {
			t.Errorf("IsLoopbackAddress(%q) = %v", addr, got)
		}
	}
}

// Validate names the bad setting.
func TestConfigValidate(t *testing.T) {
	p := newPKI(t, "ca")
	cert, key := p.issue(t, "server", "s", true, nil)
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Type: "udp", Address: ":1", HandshakeTimeout: time.Second}, `type: "udp"`},
		{Config{Type: TCP, Address: "nowhere", HandshakeTimeout: time.Second}, `address: "nowhere"`},
		{Config{Type: TLS, Address: ":1", HandshakeTimeout: time.Second}, "tls: required by a tls listener"},
		{Config{Type: WS, Address: ":1", HandshakeTimeout: time.Second, TLS: &TLSConfig{}}, "tls: only for tls and wss listeners"},
		{Config{Type: WS, Address: ":1", HandshakeTimeout: time.Second, Path: "mqtt", MaxMessageSize: 1024}, `path: "mqtt"`},
		{Config{Type: TLS, Address: ":1", HandshakeTimeout: time.Second, TLS: &TLSConfig{CertFile: cert, KeyFile: cert}}, "tls.cert_file: with key_file:"},
		{Config{Type: TLS, Address: ":1", HandshakeTimeout: time.Second, TLS: &TLSConfig{CertFile: cert, KeyFile: key, ClientAuth: ClientAuthRequired}}, "tls.client_ca_file: required by client_auth required"},
		{Config{Type: TLS, Address: ":1", HandshakeTimeout: time.Second, TLS: &TLSConfig{CertFile: cert, KeyFile: key, ClientCAFile: key, ClientAuth: ClientAuthOptional}}, "tls.client_ca_file: no PEM certificate"},
		{Config{Type: TLS, Address: ":1", HandshakeTimeout: time.Second, TLS: &TLSConfig{CertFile: cert, KeyFile: key, Identity: IdentityCNAsUsername}}, "tls.identity: cn_as_username needs client_auth"},
		{Config{Type: TCP, Address: ":1"}, "handshake timeout"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
		if _, lerr := Listen(tc.cfg); lerr == nil {
			t.Errorf("%+v: Listen accepted it", tc.cfg)
		}
	}
	ok := Config{Type: TLS, Address: "127.0.0.1:0", HandshakeTimeout: time.Second, TLS: &TLSConfig{CertFile: cert, KeyFile: key}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}

// Close ends Accept with net.ErrClosed for every transport, and closes the
// connections still sending their PROXY header.
func TestClose(t *testing.T) {
	p := newPKI(t, "ca")
	for _, typ := range []Type{TCP, TLS, WS, WSS} {
		for _, proxy := range []bool{false, true} {
			cfg := DefaultConfig()
			cfg.Type, cfg.Address, cfg.ProxyProtocol = typ, "127.0.0.1:0", proxy
			if typ == TLS || typ == WSS {
				cfg.TLS = tlsListener(t, p, ClientAuthNone, IdentityNone).TLS
			}
			ln, err := Listen(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var pending net.Conn
			if proxy {
				// A connection that never sends its header: Accept does
				// not return it.
				if pending, err = net.Dial("tcp", ln.Addr().String()); err != nil {
					t.Fatal(err)
				}
				defer pending.Close()
			}
			accepted := make(chan error, 1)
			go func() {
				_, err := ln.Accept()
				accepted <- err
			}()
			if proxy {
				// Wait until the listener reads the header, then close.
				eventually(t, 5*time.Second, func() error {
					if len(ln.inner.(*proxyListener).pending) == 0 {
						return errors.New("header not being read yet")
					}
					return nil
				})
			}
			ln.Close()
			select {
			case err := <-accepted:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("%s proxy %v: Accept after Close: %v", typ, proxy, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s proxy %v: Accept still waiting after Close", typ, proxy)
			}
			if proxy {
				pending.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := pending.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("%s: a connection sending its PROXY header stayed open after Close: %v", typ, err)
				}
			}
		}
	}
}
