package transport

import (
	"bytes"
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
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

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
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(wait)
		wait = min(wait*2, 50*time.Millisecond)
	}
}

// testConfig is DefaultConfig with short intervals for tests.
func testConfig(id string) Config {
	c := DefaultConfig()
	c.NodeID = id
	c.ListenAddr = "127.0.0.1:0"
	c.HeartbeatInterval = 20 * time.Millisecond
	c.PeerTimeout = time.Second
	c.ReconnectMin = 5 * time.Millisecond
	c.ReconnectMax = 100 * time.Millisecond
	c.DialTimeout = time.Second
	c.CallTimeout = 5 * time.Second
	c.Logger = testLogger()
	return c
}

// testLogger discards, unless TRANSPORT_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("TRANSPORT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// logBuffer is a concurrency-safe buffer for a logger under test.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// node is one Transport under test, serving on a tracked listener.
type node struct {
	*Transport
	addr string
	ln   *trackingListener
	fd   *fakeDeliverer
}

// startNode starts a Transport on 127.0.0.1:0; a nil h.Deliverer gets a
// fakeDeliverer.
func startNode(t testing.TB, cfg Config, h Handlers) *node {
	t.Helper()
	n := &node{}
	if h.Deliverer == nil {
		n.fd = newFakeDeliverer()
		h.Deliverer = n.fd
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.ln = &trackingListener{Listener: ln}
	cfg.Listener = n.ln
	tr, err := New(cfg, h)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	if _, err := tr.Start(); err != nil {
		t.Fatal(err)
	}
	n.Transport, n.addr = tr, ln.Addr().String()
	t.Cleanup(func() { tr.Close() })
	return n
}

// trackingListener remembers the connections it accepted, so a test can
// break them.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

// breakAll closes every connection accepted so far.
func (l *trackingListener) breakAll() {
	l.mu.Lock()
	conns := l.conns
	l.conns = nil
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// fakeDeliverer records what it is given, per sender, in order. hook, if
// set, runs first on every call (with the call number, from 1) and may
// replace the result.
type fakeDeliverer struct {
	mu    sync.Mutex
	calls int
	got   map[string][]*pb.ForwardedMessage
	hook  func(ctx context.Context, call int, msgs []*pb.ForwardedMessage) (deliver bool, err error)
}

func newFakeDeliverer() *fakeDeliverer {
	return &fakeDeliverer{got: map[string][]*pb.ForwardedMessage{}}
}

func (f *fakeDeliverer) DeliverForwarded(ctx context.Context, from string, views []Message) error {
	msgs := make([]*pb.ForwardedMessage, len(views))
	for i := range views {
		msgs[i] = views[i].Proto()
	}
	f.mu.Lock()
	f.calls++
	call, hook := f.calls, f.hook
	f.mu.Unlock()
	deliver, err := true, error(nil)
	if hook != nil {
		deliver, err = hook(ctx, call, msgs)
	}
	if deliver {
		f.mu.Lock()
		f.got[from] = append(f.got[from], msgs...)
		f.mu.Unlock()
	}
	return err
}

func (f *fakeDeliverer) setHook(h func(ctx context.Context, call int, msgs []*pb.ForwardedMessage) (bool, error)) {
	f.mu.Lock()
	f.hook = h
	f.mu.Unlock()
}

func (f *fakeDeliverer) from(id string) []*pb.ForwardedMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*pb.ForwardedMessage(nil), f.got[id]...)
}

func msg(id uint64, payload int) *pb.ForwardedMessage {
	return &pb.ForwardedMessage{
		MsgId:           id,
		Topic:           "bench/topic",
		Payload:         make([]byte, payload),
		Qos:             1,
		OriginClientId:  "publisher",
		OriginNode:      "a",
		ExpiresAtUnixMs: 0,
	}
}

// outcomes collects done results by msg id.
type outcomes struct {
	mu    sync.Mutex
	order []uint64
	errs  map[uint64]error
	at    map[uint64]time.Time
}

func newOutcomes() *outcomes {
	return &outcomes{errs: map[uint64]error{}, at: map[uint64]time.Time{}}
}

func (o *outcomes) done(id uint64) func(error) {
	return func(err error) {
		o.mu.Lock()
		defer o.mu.Unlock()
		if _, dup := o.errs[id]; dup {
			panic(fmt.Sprintf("done called twice for %d", id))
		}
		o.order = append(o.order, id)
		o.errs[id] = err
		o.at[id] = time.Now()
	}
}

func (o *outcomes) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.errs)
}

func (o *outcomes) when(id uint64) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.at[id]
}

func (o *outcomes) get(id uint64) (error, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	err, ok := o.errs[id]
	return err, ok
}

// freeAddr returns an address where nothing listens.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// testCA is a certificate authority made up for a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
	file string // the CA certificate, PEM
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, dir: t.TempDir()}
	ca.file = filepath.Join(ca.dir, "ca.pem")
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue makes a node certificate naming id (CN and DNS SAN) and returns the
// certificate and key files.
func (ca *testCA) issue(t testing.TB, id string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id},
		DNSNames:     []string{id},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = filepath.Join(ca.dir, id+".pem")
	keyFile = filepath.Join(ca.dir, id+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", kder)
	return certFile, keyFile
}

// tlsConfig is testConfig with a certificate for id from ca.
func (ca *testCA) config(t testing.TB, id string) Config {
	c := testConfig(id)
	c.CertFile, c.KeyFile = ca.issue(t, id)
	c.CAFile = ca.file
	return c
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
