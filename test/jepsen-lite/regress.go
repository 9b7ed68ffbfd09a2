package main

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Scenario is a fixed schedule that reproduces an anomaly a run found: a
// regression check that fails until the broker is fixed. Its faults do
// not depend on the seed.
type Scenario struct {
	Doc       string
	Nodes     int
	Time      time.Duration
	Workloads string
	Faults    []Fault
}

// Scenarios, by name (docs/reliability.md tells what each found).
var Scenarios = map[string]Scenario{
	// A paused node's clients time out; the leader fires their wills as
	// the node's, the node fires them again when it resumes; and the
	// wills of connections made right after the resume are fired by the
	// leader, which still holds the node down.
	"will-pause": {
		Doc: "wills exactly once across a pause", Nodes: 3, Time: 40 * time.Second, Workloads: "wills",
		Faults: []Fault{{Family: "pause", Kind: "one", Nodes: []int{0}, At: 8 * time.Second, Dur: 14 * time.Second}},
	},
	// 3.1.1 publishers get PUBACK for retained writes the cluster did not
	// record (no quorum on an isolated node): 3.1.1 has no reason code.
	"retained-minority": {
		Doc: "no retained write acknowledged by a minority node", Nodes: 3, Time: 35 * time.Second, Workloads: "retained",
		Faults: []Fault{{Family: "partition", Kind: "isolate-one", Comps: [][]int{{0}, {1, 2}}, At: 6 * time.Second, Dur: 15 * time.Second}},
	},
	// A persistent session moving to (or from) a node behind a slow link:
	// messages acknowledged while the takeover is under way stay on the
	// previous node and are lost; forwarded QoS 2 messages are retried and
	// delivered twice.
	"handover-slow": {
		Doc: "nothing lost or doubled while sessions move across a slow link", Nodes: 3, Time: 45 * time.Second,
		Workloads: "queue,qos2,takeover",
		Faults:    []Fault{{Family: "slow", Kind: "one", Nodes: []int{1}, At: 6 * time.Second, Dur: 25 * time.Second}},
	},
}

// scenarioNames lists the scenarios, sorted.
func scenarioNames() []string {
	var out []string
	for k := range Scenarios {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// applyScenario turns cfg into the run of scenario name.
func applyScenario(cfg Config, name string) (Config, []Fault, error) {
	s, ok := Scenarios[name]
	if !ok {
		return cfg, nil, fmt.Errorf("unknown scenario %q (have %s)", name, strings.Join(scenarioNames(), ", "))
	}
	cfg.Nodes, cfg.Time, cfg.Workloads, cfg.Short = s.Nodes, s.Time, s.Workloads, false
	fams := map[string]bool{}
	cfg.Families = nil
	for _, f := range s.Faults {
		if !fams[f.Family] {
			fams[f.Family] = true
			cfg.Families = append(cfg.Families, f.Family)
		}
	}
	return cfg, s.Faults, nil
}

// runScenarios runs the named scenarios (all: every one) and returns 1 when
// any failed.
func runScenarios(cfg Config, names string) int {
	list := strings.Split(names, ",")
	if names == "all" {
		list = scenarioNames()
	}
	status := 0
	for _, name := range list {
		c, faults, err := applyScenario(cfg, strings.TrimSpace(name))
		if err != nil {
			fatal(err)
		}
		c.Args = append(append([]string(nil), cfg.Args...), "--scenario", name)
		fmt.Fprintf(stderr, "scenario %s: %s\n", name, Scenarios[name].Doc)
		c.fixed = faults
		ok, dir, err := runOnce(c)
		v := "PASS"
		if err != nil || !ok {
			v, status = "FAIL", 1
		}
		fmt.Printf("scenario %-18s %s  %s %v\n", name, v, dir, errString(err))
	}
	return status
}
