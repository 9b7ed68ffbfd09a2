package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	"github.com/hashicorp/raft"
)

// clusterCA writes a CA and one certificate per node id (CN and DNS SAN =
// the id, server and client use) into dir; it returns the CA file and, per
// id, the certificate and key files.
func clusterCA(t *testing.T, dir string, ids []string) (caFile string, certs, keys map[string]string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cluster CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile = write("ca.pem", "CERTIFICATE", caDER)
	certs, keys = map[string]string{}, map[string]string{}
	for i, id := range ids {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: id}, DNSNames: []string{id},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(k)
		certs[id] = write(id+".pem", "CERTIFICATE", der)
		keys[id] = write(id+"-key.pem", "EC PRIVATE KEY", kder)
	}
	return caFile, certs, keys
}

// With a cluster CA configured, nodes talk gRPC over mutual TLS: the
// cluster forms, a follower's proposal reaches the leader through the
// transport, and brokers forward messages to each other.
func TestClusterOverMutualTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	ids := []string{"node-0", "node-1", "node-2"}
	caFile, certs, keys := clusterCA(t, t.TempDir(), ids)
	c := &testCluster{t: t, cfgs: make([]Config, 3), nodes: make([]*Node, 3)}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			if nd != nil {
				nd.Close()
			}
		}
	})
	for i, id := range ids {
		cfg := DefaultConfig()
		cfg.NodeID, cfg.DataDir, cfg.BootstrapExpect, cfg.FastGossip = id, t.TempDir(), 3, true
		cfg.ReconcileInterval = 100 * time.Millisecond
		cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSCAFile = certs[id], keys[id], caFile
		if i > 0 {
			cfg.Join = []string{c.nodes[0].GossipAddr()}
		}
		c.cfgs[i] = cfg
		c.start(i)
	}
	c.leader(10 * time.Second)
	c.waitPeers()
	addrs := startBrokers(t, c)
	sub := dial(t, addrs[1], "tls-sub")
	subscribeOne(t, sub, "tls/#")
	pub := dial(t, addrs[2], "tls-pub")
	publishN(t, pub, "tls", "t", 0, 1)
	if m := sub.expect(t); string(m.Payload) != fmt.Sprintf("t-%04d", 0) {
		t.Fatalf("got %q", m.Payload)
	}

	// Raft's own traffic is mutual TLS too: a Raft peer without a cluster
	// certificate gets nothing through.
	plain, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 2*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	var resp raft.RequestVoteResponse
	err = plain.RequestVote("node-0", raft.ServerAddress(c.nodes[0].RaftAddr()),
		&raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("intruder"), Addr: []byte(plain.LocalAddr())}, Term: 1 << 40}, &resp)
	if err == nil {
		t.Fatalf("a plain-TCP Raft vote request got an answer from a TLS node: %+v", resp)
	}
	if _, l := c.nodes[0].raft.LeaderWithID(); l == "" {
		t.Fatal("no leader after the intruder's vote request")
	}
}

func subscribeOne(t *testing.T, c *client, filter string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}); err != nil || sa.Reasons[0] != 1 {
		t.Fatalf("subscribe %s: %v %+v", filter, err, sa)
	}
}
