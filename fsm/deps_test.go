package fsm

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies: fsm never depends, even indirectly, on broker (beyond
// its leaves broker/topic and broker/packet), node or transport.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/mqcluster/mqcluster/"
	allowed := []string{"fsm", "broker/topic", "broker/packet", "proto/"}
	n := 0
	for _, p := range strings.Fields(string(out)) {
		own, ok := strings.CutPrefix(p, mod)
		if !ok {
			continue
		}
		n++
		ok = false
		for _, a := range allowed {
			ok = ok || own == a || strings.HasSuffix(a, "/") && strings.HasPrefix(own, a)
		}
		if !ok {
			t.Errorf("fsm depends on %s", p)
		}
	}
	if n < 2 {
		t.Fatalf("go list found %d packages of the module: the test checks nothing", n)
	}
}
