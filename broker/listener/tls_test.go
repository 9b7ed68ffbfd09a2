package listener

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker"
)

// tlsListener is a TLS listener config with a server certificate of p.
func tlsListener(t testing.TB, p *pki, auth ClientAuth, identity Identity) Config {
	cert, key := p.issue(t, "server", "mqcluster test server", true, nil)
	tc := &TLSConfig{CertFile: cert, KeyFile: key, ClientAuth: auth, Identity: identity}
	if auth != ClientAuthNone {
		tc.ClientCAFile = p.caFile
	}
	return Config{Type: TLS, TLS: tc}
}

// clientTLS is the configuration of a client that trusts p and presents
// the certificate in certFile/keyFile when given.
func clientTLS(t testing.TB, p *pki, certFile, keyFile string) *tls.Config {
	t.Helper()
	tc := &tls.Config{RootCAs: p.pool()}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return tc
}

// Both TLS 1.2 and 1.3 carry MQTT; a listener at min_version 1.3 refuses a
// client that can only speak 1.2.
func TestTLSVersions(t *testing.T) {
	p := newPKI(t, "ca")
	ln, _ := serve(t, tlsListener(t, p, ClientAuthNone, IdentityNone), nil, broker.Options{})
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			tc := clientTLS(t, p, "", "")
			tc.MinVersion, tc.MaxVersion = v, v
			nc, err := tls.Dial("tcp", ln.Addr().String(), tc)
			if err != nil {
				t.Fatal(err)
			}
			if got := nc.ConnectionState().Version; got != v {
				t.Fatalf("negotiated %s", tls.VersionName(got))
			}
			mustConnect5(t, nc, "tls-"+tls.VersionName(v), "").pubSub(t, "tls/v", []byte("over tls"))
		})
	}

	cfg := tlsListener(t, p, ClientAuthNone, IdentityNone)
	cfg.TLS.MinVersion = tls.VersionTLS13
	ln13, _ := serve(t, cfg, nil, broker.Options{})
	tc := clientTLS(t, p, "", "")
	tc.MaxVersion = tls.VersionTLS12
	if nc, err := tls.Dial("tcp", ln13.Addr().String(), tc); err == nil {
		nc.Close()
		t.Fatal("a TLS 1.2 client got through a min_version 1.3 listener")
	}
}

// With client_auth required, a client with a certificate of another CA,
// or with none, does not get an MQTT session; one the CA signed does.
func TestTLSClientCertRequired(t *testing.T) {
	p := newPKI(t, "ca")
	other := newPKI(t, "other")
	ln, _ := serve(t, tlsListener(t, p, ClientAuthRequired, IdentityNone), nil, broker.Options{})
	good, goodKey := p.issue(t, "good", "good", false, nil)
	bad, badKey := other.issue(t, "bad", "bad", false, nil)

	for _, tc := range []struct {
		name      string
		cert, key string
	}{{"untrusted CA", bad, badKey}, {"no certificate", "", ""}} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := tls.Dial("tcp", ln.Addr().String(), clientTLS(t, p, tc.cert, tc.key))
			if err != nil {
				return // refused in the handshake (TLS 1.2)
			}
			defer nc.Close()
			// TLS 1.3: the client's side of the handshake ends before
			// the server has checked the certificate; the server's
			// alert comes with the first read.
			if _, ca, err := connect5(t, nc, "rejected", ""); err == nil {
				t.Fatalf("connected: %+v", ca)
			}
		})
	}
	nc, err := tls.Dial("tcp", ln.Addr().String(), clientTLS(t, p, good, goodKey))
	if err != nil {
		t.Fatal(err)
	}
	mustConnect5(t, nc, "trusted", "").pubSub(t, "mtls/ok", []byte("x"))
}

