package docker_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mqcluster/mqcluster/cmd/mqcluster/config"
)

// The compose file, as far as the tests read it.
type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Command     []string          `yaml:"command"`
		Hostname    string            `yaml:"hostname"`
		User        string            `yaml:"user"`
		ReadOnly    bool              `yaml:"read_only"`
		CapDrop     []string          `yaml:"cap_drop"`
		Environment map[string]string `yaml:"environment"`
		Volumes     []string          `yaml:"volumes"`
		Ports       []string          `yaml:"ports"`
		Networks    map[string]struct {
			Aliases []string `yaml:"aliases"`
		} `yaml:"networks"`
	} `yaml:"services"`
}

var nodes = []string{"mqcluster-0", "mqcluster-1", "mqcluster-2"}

// TestComposeConfig loads every node's configuration the way the node
// does (the mounted file, its environment, its command) and checks that
// the nodes can find each other.
func TestComposeConfig(t *testing.T) {
	var cf composeFile
	data, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &cf); err != nil {
		t.Fatal(err)
	}
	if len(cf.Services) != len(nodes) {
		t.Fatalf("%d services, want %v", len(cf.Services), nodes)
	}
	hostPorts := map[string]bool{}
	for _, name := range nodes {
		svc, ok := cf.Services[name]
		if !ok {
			t.Fatalf("no service %s", name)
		}
		// The configuration file, mounted read-only where --config reads it.
		cfgPath := svc.Command[slices.Index(svc.Command, "--config")+1]
		src := ""
		for _, v := range svc.Volumes {
			if parts := strings.Split(v, ":"); len(parts) == 3 && parts[1] == cfgPath && parts[2] == "ro" {
				src = parts[0]
			}
		}
		if src == "" {
			t.Fatalf("%s: --config %s is not mounted read-only", name, cfgPath)
		}
		args := slices.Clone(svc.Command)
		args[slices.Index(args, "--config")+1] = src
		var environ []string
		for k, v := range svc.Environment {
			environ = append(environ, k+"="+v)
		}
		if args[0] != "serve" {
			t.Fatalf("%s: command %q: want serve first", name, args)
		}
		ld, err := config.Load(args[1:], environ, io.Discard)
		if err != nil {
			t.Fatalf("%s: mqcluster refuses the configuration:\n%v", name, err)
		}
		for _, w := range ld.Warnings {
			t.Errorf("%s: start warning: %s", name, w)
		}
		cfg := ld.Config

		if cfg.Cluster.NodeID != name || svc.Hostname != name {
			t.Errorf("%s: node id %q, host name %q: want both to be the service name", name, cfg.Cluster.NodeID, svc.Hostname)
		}
		if cfg.Cluster.BootstrapExpect != len(nodes) {
			t.Errorf("%s: cluster.bootstrap_expect = %d, want %d", name, cfg.Cluster.BootstrapExpect, len(nodes))
		}
		// Raft and gRPC bind to the container's own address (its host
		// name), which is what they advertise; gossip finds its own.
		for key, addr := range map[string]string{"cluster.raft_addr": cfg.Cluster.RaftAddr, "cluster.grpc_addr": cfg.Cluster.GRPCAddr} {
			if host, _, _ := net.SplitHostPort(addr); host != svc.Hostname {
				t.Errorf("%s: %s = %q: want the container's host name %s", name, key, addr, svc.Hostname)
			}
		}
		for _, seed := range cfg.Cluster.Join {
			host, port, _ := net.SplitHostPort(seed)
			_, gossipPort, _ := net.SplitHostPort(cfg.Cluster.GossipAddr)
			aliases := svc.Networks["mqcluster"].Aliases
			if !slices.Contains(aliases, host) || port != gossipPort {
				t.Errorf("%s: seed %q: want a network alias of every node (%v) and the gossip port %s", name, seed, aliases, gossipPort)
			}
		}
		if cfg.DataDir == "" || !slices.ContainsFunc(svc.Volumes, func(v string) bool { return strings.HasSuffix(v, ":"+cfg.DataDir) }) {
			t.Errorf("%s: data_dir %q is not a volume", name, cfg.DataDir)
		}

		// MQTT published on loopback only (anonymous clients are admitted),
		// each node on its own host port.
		if len(svc.Ports) != 1 || !strings.HasPrefix(svc.Ports[0], "127.0.0.1:") || !strings.HasSuffix(svc.Ports[0], ":1883") {
			t.Errorf("%s: ports %q: want the MQTT port on 127.0.0.1 only", name, svc.Ports)
		} else if hostPorts[svc.Ports[0]] {
			t.Errorf("%s: host port %s taken by another node", name, svc.Ports[0])
		}
		hostPorts[svc.Ports[0]] = true
		if len(cfg.Listeners) != 1 || cfg.Listeners[0].Address != ":1883" {
			t.Errorf("%s: listeners %+v: want one on :1883", name, cfg.Listeners)
		}

		if svc.User != "65532:65532" || !svc.ReadOnly || !slices.Equal(svc.CapDrop, []string{"ALL"}) {
			t.Errorf("%s: want user 65532:65532, a read-only root and no capabilities", name)
		}
	}
}

