package listener

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
)

// serve runs a broker with bcfg (the default when nil) and opts behind a
// listener of cfg on 127.0.0.1:0 until the test ends.
func serve(t testing.TB, cfg Config, bcfg *broker.Config, opts broker.Options) (*Listener, *broker.Server) {
	t.Helper()
	bc := broker.DefaultConfig()
	if bcfg != nil {
		bc = *bcfg
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	srv, err := broker.New(bc, opts)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1:0"
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = bc.ConnectTimeout
	}
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = bc.MaxPacketSize
	}
	if cfg.Path == "" {
		cfg.Path = "/mqtt"
	}
	cfg.Logger = opts.Logger
	ln, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Close(ctx)
		<-done
	})
	return ln, srv
}

// testLogger logs to the test output when MQCLUSTER_TEST_LOG is set.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("MQCLUSTER_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// eventually retries fn until it returns nil or timeout passes.
func eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true within %v: %v", timeout, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// client is a paho (MQTT 5.0) client whose received messages go to msgs.
type client struct {
	*paho.Client
	msgs chan *paho.Publish
}

// connect5 speaks MQTT 5.0 CONNECT over nc; user "" connects without a
// username. It returns the CONNACK even when it refuses.
func connect5(t testing.TB, nc net.Conn, id, user string) (*client, *paho.Connack, error) {
	t.Helper()
	c := &client{msgs: make(chan *paho.Publish, 100)}
	c.Client = paho.NewClient(paho.ClientConfig{Conn: nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// No keep-alive: paho.golang's pinger can write a PINGREQ between the
	// writes of another packet, which the broker rightly refuses.
	cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 0}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
	}
	ca, err := c.Connect(ctx, cp)
	if err == nil {
		t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	}
	return c, ca, err
}

// mustConnect5 connects and fails the test on a refusal.
func mustConnect5(t testing.TB, nc net.Conn, id, user string) *client {
	t.Helper()
	c, _, err := connect5(t, nc, id, user)
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	return c
}

// pubSub subscribes c to topic, publishes on it from c and waits for the
// message: the connection carries MQTT both ways.
func (c *client) pubSub(t testing.TB, topic string, payload []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	select {
	case m := <-c.msgs:
		if string(m.Payload) != string(payload) {
			t.Fatalf("got %d bytes, want %d", len(m.Payload), len(payload))
		}
	case <-ctx.Done():
		t.Fatal("message not delivered")
	}
}

// connect311 sends a 3.1.1 CONNECT on nc and returns the CONNACK's return
// code.
func connect311(t testing.TB, nc net.Conn, id, user string) (packet.ReasonCode, error) {
	t.Helper()
	cp := &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, CleanStart: true, KeepAlive: 30, ClientID: id}
	if user != "" {
		cp.Username, cp.HasUsername = user, true
	}
	b, err := cp.Append(nil, packet.V311)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	defer nc.SetDeadline(time.Time{})
	if _, err := nc.Write(b); err != nil {
		return 0, err
	}
	pk, err := readPacket(bufio.NewReader(nc), packet.V311)
	if err != nil {
		return 0, err
	}
	ack, ok := pk.(*packet.Connack)
	if !ok {
		return 0, fmt.Errorf("got %v, want CONNACK", pk.Type())
	}
	return ack.ReasonCode, nil
}

// readPacket reads one control packet from r.
func readPacket(r *bufio.Reader, v packet.Version) (packet.Packet, error) {
	hdr := make([]byte, 0, 5)
	for {
		b, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		hdr = append(hdr, b)
		fh, _, err := packet.ParseFixedHeader(hdr, 0)
		if err == packet.ErrNeedMore {
			continue
		}
		if err != nil {
			return nil, err
		}
		body := make([]byte, fh.Remaining)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, err
		}
		return packet.Decode(fh, body, v)
	}
}

// recorder is an Authenticator and Authorizer that admits everyone and
// remembers who asked, as the broker presented them.
type recorder struct {
	mu    sync.Mutex
	auths []broker.ClientInfo // Authenticate calls
	subs  []broker.ClientInfo // CanSubscribe calls
}

func (r *recorder) Authenticate(req *broker.AuthRequest) broker.AuthResult {
	r.mu.Lock()
	r.auths = append(r.auths, req.ClientInfo)
	r.mu.Unlock()
	return broker.AuthResult{Code: packet.Success}
}

func (r *recorder) CanPublish(*broker.ClientInfo, string) bool { return true }
func (r *recorder) CanRead(*broker.ClientInfo, string) bool    { return true }
func (r *recorder) CanSubscribe(c *broker.ClientInfo, _ string) bool {
	r.mu.Lock()
	r.subs = append(r.subs, *c)
	r.mu.Unlock()
	return true
}

func (r *recorder) lastAuth() (broker.ClientInfo, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.auths) == 0 {
		return broker.ClientInfo{}, false
	}
	return r.auths[len(r.auths)-1], true
}

func (r *recorder) lastSub() (broker.ClientInfo, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.subs) == 0 {
		return broker.ClientInfo{}, false
	}
	return r.subs[len(r.subs)-1], true
}

// pki is a test certificate authority in a temporary directory.
type pki struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caFile string
	serial int64
}

func newPKI(t testing.TB, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &pki{dir: t.TempDir(), ca: ca, caKey: key, serial: 1}
	p.caFile = filepath.Join(p.dir, name+"-ca.pem")
	writePEM(t, p.caFile, "CERTIFICATE", der)
	return p
}

// pool is a cert pool holding the CA.
func (p *pki) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return pool
}

// issue writes a certificate signed by the CA and its key under name; a
// server certificate is for 127.0.0.1 and localhost, a client certificate
// carries cn and, when given, the subject alternative names of mod.
func (p *pki) issue(t testing.TB, name, cn string, server bool, mod func(*x509.Certificate)) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	if mod != nil {
		mod(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, name+".pem"), filepath.Join(p.dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// mustParseURL is for SAN URIs.
func mustParseURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