// The names of a verified client certificate become the username (for
// the Authorizer, without asking the Authenticator) or the client id.
func TestTLSIdentity(t *testing.T) {
	p := newPKI(t, "ca")
	for _, tc := range []struct {
		identity     Identity
		cn           string
		mod          func(*x509.Certificate)
		wantUser     string
		wantClientID string
	}{
		{IdentityCNAsUsername, "alice", nil, "alice", "c1"},
		{IdentitySANAsUsername, "ignored", func(c *x509.Certificate) { c.DNSNames = []string{"dev1.example.com"} }, "dev1.example.com", "c1"},
		{IdentitySANAsUsername, "ignored", func(c *x509.Certificate) { c.EmailAddresses = []string{"bob@example.com"} }, "bob@example.com", "c1"},
		{IdentitySANAsUsername, "ignored", func(c *x509.Certificate) { c.URIs = []*url.URL{mustParseURL(t, "spiffe://example.org/sensor")} }, "spiffe://example.org/sensor", "c1"},
		{IdentityCNAsClientID, "sensor-42", nil, "mallory", "sensor-42"},
	} {
		t.Run(fmt.Sprintf("%s/%s", tc.identity, tc.wantUser), func(t *testing.T) {
			rec := &recorder{}
			ln, _ := serve(t, tlsListener(t, p, ClientAuthRequired, tc.identity), nil, broker.Options{Auth: rec, ACL: rec})
			cert, key := p.issue(t, "client", tc.cn, false, tc.mod)
			nc, err := tls.Dial("tcp", ln.Addr().String(), clientTLS(t, p, cert, key))
			if err != nil {
				t.Fatal(err)
			}
			// The client claims another username: the certificate wins.
			mustConnect5(t, nc, "c1", "mallory").pubSub(t, "id/x", []byte("x"))
			sub, ok := rec.lastSub()
			if !ok || sub.Username != tc.wantUser || sub.ClientID != tc.wantClientID {
				t.Fatalf("the Authorizer saw %+v, want username %q client id %q", sub, tc.wantUser, tc.wantClientID)
			}
			auth, asked := rec.lastAuth()
			if tc.identity == IdentityCNAsClientID {
				if !asked || auth.ClientID != tc.wantClientID || auth.Username != "mallory" {
					t.Fatalf("the Authenticator saw %+v (asked %v)", auth, asked)
				}
			} else if asked {
				t.Fatalf("the Authenticator was asked about a certificate identity: %+v", auth)
			}
		})
	}
}

// Replacing the certificate files reaches new connections without a
// restart; a pair that does not load is refused and the last good one kept.
func TestTLSCertificateReload(t *testing.T) {
	p := newPKI(t, "ca")
	cfg := tlsListener(t, p, ClientAuthNone, IdentityNone)
	p.issue(t, "server", "first", true, nil)
	ln, _ := serve(t, cfg, nil, broker.Options{})
	served := func() (string, error) {
		nc, err := tls.Dial("tcp", ln.Addr().String(), clientTLS(t, p, "", ""))
		if err != nil {
			return "", err
		}
		defer nc.Close()
		return nc.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
	}
	if cn, err := served(); err != nil || cn != "first" {
		t.Fatalf("served %q, %v", cn, err)
	}
	// Rewritten in place, as cert-manager or certbot do.
	p.issue(t, "server", "second", true, nil)
	eventually(t, 5*time.Second, func() error {
		cn, err := served()
		if err == nil && cn != "second" {
			err = fmt.Errorf("still serving %q", cn)
		}
		return err
	})

	// A broken key: Reload (SIGHUP) keeps "second".
	if err := os.WriteFile(cfg.TLS.KeyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln.Reload()
	if cn, err := served(); err != nil || cn != "second" {
		t.Fatalf("after a failed reload: served %q, %v", cn, err)
	}
	// And the next good pair is taken at once on Reload.
	p.issue(t, "server", "third", true, nil)
	ln.Reload()
	if cn, err := served(); err != nil || cn != "third" {
		t.Fatalf("after Reload: served %q, %v", cn, err)
	}
}

// A client that opens a TCP connection to a TLS listener and sends
// nothing holds up nobody: the handshake runs in its connection's goroutine
// and the CONNECT deadline closes it.
func TestTLSSlowHandshakeDoesNotBlockAccept(t *testing.T) {
	p := newPKI(t, "ca")
	bc := broker.DefaultConfig()
	bc.ConnectTimeout = 300 * time.Millisecond
	ln, _ := serve(t, tlsListener(t, p, ClientAuthNone, IdentityNone), &bc, broker.Options{})
	var stalled []net.Conn
	for range 5 {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		stalled = append(stalled, nc)
	}
	nc, err := tls.Dial("tcp", ln.Addr().String(), clientTLS(t, p, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	mustConnect5(t, nc, "fast", "").pubSub(t, "slow/x", []byte("x"))
	for _, s := range stalled {
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		var b [1]byte
		if _, err := s.Read(b[:]); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a silent connection was not closed at the CONNECT deadline: %v", err)
		}
	}
}
