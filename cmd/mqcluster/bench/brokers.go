package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The brokers the benchmark knows how to start.
const (
	MQCluster = "mqcluster"
	Mosquitto = "mosquitto"
)

// startTimeout bounds how long a broker may take to accept its first MQTT
// connection.
const startTimeout = 15 * time.Second

// brokerProc is one broker running as a child process on a loopback port,
// with its configuration, data and log in a temporary directory.
type brokerProc struct {
	name   string
	addr   string
	addrs  map[string]string // listeners other than TCP, by transport
	dir    string
	log    string
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has ended
	err    error         // its exit status, once exited is closed
}

// brokerBins are the executables of the brokers.
type brokerBins struct {
	mqcluster string
	mosquitto string
	// mosquittoMaxQueued is Mosquitto's max_queued_messages.
	mosquittoMaxQueued int
	// mqclusterDataDir says that `mqcluster serve` has --data-dir: it is
	// pointed into the broker's temporary directory.
	mqclusterDataDir bool
	// mqclusterQueueFlags says that `mqcluster serve` has the queue-limit
	// flags: they are set as large as Mosquitto's max_queued_messages.
	mqclusterQueueFlags bool
	// mqclusterConfig says that `mqcluster serve` takes --config; with
	// transports, mqcluster is given a listener for each (tls holds the
	// certificate of the TLS ones).
	mqclusterConfig bool
	// mqclusterAdmin says that `mqcluster serve` has an admin endpoint: it
	// gets a free port, not the default one another broker may hold.
	mqclusterAdmin bool
	transports     []string
	tls            *tlsAssets
}

// startBroker starts the named broker on a free loopback port and waits
// until it answers a CONNECT.
func startBroker(ctx context.Context, name string, bins brokerBins) (*brokerProc, error) {
	b, err := spawnBroker(name, bins)
	if err != nil {
		return nil, err
	}
	if err := b.waitReady(ctx); err != nil {
		b.stop()
		return nil, err
	}
	return b, nil
}

// spawnBroker starts the named broker on a free loopback port without
// waiting for it; extra are more arguments of `mqcluster serve` (the
// cluster flags), each "DIR" in them replaced by the broker's temporary
// directory.
func spawnBroker(name string, bins brokerBins, extra ...string) (*brokerProc, error) {
	dir, err := os.MkdirTemp("", "mqcluster-bench-"+name+"-")
	if err != nil {
		return nil, err
	}
	started := false
	defer func() {
		if !started {
			os.RemoveAll(dir)
		}
	}()
	// Debian's mosquitto, started as root, drops to the mosquitto user
	// before it opens its log: let that user into the directory.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	b := &brokerProc{name: name, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir,
		log: filepath.Join(dir, name+".log"), exited: make(chan struct{})}
	logf, err := os.Create(b.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	if err := logf.Chmod(0o666); err != nil {
		return nil, err
	}
	switch name {
	case MQCluster:
		args := []string{"serve", "--listen", b.addr}
		if bins.mqclusterDataDir {
			args = append(args, "--data-dir", filepath.Join(dir, "data"))
		}
		if bins.mqclusterAdmin {
			args = append(args, "--admin-address", "127.0.0.1:0")
		}
		if bins.mqclusterQueueFlags {
			// The same effectively unbounded queues Mosquitto is given:
			// max_queued_messages for both QoS 1 and online QoS 0.
			args = append(args, "--max-queued-messages", strconv.Itoa(bins.mosquittoMaxQueued),
				"--max-queued-bytes", strconv.Itoa(8<<30), "--write-queue-bytes", strconv.Itoa(8<<30))
		}
		if len(bins.transports) > 0 {
			conf, addrs, err := writeListenersConfig(dir, bins.transports, bins.tls)
			if err != nil {
				return nil, err
			}
			args = append(args, "--config", conf)
			b.addrs = addrs
		}
		for _, a := range extra {
			args = append(args, strings.ReplaceAll(a, "DIR", dir))
		}
		b.cmd = exec.Command(bins.mqcluster, args...)
	case Mosquitto:
		conf := filepath.Join(dir, "mosquitto.conf")
		if err := os.WriteFile(conf, []byte(mosquittoConf(port, bins.mosquittoMaxQueued, b.log)), 0o644); err != nil {
			return nil, err
		}
		b.cmd = exec.Command(bins.mosquitto, "-c", conf)
	default:
		return nil, fmt.Errorf("unknown broker %q", name)
	}
	// The working directory is the temporary one, so that a broker that
	// keeps data in ./data keeps it there.
	b.cmd.Dir = dir
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	// From here on the directory stays when the broker fails: its log
	// says why.
	started = true
	go func() { b.err = b.cmd.Wait(); close(b.exited) }()
	return b, nil
}

