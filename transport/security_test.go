package transport

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/mqcluster/mqcluster/proto/mqcluster/v1"
)

func TestOversizedRefused(t *testing.T) {
	f := &fakeCluster{}
	cfgB := testConfig("b")
	cfgB.MaxMsgSize = 64 << 10
	cfgB.MaxBatchBytes = 32 << 10
	b := startNode(t, cfgB, clusterHandlers(f))
	cfgA := testConfig("a")
	cfgA.AckTimeout = time.Second
	cfgA.MaxAttempts = 2
	a := startNode(t, cfgA, Handlers{}) // 4 MiB: sends what b refuses
	ctx := context.Background()

	// The server refuses a message over its limit.
	if _, err := a.Propose(ctx, b.addr, make([]byte, 100<<10)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("100 KiB command to a 64 KiB server: %v", err)
	}
	// The client refuses to send one over its own.
	if _, err := b.Propose(ctx, a.addr, make([]byte, 100<<10)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("100 KiB command from a 64 KiB client: %v", err)
	}
	// A forwarded batch over the receiver's limit: the stream is refused,
	// the message given up after MaxAttempts, nothing delivered.
	a.SetPeer("b", b.addr)
	o := newOutcomes()
	a.Send("b", msg(1, 100<<10), o.done(1))
	eventually(t, 5*time.Second, func() error {
		if o.count() != 1 {
			return errors.New("not done")
		}
		return nil
	})
	if err, _ := o.get(1); !errors.Is(err, ErrUnacknowledged) {
		t.Fatalf("oversized forward: %v", err)
	}
	if got := b.fd.from("a"); len(got) != 0 {
		t.Fatalf("delivered %d oversized", len(got))
	}
	// Both go on working.
	if _, err := a.Propose(ctx, b.addr, []byte("small")); err != nil {
		t.Fatal(err)
	}
	a.Send("b", msg(2, 8), o.done(2))
	eventually(t, 5*time.Second, func() error {
		if o.count() != 2 {
			return errors.New("not done")
		}
		return nil
	})
	if err, _ := o.get(2); err != nil {
		t.Fatal(err)
	}
}

func TestNonMemberRefused(t *testing.T) {
	f := &fakeCluster{}
	h := clusterHandlers(f)
	h.AllowPeer = func(id string) bool { return id == "a" }
	b := startNode(t, testConfig("b"), h)
	a := startNode(t, testConfig("a"), Handlers{})
	cfgM := testConfig("mallory")
	cfgM.AckTimeout = 300 * time.Millisecond
	m := startNode(t, cfgM, Handlers{})
	ctx := context.Background()

	if _, err := m.Propose(ctx, b.addr, []byte("x")); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("propose by a non-member: %v", err)
	}
	if _, err := m.Status(ctx, b.addr); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("status by a non-member: %v", err)
	}
	if _, err := m.TakeOver(ctx, b.addr, &pb.TakeOverRequest{ClientId: "here", NewOwner: "mallory"}); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("takeover by a non-member: %v", err)
	}
	m.SetPeer("b", b.addr)
	o := newOutcomes()
	m.Send("b", msg(1, 8), o.done(1))
	eventually(t, 5*time.Second, func() error {
		if o.count() != 1 {
			return errors.New("not done")
		}
		return nil
	})
	if err, _ := o.get(1); !errors.Is(err, ErrUnacknowledged) {
		t.Fatalf("forward by a non-member: %v", err)
	}
	if callers, _, _, _ := f.seen(); len(callers) != 0 {
		t.Fatalf("handlers called by %v", callers)
	}
	if got := b.fd.from("mallory"); len(got) != 0 {
		t.Fatalf("delivered %d from a non-member", len(got))
	}

	// No node id, or two: refused.
	cc, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for _, md := range []metadata.MD{nil, metadata.Pairs(mdNodeID, "a", mdNodeID, "a"), metadata.Pairs(mdNodeID, "")} {
		_, err := pb.NewClusterClient(cc).Status(metadata.NewOutgoingContext(ctx, md), &pb.StatusRequest{})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("metadata %v: %v", md, err)
		}
	}
	// The member is served.
	if _, err := a.Status(ctx, b.addr); err != nil {
		t.Fatal(err)
	}
	if n := b.Stats().Refused; n < 7 {
		t.Fatalf("%d refusals counted, want at least 7", n)
	}
}