// TestComposeCluster starts the compose cluster from the image
// MQCLUSTER_TEST_IMAGE, sends messages between its nodes with
// mosquitto_pub and mosquitto_sub, restarts a node and checks that messages
// cross the cluster again, through the restarted node too. The cluster is
// removed at the end, failed or not.
func TestComposeCluster(t *testing.T) {
	image := os.Getenv("MQCLUSTER_TEST_IMAGE")
	if image == "" {
		t.Skip("needs Docker and an image: make compose-test builds one and runs this test")
	}
	for _, tool := range []string{"mosquitto_pub", "mosquitto_sub", "stdbuf"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: apt-get install mosquitto-clients coreutils", tool)
		}
	}
	compose := strings.Fields(os.Getenv("MQCLUSTER_TEST_COMPOSE"))
	if len(compose) == 0 {
		compose = []string{"docker-compose"}
	}
	file, err := filepath.Abs("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, len(nodes))
	env := append(os.Environ(), "MQCLUSTER_IMAGE="+image)
	for i, p := range ports {
		env = append(env, fmt.Sprintf("MQCLUSTER_PORT_%d=%d", i, p))
	}
	// One project name: a run killed before its cleanup is cleared by the next.
	const project = "mqcluster-compose-test"
	run := func(timeout time.Duration, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		argv := append(slices.Clone(compose[1:]), "-p", project, "-f", file)
		cmd := exec.CommandContext(ctx, compose[0], append(argv, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("%s %s: %w\n%s", compose[0], strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	down := func() {
		if _, err := run(2*time.Minute, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			t.Errorf("tearing the cluster down: %v", err)
		}
	}
	down()
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := run(time.Minute, "logs", "--no-color", "--tail", "60")
			t.Logf("the nodes' logs:\n%s", logs)
		}
		down()
	})

	start := time.Now()
	if _, err := run(2*time.Minute, "up", "-d"); err != nil {
		t.Fatal(err)
	}
	t.Logf("three nodes started on 127.0.0.1:%v in %v", ports, time.Since(start).Round(time.Millisecond))

	// Messages cross the cluster: published on one node, received on
	// another, every way round.
	crossAll := func(what string) {
		t.Helper()
		start := time.Now()
		pairs := [][2]int{{0, 2}, {1, 0}, {2, 1}}
		eventually(t, 90*time.Second, func() error {
			for _, p := range pairs {
				if err := crossNodes(ports[p[0]], ports[p[1]]); err != nil {
					return fmt.Errorf("node %d to node %d: %w", p[0], p[1], err)
				}
			}
			return nil
		})
		t.Logf("%s: messages cross the cluster between every node, %v after it began", what, time.Since(start).Round(time.Millisecond))
	}
	crossAll("formed")

	start = time.Now()
	if _, err := run(time.Minute, "restart", "-t", "60", "mqcluster-1"); err != nil {
		t.Fatal(err)
	}
	t.Logf("mqcluster-1 restarted in %v", time.Since(start).Round(time.Millisecond))
	crossAll("healed")

	// The restarted node came back into the cluster it left rather than
	// forming another one: it kept its Raft state and bootstrapped nothing.
	logs, err := run(time.Minute, "logs", "--no-color", "mqcluster-1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(logs, "cluster node started") != 2 {
		t.Errorf("mqcluster-1 started %d times, want 2", strings.Count(logs, "cluster node started"))
	}
	if n := strings.Count(logs, "bootstrapped the cluster"); n != 0 {
		t.Errorf("mqcluster-1 bootstrapped a cluster %d times, want 0 (mqcluster-0 bootstraps)", n)
	}
}

var seq int

// crossNodes subscribes on the node at subPort and, once the subscription
// is acknowledged, publishes at QoS 1 on the node at pubPort; it reports
// whether the subscriber got the message.
func crossNodes(pubPort, subPort int) error {
	seq++
	topic := fmt.Sprintf("compose-test/%d/%d", os.Getpid(), seq)
	payload := fmt.Sprintf("message %d from port %d", seq, pubPort)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	// stdbuf: mosquitto_sub's output is line-buffered, so that its
	// "received SUBACK" arrives while it still runs.
	sub := exec.CommandContext(ctx, "stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", strconv.Itoa(subPort),
		"-i", fmt.Sprintf("compose-test-sub-%d", seq), "-t", topic, "-q", "1", "-C", "1", "-W", "10", "-d")
	stdout, err := sub.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	sub.Stderr = &stderr
	if err := sub.Start(); err != nil {
		return err
	}
	defer sub.Wait()
	lines := bufio.NewScanner(stdout)
	subscribed := false
	for !subscribed && lines.Scan() {
		subscribed = strings.Contains(lines.Text(), "received SUBACK")
	}
	if !subscribed {
		return fmt.Errorf("mosquitto_sub on port %d: no SUBACK: %s", subPort, strings.TrimSpace(stderr.String()))
	}
	pub := exec.CommandContext(ctx, "mosquitto_pub", "-h", "127.0.0.1", "-p", strconv.Itoa(pubPort),
		"-i", fmt.Sprintf("compose-test-pub-%d", seq), "-t", topic, "-q", "1", "-m", payload)
	if out, err := pub.CombinedOutput(); err != nil {
		return fmt.Errorf("mosquitto_pub on port %d: %w: %s", pubPort, err, bytes.TrimSpace(out))
	}
	for lines.Scan() {
		if lines.Text() == payload {
			return nil
		}
	}
	return fmt.Errorf("published on port %d, not received on port %d", pubPort, subPort)
}

// freePorts finds n TCP ports free on 127.0.0.1 for the nodes' MQTT
// listeners, so that the test runs beside a cluster on the usual ports.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// eventually calls f until it succeeds, or fails the test with f's last
// error once timeout has passed.
func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := 250 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, 2*time.Second)
	}
}