// mosquittoConf is the configuration of the Mosquitto under test: its
// defaults, except for a loopback listener, anonymous access, no
// persistence, a queue long enough not to drop QoS 1 messages, and a log
// file.
func mosquittoConf(port, maxQueued int, logPath string) string {
	return fmt.Sprintf(`# Written by mqcluster bench.
listener %d 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages %d
log_dest file %s
`, port, maxQueued, logPath)
}

// hasFlag reports whether `bin serve -h` lists the flag -name.
func hasFlag(bin, name string) bool {
	out, _ := exec.Command(bin, "serve", "-h").CombinedOutput()
	return bytes.Contains(out, []byte("-"+name+" ")) || bytes.Contains(out, []byte("-"+name+"\n"))
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitReady retries an MQTT handshake until the broker answers one.
func (b *brokerProc) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(startTimeout)
	wait := 5 * time.Millisecond
	for {
		select {
		case <-b.exited:
			return fmt.Errorf("%s exited at start (%v); log %s:\n%s", b.name, b.err, b.log, tail(b.log))
		default:
		}
		nc, err := net.DialTimeout("tcp", b.addr, time.Second)
		if err == nil {
			err = connect(nc, nc, "bench-probe", 0)
			nc.Close()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not accept an MQTT connection on %s within %v: %w; log %s:\n%s",
				b.name, b.addr, startTimeout, err, b.log, tail(b.log))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// target is the broker as the load generator sees it over TCP.
func (b *brokerProc) target() Target {
	return Target{Name: b.name, Addr: b.addr, PID: b.cmd.Process.Pid}
}

// targetOver is the broker over one transport.
func (b *brokerProc) targetOver(transport string, a *tlsAssets) Target {
	t := b.target()
	if addr, ok := b.addrs[transport]; ok {
		t.Addr, t.Transport = addr, transport
		if a != nil {
			t.TLS = a.client
		}
	}
	return t
}

// stop ends the broker (SIGTERM, SIGKILL after 10 s) and removes its
// directory. It reports an error if the broker had died on its own.
func (b *brokerProc) stop() error {
	var died error
	select {
	case <-b.exited:
		died = fmt.Errorf("%s died during the run (%v); log:\n%s", b.name, b.err, tail(b.log))
	default:
		b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.exited:
		case <-time.After(10 * time.Second):
			b.cmd.Process.Kill()
			<-b.exited
		}
	}
	if died == nil {
		os.RemoveAll(b.dir)
	}
	return died
}

// tail returns the last lines of a log file.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// version asks a broker binary for its version string.
func brokerVersion(name, bin string) string {
	var out []byte
	var err error
	switch name {
	case MQCluster:
		out, err = exec.Command(bin, "version").CombinedOutput()
	case Mosquitto:
		// mosquitto -h prints "mosquitto version X" first and exits 3.
		out, _ = exec.Command(bin, "-h").CombinedOutput()
	}
	line, _, _ := strings.Cut(string(out), "\n")
	if err != nil || line == "" {
		return "unknown"
	}
	return strings.TrimSpace(line)
}
