package broker

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// The dependency direction of the architecture: broker and its
// subpackages never import the cluster packages; broker/topic is a leaf of
// the standard library; broker/packet adds only broker/topic.
func TestDependencyDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/mqcluster/mqcluster/"
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		seen++
		pkg := strings.TrimPrefix(p.ImportPath, mod)
		for _, imp := range p.Imports {
			dot := strings.Contains(strings.Split(imp, "/")[0], ".")
			own := strings.TrimPrefix(imp, mod)
			switch {
			case pkg == "broker/topic" && dot:
				t.Errorf("broker/topic imports %s; it must use the standard library only", imp)
			case pkg == "broker/packet" && dot && own != "broker/topic":
				t.Errorf("broker/packet imports %s; it may use only the standard library and broker/topic", imp)
			case strings.HasPrefix(pkg, "broker") && (strings.HasPrefix(own, "fsm") || strings.HasPrefix(own, "node") || strings.HasPrefix(own, "transport")):
				t.Errorf("%s imports %s: broker declares interfaces, node implements them", pkg, imp)
			}
		}
	}
	if seen == 0 {
		t.Fatal("go list returned no packages")
	}
}
