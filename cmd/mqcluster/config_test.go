package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
	"go.yaml.in/yaml/v3"

	"github.com/mqcluster/mqcluster/broker/auth"
	"github.com/mqcluster/mqcluster/broker/listener"
)

var listeningRE = regexp.MustCompile(`msg="mqcluster listening".* transport=(\S+) listener=(\S+) anonymous=(\S+)`)

// served is an mqcluster process with every listener it announced.
type served struct {
	*proc
	listeners map[string]string // transport → address (the first of each)
}

// startServe runs `mqcluster serve args...` with env added to the
// environment and waits until it has announced want listeners.
func startServe(t *testing.T, want int, env []string, args ...string) *served {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"serve"}, args...)...)
	cmd.Env = append(append(os.Environ(), testEnv...), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &served{proc: &proc{cmd: cmd, logs: &strings.Builder{}, mu: &sync.Mutex{}}, listeners: map[string]string{}}
	t.Cleanup(func() { s.kill() })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		n := 0
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.logs.WriteString(line + "\n")
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				if _, ok := s.listeners[m[1]]; !ok {
					s.listeners[m[1]] = m[2]
				}
				if n++; n == want {
					close(ready)
				}
			}
			s.mu.Unlock()
		}
		io.Copy(io.Discard, stderr)
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatalf("mqcluster did not announce %d listeners:\n%s", want, s.log())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s
}

// writeCert writes a self-signed certificate for 127.0.0.1 with the given
// common name to cert.pem and key.pem in dir, and returns a pool that
// trusts it.
func writeCert(t *testing.T, dir, cn string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// connectOver connects a paho client over nc; user "" is anonymous.
func connectOver(t *testing.T, nc net.Conn, id, user string) (*client, *paho.Connack, error) {
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
	return c, ca, err
}

// The file's precedence holds in the real command: --print-config prints
// file < environment < flags and exits without listening.
func TestPrintConfigCommand(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mqcluster.yaml")
	os.WriteFile(file, []byte("data_dir: /file\nlog: {level: warn}\nlimits: {max_packet_size: 2048, max_connections: 7}\nlisteners:\n  - {type: ws, address: '127.0.0.1:0'}\n"), 0o600)
	cmd := exec.Command(binary(t), "serve", "--config", file, "--print-config", "--limits-max-packet-size", "8192", "--listen", "127.0.0.1:1")
	cmd.Env = append(os.Environ(), "MQCLUSTER_LIMITS_MAX_PACKET_SIZE=4096", "MQCLUSTER_LOG_LEVEL=error")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var got struct {
		DataDir   string `yaml:"data_dir"`
		Log       struct{ Level string }
		Limits    map[string]any
		Listeners []struct{ Type, Address string }
	}
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if got.DataDir != "/file" || got.Log.Level != "error" || got.Limits["max_packet_size"] != 8192 || got.Limits["max_connections"] != 7 ||
		len(got.Listeners) != 2 || got.Listeners[0].Type != "tcp" || got.Listeners[0].Address != "127.0.0.1:1" || got.Listeners[1].Type != "ws" {
		t.Fatalf("printed:\n%s", out)
	}

	os.WriteFile(file, []byte("limits:\n  max_packet_sise: 1\n"), 0o600)
	out, err = exec.Command(binary(t), "serve", "--config", file).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "limits.max_packet_sise: unknown key (line 2)") {
		t.Fatalf("unknown key: %v\n%s", err, out)
	}
}

