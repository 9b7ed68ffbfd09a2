package broker

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.golang/paho"
)

// mosquittoTool finds one of Debian's mosquitto clients; CI installs them,
// so there a missing tool fails the test instead of skipping it.
func mosquittoTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not installed (CI installs mosquitto-clients)", name)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

func hostPort(t *testing.T, addr string) (string, string) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

// mosqSub starts mosquitto_sub with args and returns a channel of its
// output lines.
func mosqSub(t *testing.T, addr string, args ...string) (<-chan string, *exec.Cmd) {
	t.Helper()
	h, p := hostPort(t, addr)
	cmd := exec.Command(mosquittoTool(t, "mosquitto_sub"), append([]string{"-h", h, "-p", p}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return lines, cmd
}

// mosqPub runs mosquitto_pub to completion.
func mosqPub(t *testing.T, addr string, args ...string) {
	t.Helper()
	h, p := hostPort(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, mosquittoTool(t, "mosquitto_pub"), append([]string{"-h", h, "-p", p}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto_pub %v: %v\n%s", args, err, out)
	}
}

func nextLine(t *testing.T, lines <-chan string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatal("mosquitto_sub exited")
		}
		return l
	case <-time.After(10 * time.Second):
		t.Fatal("mosquitto_sub printed nothing within 10s")
		return ""
	}
}

// waitSubscribed publishes probes until the mosquitto_sub prints one: its
// SUBACK has then surely arrived.
func waitSubscribed(t *testing.T, addr, topic string, lines <-chan string) {
	t.Helper()
	for i := 0; ; i++ {
		mosqPub(t, addr, "-t", topic, "-m", "probe")
		select {
		case l := <-lines:
			if strings.HasSuffix(l, "probe") {
				return
			}
			t.Fatalf("unexpected line %q", l)
		case <-time.After(200 * time.Millisecond):
			if i > 50 {
				t.Fatal("mosquitto_sub never subscribed")
			}
		}
	}
}

// Debian's mosquitto clients in 3.1.1 and 5.0 against the broker, at every
// QoS, exchanging with paho.
func TestMosquittoClients(t *testing.T) {
	s := startServer(t, nil)
	for _, v := range []string{"mqttv311", "mqttv5"} {
		for _, q := range []string{"0", "1", "2"} {
			t.Run(v+"/qos"+q, func(t *testing.T) {
				topic := "mosq/" + v + "/" + q
				lines, _ := mosqSub(t, s.addr, "-V", v, "-q", q, "-t", topic, "-v")
				waitSubscribed(t, s.addr, topic, lines)
				mosqPub(t, s.addr, "-V", v, "-q", q, "-t", topic, "-m", "hello "+v)
				if l := nextLine(t, lines); l != topic+" hello "+v {
					t.Fatalf("mosquitto_sub printed %q", l)
				}
				// paho publishes, mosquitto_sub receives.
				c := dialV5(t, s.addr, "paho-"+v+q)
				c.publish(t, &paho.Publish{Topic: topic, QoS: q[0] - '0', Payload: []byte("from paho")})
				if l := nextLine(t, lines); l != topic+" from paho" {
					t.Fatalf("mosquitto_sub printed %q", l)
				}
			})
		}
	}
}

// 5.0 properties set by mosquitto_pub reach a paho subscriber.
func TestMosquittoPubProperties(t *testing.T) {
	s := startServer(t, nil)
	c := dialV5(t, s.addr, "props-sub")
	c.subscribe(t, paho.SubscribeOptions{Topic: "mprops", QoS: 1})
	mosqPub(t, s.addr, "-V", "mqttv5", "-q", "1", "-t", "mprops", "-m", "{}",
		"-D", "publish", "content-type", "application/json",
		"-D", "publish", "user-property", "k", "v",
		"-D", "publish", "response-topic", "r/t")
	m := c.expect(t)
	p := m.Properties
	if p.ContentType != "application/json" || p.ResponseTopic != "r/t" || len(p.User) != 1 || p.User[0].Key != "k" || p.User[0].Value != "v" {
		t.Fatalf("properties %+v", p)
	}
}

// Retained messages and persistent sessions with mosquitto's clients.
func TestMosquittoRetainedAndSession(t *testing.T) {
	s := startServer(t, nil)
	mosqPub(t, s.addr, "-t", "mret/a", "-m", "kept", "-r", "-q", "1")
	lines, _ := mosqSub(t, s.addr, "-t", "mret/#", "-v", "-C", "1")
	if l := nextLine(t, lines); l != "mret/a kept" {
		t.Fatalf("retained: %q", l)
	}
	// A persistent 3.1.1 session (-c, clean session 0) collects while away.
	first, cmd := mosqSub(t, s.addr, "-c", "-i", "mosq-persist", "-q", "1", "-t", "mpersist", "-v")
	waitSubscribed(t, s.addr, "mpersist", first)
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	eventually(t, 5*time.Second, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if ss := s.sessions["mosq-persist"]; ss == nil || ss.online() {
			return fmt.Errorf("session not offline yet")
		}
		return nil
	})
	mosqPub(t, s.addr, "-t", "mpersist", "-m", "while away", "-q", "1")
	again, _ := mosqSub(t, s.addr, "-c", "-i", "mosq-persist", "-q", "1", "-t", "mpersist", "-v")
	if l := nextLine(t, again); l != "mpersist while away" {
		t.Fatalf("persistent session: %q", l)
	}
}

// mosquitto_sub's will is published when the process dies.
func TestMosquittoWill(t *testing.T) {
	s := startServer(t, nil)
	watcher := dialV5(t, s.addr, "watcher")
	watcher.subscribe(t, paho.SubscribeOptions{Topic: "mwill", QoS: 1})
	lines, cmd := mosqSub(t, s.addr, "-t", "mwill-probe", "--will-topic", "mwill", "--will-payload", "dead", "--will-qos", "1")
	waitSubscribed(t, s.addr, "mwill-probe", lines)
	cmd.Process.Kill()
	cmd.Wait()
	if m := watcher.expect(t); string(m.Payload) != "dead" {
		t.Fatalf("will payload %q", m.Payload)
	}
}
