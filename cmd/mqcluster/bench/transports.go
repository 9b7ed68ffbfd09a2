package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mqcluster/mqcluster/broker/listener"
)

// The transports mqcluster can be driven over (--transports); Mosquitto
// is driven over TCP only.
const (
	TransportTCP = "tcp"
	TransportTLS = "tls"
	TransportWS  = "ws"
	TransportWSS = "wss"
)

var allTransports = []string{TransportTCP, TransportTLS, TransportWS, TransportWSS}

// Targets of the figures over TLS and WebSocket, as ratios of delivered
// messages per second to plain TCP (reported, never asserted).
var transportTargets = map[string]float64{TransportTLS: 0.70, TransportWS: 0.60, TransportWSS: 0.60}

// transportsFor returns the transports one flow runs over on one broker:
// the chosen ones on mqcluster (but the idle scenario, which counts
// plain connections), TCP on Mosquitto.
func (c *Config) transportsFor(broker string, f flow) []string {
	if broker != MQCluster || f.Name == "idle" || len(c.Transports) == 0 {
		return []string{TransportTCP}
	}
	return c.Transports
}

// extraTransports are the chosen transports other than TCP.
func (c *Config) extraTransports() []string {
	var out []string
	for _, t := range c.Transports {
		if t != TransportTCP {
			out = append(out, t)
		}
	}
	return out
}

// tlsAssets are the certificate the TLS listeners of the mqcluster under
// test serve, and the client configuration that trusts it.
type tlsAssets struct {
	dir               string
	certFile, keyFile string
	client            *tls.Config
}

// newTLSAssets writes a self-signed ECDSA P-256 certificate for 127.0.0.1
// into a temporary directory.
func newTLSAssets() (*tlsAssets, error) {
	dir, err := os.MkdirTemp("", "mqcluster-bench-tls-")
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mqcluster bench"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	a := &tlsAssets{dir: dir, certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem")}
	if err := os.WriteFile(a.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(a.keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	a.client = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	return a, nil
}

func (a *tlsAssets) remove() {
	if a != nil {
		os.RemoveAll(a.dir)
	}
}

// writeListenersConfig writes the configuration file that gives the
// mqcluster under test a listener on a free loopback port for each of
// transports (TCP stays --listen), and returns the addresses.
func writeListenersConfig(dir string, transports []string, a *tlsAssets) (string, map[string]string, error) {
	addrs := map[string]string{}
	var b strings.Builder
	b.WriteString("# Written by mqcluster bench.\nlisteners:\n")
	for _, t := range transports {
		port, err := freePort()
		if err != nil {
			return "", nil, err
		}
		addrs[t] = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		fmt.Fprintf(&b, "  - type: %s\n    address: %q\n", t, addrs[t])
		if t == TransportTLS || t == TransportWSS {
			fmt.Fprintf(&b, "    tls: {cert_file: %q, key_file: %q}\n", a.certFile, a.keyFile)
		}
	}
	path := filepath.Join(dir, "mqcluster.yaml")
	return path, addrs, os.WriteFile(path, []byte(b.String()), 0o644)
}

// dialTarget opens a connection to addr over t's transport: TCP (with the
// dialer's source addresses), TLS on it, or a WebSocket (binary frames,
// subprotocol mqtt, path /mqtt) on it.
func (d *dialer) dialTarget(ctx context.Context, t Target, addr string) (net.Conn, error) {
	switch t.Transport {
	case "", TransportTCP:
		return d.dial(ctx, addr)
	case TransportTLS:
		nc, err := d.dial(ctx, addr)
		if err != nil {
			return nil, err
		}
		tc := tls.Client(nc, t.TLS)
		hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
		return tc, nil
	case TransportWS, TransportWSS:
		scheme := "ws"
		if t.Transport == TransportWSS {
			scheme = "wss"
		}
		dial := func(ctx context.Context, _, _ string) (net.Conn, error) { return d.dial(ctx, addr) }
		nc, err := listener.DialWebSocket(ctx, scheme+"://"+addr+"/mqtt", t.TLS, dial)
		if err != nil {
			return nil, fmt.Errorf("WebSocket: %w", err)
		}
		return nc, nil
	}
	return nil, fmt.Errorf("unknown transport %q", t.Transport)
}

func validTransports(ts []string) error {
	for _, t := range ts {
		if !slices.Contains(allTransports, t) {
			return fmt.Errorf("--transports: unknown transport %q (want %s)", t, strings.Join(allTransports, ", "))
		}
	}
	return nil
}