// One process serves tcp, tls and ws listeners from its file: a message
// published over TLS reaches subscribers over TCP and WebSocket; SIGHUP
// reloads the certificate.
func TestServeListenersFromFile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	pool := writeCert(t, dir, "first")
	file := filepath.Join(dir, "mqcluster.yaml")
	os.WriteFile(file, fmt.Appendf(nil, `
data_dir: ""
listeners:
  - {type: tcp, address: "127.0.0.1:0"}
  - type: tls
    address: "127.0.0.1:0"
    tls: {cert_file: %[1]s/cert.pem, key_file: %[1]s/key.pem, min_version: "1.3"}
  - {type: ws, address: "127.0.0.1:0", path: /mqtt}
`, dir), 0o600)
	s := startServe(t, 3, nil, "--config", file)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tcpConn, err := net.Dial("tcp", s.listeners["tcp"])
	if err != nil {
		t.Fatal(err)
	}
	wsConn, err := listener.DialWebSocket(ctx, "ws://"+s.listeners["ws"]+"/mqtt", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var subs []*client
	for i, nc := range []net.Conn{tcpConn, wsConn} {
		c, _, err := connectOver(t, nc, fmt.Sprintf("sub-%d", i), "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "files/#", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		subs = append(subs, c)
	}
	dialTLS := func() (*tls.Conn, error) {
		return tls.Dial("tcp", s.listeners["tls"], &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS13})
	}
	tc, err := dialTLS()
	if err != nil {
		t.Fatal(err)
	}
	pub, _, err := connectOver(t, tc, "pub", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, &paho.Publish{Topic: "files/x", QoS: 1, Payload: []byte("across transports")}); err != nil {
		t.Fatal(err)
	}
	for i, c := range subs {
		select {
		case m := <-c.msgs:
			if string(m.Payload) != "across transports" {
				t.Fatalf("subscriber %d got %q", i, m.Payload)
			}
		case <-ctx.Done():
			t.Fatalf("subscriber %d got nothing\n%s", i, s.log())
		}
	}

	// A new pair, then SIGHUP: new connections get it.
	pool = writeCert(t, dir, "second")
	s.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for {
		nc, err := tls.Dial("tcp", s.listeners["tls"], &tls.Config{RootCAs: pool})
		if err == nil {
			nc.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the new certificate is not served: %v\n%s", err, s.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Anonymous clients: an explicit allow_anonymous: false refuses them with
// 0x87; with no authentication configured, a listener on every interface
// (what `make run` starts) admits them from loopback and says so at start.
func TestServeAnonymousPolicy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "mqcluster.yaml")
	os.WriteFile(file, []byte("data_dir: \"\"\nlisteners:\n  - {type: tcp, address: \"127.0.0.1:0\", allow_anonymous: false}\n"), 0o600)
	s := startServe(t, 1, nil, "--config", file)
	nc, err := net.Dial("tcp", s.listeners["tcp"])
	if err != nil {
		t.Fatal(err)
	}
	if _, ca, err := connectOver(t, nc, "anon", ""); err == nil || ca == nil || ca.ReasonCode != 0x87 {
		t.Fatalf("anonymous on allow_anonymous: false: %+v, %v", ca, err)
	}
	nc, err = net.Dial("tcp", s.listeners["tcp"])
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := connectOver(t, nc, "named", "someone"); err != nil {
		t.Fatalf("with a username: %v", err)
	}

	s = startServe(t, 1, nil, "--listen", ":0", "--data-dir", "")
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(s.log(), "admitted from loopback addresses only"); {
		if time.Now().After(deadline) {
			t.Fatalf("no word about loopback-only anonymous access:\n%s", s.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(s.log(), "anonymous=loopback") {
		t.Fatalf("the listener's policy is not logged:\n%s", s.log())
	}
	_, port, _ := net.SplitHostPort(s.listeners["tcp"])
	nc, err = net.Dial("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := connectOver(t, nc, "local", ""); err != nil {
		t.Fatalf("anonymous from loopback: %v", err)
	}
}

// With a password file, the default listener refuses anonymous clients
// and admits a user of the file with the right password only.
func TestServePasswordFile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	hash, err := auth.HashPassword(auth.Bcrypt, []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	os.WriteFile(pw, []byte("alice:"+hash+"\n"), 0o600)
	s := startServe(t, 1, []string{"MQCLUSTER_AUTH_PASSWORD_FILE=" + pw}, "--listen", "127.0.0.1:0", "--data-dir", "")
	if !strings.Contains(s.log(), "anonymous=deny") {
		t.Fatalf("the listener does not refuse anonymous clients:\n%s", s.log())
	}
	for _, tc := range []struct {
		user, password string
		want           byte
	}{{"", "", 0x87}, {"alice", "wrong", 0x86}, {"alice", "s3cret", 0}} {
		nc, err := net.Dial("tcp", s.listeners["tcp"])
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: nc})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cp := &paho.Connect{ClientID: "pw", CleanStart: true}
		if tc.user != "" {
			cp.Username, cp.UsernameFlag, cp.Password, cp.PasswordFlag = tc.user, true, []byte(tc.password), true
		}
		ca, err := c.Connect(ctx, cp)
		cancel()
		if ca == nil || ca.ReasonCode != tc.want || (err == nil) != (tc.want == 0) {
			t.Errorf("%q/%q: CONNACK %+v, %v; want reason code %#x", tc.user, tc.password, ca, err, tc.want)
		}
		nc.Close()
	}
}
