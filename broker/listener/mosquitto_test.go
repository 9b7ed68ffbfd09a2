package listener

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker"
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
		t.Skipf("%s not installed (apt-get install mosquitto-clients)", name)
	}
	return p
}

// mosquitto_sub and mosquitto_pub with --cafile, --cert and --key against
// a TLS listener that requires client certificates and takes the CN as
// the username; without a certificate they are refused.
func TestMosquittoClientsTLS(t *testing.T) {
	sub, pub := mosquittoTool(t, "mosquitto_sub"), mosquittoTool(t, "mosquitto_pub")
	p := newPKI(t, "ca")
	rec := &recorder{}
	ln, _ := serve(t, tlsListener(t, p, ClientAuthRequired, IdentityCNAsUsername), nil, broker.Options{Auth: rec, ACL: rec})
	cert, key := p.issue(t, "mosq", "mosq-user", false, nil)
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	common := []string{"-h", host, "-p", port, "--cafile", p.caFile, "--cert", cert, "--key", key, "-q", "1"}

	cmd := exec.Command(sub, append(common, "-t", "mosq/#", "-C", "1", "-W", "20", "-i", "mosq-sub")...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	eventually(t, 10*time.Second, func() error {
		if s, ok := rec.lastSub(); ok && s.ClientID == "mosq-sub" {
			if s.Username != "mosq-user" {
				t.Fatalf("the Authorizer saw username %q, want the certificate's CN", s.Username)
			}
			return nil
		}
		return fmt.Errorf("mosquitto_sub not subscribed yet; stderr: %s", stderr.String())
	})
	if o, err := exec.Command(pub, append(common, "-t", "mosq/x", "-m", "over mutual TLS", "-i", "mosq-pub")...).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub: %v\n%s", err, o)
	}
	select {
	case line := <-lines:
		if line != "over mutual TLS" {
			t.Fatalf("mosquitto_sub printed %q", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("mosquitto_sub got nothing; stderr: %s", stderr.String())
	}

	noCert := []string{"-h", host, "-p", port, "--cafile", p.caFile, "-t", "mosq/x", "-m", "x", "-i", "no-cert"}
	if o, err := exec.Command(pub, noCert...).CombinedOutput(); err == nil {
		t.Fatalf("mosquitto_pub without a client certificate succeeded:\n%s", o)
	}
}