// rawTLS dials addr with cert (may be nil) trusting the CA in caFile, as
// node id.
func rawTLS(t *testing.T, addr, caFile string, cert *tls.Certificate) *grpc.ClientConn {
	t.Helper()
	ca, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	cfg := &tls.Config{RootCAs: pool, ServerName: "b", MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	f := &fakeCluster{}
	b := startNode(t, ca.config(t, "b"), clusterHandlers(f))
	a := startNode(t, ca.config(t, "a"), Handlers{})
	ctx := context.Background()

	// Members with certificates of the cluster CA: calls and forwarding.
	if _, err := a.Propose(ctx, b.addr, []byte("one")); err != nil {
		t.Fatal(err)
	}
	a.SetPeer("b", b.addr)
	o := newOutcomes()
	for i := uint64(1); i <= 100; i++ {
		a.Send("b", msg(i, 64), o.done(i))
	}
	eventually(t, 5*time.Second, func() error {
		if o.count() != 100 {
			return fmt.Errorf("%d of 100 done", o.count())
		}
		return nil
	})
	if err := checkDelivered(b.fd.from("a"), 100); err != nil {
		t.Fatal(err)
	}

	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		t.Cleanup(cancel)
		return c
	}
	status_ := func(cc *grpc.ClientConn, id string) error {
		_, err := pb.NewClusterClient(cc).Status(metadata.AppendToOutgoingContext(short(), mdNodeID, id), &pb.StatusRequest{})
		return err
	}
	// A client certificate from another CA: the handshake fails.
	other := newTestCA(t, "other CA")
	certFile, keyFile := other.issue(t, "a")
	untrusted, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := status_(rawTLS(t, b.addr, ca.file, &untrusted), "a"); status.Code(err) != codes.Unavailable {
		t.Fatalf("untrusted client certificate: %v", err)
	}
	// No client certificate: the same.
	if err := status_(rawTLS(t, b.addr, ca.file, nil), "a"); status.Code(err) != codes.Unavailable {
		t.Fatalf("no client certificate: %v", err)
	}
	// Plain text to a TLS server.
	plain, err := grpc.NewClient(b.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := status_(plain, "a"); status.Code(err) != codes.Unavailable {
		t.Fatalf("plain text: %v", err)
	}
	// A good certificate for c, claiming to be a: refused.
	certFile, keyFile = ca.issue(t, "c")
	cCert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cc := rawTLS(t, b.addr, ca.file, &cCert)
	if err := status_(cc, "a"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("certificate of c claiming a: %v", err)
	}
	if err := status_(cc, "c"); err != nil {
		t.Fatalf("c as itself: %v", err)
	}

	// The client side checks the server: b's address given for node c.
	cfgC := ca.config(t, "c")
	cfgC.AckTimeout = 300 * time.Millisecond
	c := startNode(t, cfgC, Handlers{})
	c.SetPeer("d", b.addr)
	o2 := newOutcomes()
	c.Send("d", msg(1, 8), o2.done(1))
	eventually(t, 5*time.Second, func() error {
		if o2.count() != 1 {
			return errors.New("not done")
		}
		return nil
	})
	if err, _ := o2.get(1); !errors.Is(err, ErrUnacknowledged) {
		t.Fatalf("forward to the wrong server: %v", err)
	}
	if got := b.fd.from("c"); len(got) != 0 {
		t.Fatalf("b got %d messages meant for d", len(got))
	}

	// The legitimate client still works.
	if _, err := a.Propose(ctx, b.addr, []byte("two")); err != nil {
		t.Fatal(err)
	}
}

func TestTLSConfigRefused(t *testing.T) {
	ca := newTestCA(t, "cluster CA")
	cfg := ca.config(t, "b")
	cfg.NodeID = "a" // the certificate names b
	if _, err := New(cfg, Handlers{}); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "not the node id") {
		t.Fatalf("certificate of another node: %v", err)
	}
	cfg = ca.config(t, "a")
	cfg.CAFile = cfg.CertFile + ".missing"
	if _, err := New(cfg, Handlers{}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("missing CA: %v", err)
	}
	cfg = ca.config(t, "a")
	cfg.KeyFile = ""
	if _, err := New(cfg, Handlers{}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("no key: %v", err)
	}
}

