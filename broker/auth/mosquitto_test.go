package auth

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// mosquittoTool finds one of Debian's mosquitto clients (package
// mosquitto-clients); CI installs them, so there a missing tool fails the
// test instead of skipping it.
func mosquittoTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not installed (CI installs mosquitto-clients)", name)
		}
		t.Skipf("%s not installed: apt-get install mosquitto-clients to run this test", name)
	}
	return p
}

func hostPortArgs(t *testing.T, addr string) []string {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return []string{"-h", h, "-p", p}
}

// mosqPub runs mosquitto_pub to completion and returns its output and
// error.
func mosqPub(t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, mosquittoTool(t, "mosquitto_pub"), append(hostPortArgs(t, addr), args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mosqSub starts mosquitto_sub and returns its output lines (stdout and
// stderr); the channel closes when it exits.
func mosqSub(t *testing.T, addr string, args ...string) <-chan string {
	t.Helper()
	cmd := exec.Command(mosquittoTool(t, "mosquitto_sub"), append(hostPortArgs(t, addr), args...)...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); r.Close() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return lines
}

func nextLine(t *testing.T, lines <-chan string) (string, bool) {
	t.Helper()
	select {
	case l, ok := <-lines:
		return l, ok
	case <-time.After(10 * time.Second):
		t.Fatal("mosquitto_sub printed nothing within 10s")
		return "", false
	}
}

// Debian's mosquitto_pub and mosquitto_sub with -u/-P, in 3.1.1 and 5.0:
// good credentials connect, wrong ones are refused, the ACL decides what
// each may publish and subscribe.
func TestMosquittoClientsWithCredentials(t *testing.T) {
	a, _ := newTestAuth(t, "user alice\nallow readwrite alice/#\nuser bob\nallow publish alice/inbox\n")
	addr := startBroker(t, a)
	for _, v := range []string{"mqttv311", "mqttv5"} {
		t.Run(v, func(t *testing.T) {
			alice := []string{"-V", v, "-u", "alice", "-P", "a-pass"}
			bob := []string{"-V", v, "-u", "bob", "-P", "b-pass", "-q", "1"}
			lines := mosqSub(t, addr, append(alice, "-q", "1", "-t", "alice/#", "-v")...)
			// Probe until the subscription is in place.
			eventually(t, 10*time.Second, func() error {
				if out, err := mosqPub(t, addr, append(alice, "-t", "alice/probe", "-m", "probe")...); err != nil {
					t.Fatalf("alice publishing to her own topic: %v\n%s", err, out)
				}
				select {
				case l := <-lines:
					if l != "alice/probe probe" {
						t.Fatalf("mosquitto_sub printed %q", l)
					}
					return nil
				case <-time.After(200 * time.Millisecond):
					return errors.New("mosquitto_sub not subscribed yet")
				}
			})
			for len(lines) > 0 {
				<-lines // later probes
			}

			if out, err := mosqPub(t, addr, append(bob, "-t", "alice/inbox", "-m", "hi")...); err != nil {
				t.Fatalf("bob publishing to alice/inbox: %v\n%s", err, out)
			}
			if l, _ := nextLine(t, lines); l != "alice/inbox hi" {
				t.Fatalf("mosquitto_sub printed %q", l)
			}
			// Refused: acknowledged (0x87 in 5.0) and not delivered.
			out, _ := mosqPub(t, addr, append(bob, "-t", "alice/diary", "-m", "forged")...)
			if v == "mqttv5" && !strings.Contains(strings.ToLower(out), "not authorized") {
				t.Errorf("mosquitto_pub -V 5 on a refused topic printed %q", out)
			}
			mosqPub(t, addr, append(bob, "-t", "alice/inbox", "-m", "after")...)
			if l, _ := nextLine(t, lines); l != "alice/inbox after" {
				t.Fatalf("mosquitto_sub printed %q: a refused message was delivered", l)
			}

			out, err := mosqPub(t, addr, "-V", v, "-u", "alice", "-P", "wrong", "-t", "alice/x", "-m", "x")
			if err == nil || !strings.Contains(strings.ToLower(out), "bad user name or password") {
				t.Errorf("wrong password: %v, %q", err, out)
			}
			out, err = mosqPub(t, addr, "-V", v, "-t", "alice/x", "-m", "x")
			if err == nil || !strings.Contains(strings.ToLower(out), "not authori") {
				t.Errorf("anonymous: %v, %q", err, out)
			}

			// A filter bob may not read: mosquitto_sub reports the refusal.
			denied := mosqSub(t, addr, append(bob, "-t", "alice/#")...)
			if l, _ := nextLine(t, denied); !strings.Contains(l, "denied") {
				t.Fatalf("mosquitto_sub with a refused filter printed %q", l)
			}
		})
	}
}