// TestGarbageOnPort: junk on the cluster port (BAD-INPUT row 27) closes
// those connections only; the server and its clients carry on.
func TestGarbageOnPort(t *testing.T) {
	f := &fakeCluster{}
	cfg := testConfig("b")
	cfg.DialTimeout = 200 * time.Millisecond // the handshake deadline of the server too
	b := startNode(t, cfg, clusterHandlers(f))
	a := startNode(t, testConfig("a"), Handlers{})
	a.SetPeer("b", b.addr)

	junk := make([]byte, 64<<10)
	rand.Read(junk)
	frameHeader := []byte{0xff, 0xff, 0xff, 0x0, 0x0, 0x0, 0x0, 0x0, 0x1} // 16 MiB DATA on stream 1
	for name, payload := range map[string][]byte{
		"random bytes":          junk,
		"preface then junk":     append([]byte(http2.ClientPreface), junk...),
		"preface, 16 MiB frame": append([]byte(http2.ClientPreface), frameHeader...),
		"HTTP/1.1":              []byte("GET / HTTP/1.1\r\nHost: b\r\n\r\n"),
		"TLS hello to plain":    {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03},
		"nothing":               nil,
	} {
		conn, err := net.Dial("tcp", b.addr)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write(payload)
		// The server closes the connection (at the latest at its
		// handshake deadline): reading ends.
		if _, err := io.Copy(io.Discard, conn); err != nil && !isClosed(err) {
			t.Fatalf("%s: the server did not close the connection: %v", name, err)
		}
		conn.Close()
	}
	// The server works for members.
	if _, err := a.Propose(context.Background(), b.addr, []byte("x")); err != nil {
		t.Fatal(err)
	}
	o := newOutcomes()
	a.Send("b", msg(1, 8), o.done(1))
	eventually(t, 5*time.Second, func() error {
		if o.count() != 1 {
			return errors.New("not done")
		}
		return nil
	})
	if err, _ := o.get(1); err != nil {
		t.Fatal(err)
	}
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "connection reset")
}

// TestRapidReset: a client that opens and cancels streams as fast as it can
// (HTTP/2 rapid reset, CVE-2023-44487) does not take the server down.
func TestRapidReset(t *testing.T) {
	f := &fakeCluster{}
	b := startNode(t, testConfig("b"), clusterHandlers(f))
	a := startNode(t, testConfig("a"), Handlers{})

	conn, err := net.Dial("tcp", b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		io.Copy(io.Discard, conn)
	}()
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hdr strings.Builder
	enc := hpack.NewEncoder(&hdr)
	for _, kv := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", pb.Cluster_Status_FullMethodName},
		{":authority", b.addr}, {"content-type", "application/grpc"}, {"te", "trailers"},
		{mdNodeID, "a"},
	} {
		enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	block := []byte(hdr.String())
	sent := 0
	for id := uint32(1); id < 2*5000; id += 2 {
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true}); err != nil {
			break // the server may cut us off: fine
		}
		if err := fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
			break
		}
		sent++
	}
	conn.Close()
	<-readDone
	if sent < 100 {
		t.Fatalf("only %d streams sent: the test checks little", sent)
	}
	// The server works.
	for range 3 {
		if _, err := a.Status(context.Background(), b.addr); err != nil {
			t.Fatal(err)
		}
	}
}
