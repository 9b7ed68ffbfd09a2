package main

import (
	"fmt"
	"math/rand"
	"strings"
	"time"
)

// Fault is one scheduled fault: it starts At after the fault phase begins
// and stops Dur later. Nodes are fixed by the seed, except for kinds that
// name the leader, resolved when the fault starts.
type Fault struct {
	Family string        `json:"family"` // partition, kill, pause, slow, membership
	Kind   string        `json:"kind"`
	Nodes  []int         `json:"nodes,omitempty"`
	Comps  [][]int       `json:"components,omitempty"`
	At     time.Duration `json:"at"`
	Dur    time.Duration `json:"duration"`
}

func (f Fault) String() string {
	s := f.Family + "/" + f.Kind
	if len(f.Comps) > 0 {
		s += fmt.Sprint(f.Comps)
	} else if len(f.Nodes) > 0 {
		s += fmt.Sprint(f.Nodes)
	}
	return s
}

// Families are the fault families in a fixed order.
var Families = []string{"partition", "kill", "pause", "slow", "membership"}

// Schedule builds the faults for a fault phase of length total: a quiet
// start, then one fault at a time, each lasting 10 ± 5 s with 2-6 s of
// calm between. With cover, the first faults take every family once (in
// a seeded order) so a short run meets each of them.
func Schedule(seed int64, n int, families []string, total time.Duration, cover bool) []Fault {
	r := rand.New(rand.NewSource(seed))
	var out []Fault
	t := 6 * time.Second
	var order []string
	if cover {
		for _, i := range r.Perm(len(families)) {
			order = append(order, families[i])
		}
	}
	for k := 0; ; k++ {
		dur := time.Duration(5000+r.Intn(10001)) * time.Millisecond
		if cover && k < len(order) {
			dur = time.Duration(6000+r.Intn(4001)) * time.Millisecond
		}
		if t+dur > total {
			break
		}
		fam := families[r.Intn(len(families))]
		if k < len(order) {
			fam = order[k]
		}
		f := makeFault(r, n, fam)
		f.At, f.Dur = t, dur
		out = append(out, f)
		t += dur + time.Duration(2000+r.Intn(4001))*time.Millisecond
	}
	return out
}

func makeFault(r *rand.Rand, n int, family string) Fault {
	f := Fault{Family: family}
	perm := r.Perm(n)
	switch family {
	case "partition":
		kinds := []string{"isolate-one", "majority-minority", "ring", "bridge", "isolate-leader"}
		f.Kind = kinds[r.Intn(len(kinds))]
		switch f.Kind {
		case "isolate-one":
			f.Comps = [][]int{{perm[0]}, perm[1:]}
		case "majority-minority":
			f.Comps = [][]int{perm[:n/2], perm[n/2:]}
		case "ring":
			// Each node reaches its two neighbours: every node sees a
			// majority, no two see the same one.
			for i := range perm {
				f.Comps = append(f.Comps, []int{perm[i], perm[(i+1)%n]})
			}
		case "bridge":
			// Two halves that only the middle node connects.
			h := n / 2
			f.Comps = [][]int{perm[:h+1], perm[h:]}
		}
	case "kill":
		f.Kind = "one"
		f.Nodes = perm[:1]
		if n >= 5 && r.Intn(3) == 0 {
			f.Kind, f.Nodes = "minority", perm[:2]
		}
		if r.Intn(4) == 0 {
			f.Kind, f.Nodes = "leader", nil
		}
	case "pause":
		f.Kind, f.Nodes = "one", perm[:1]
		if r.Intn(3) == 0 {
			f.Kind, f.Nodes = "leader", nil
		}
	case "slow":
		f.Kind, f.Nodes = "one", perm[:1]
		if r.Intn(3) == 0 {
			f.Kind, f.Nodes = "all", perm
		}
	case "membership":
		f.Kind, f.Nodes = "remove-readd", perm[:1]
	}
	return f
}

// parseFamilies reads a comma-separated list, "all" for every family.
func parseFamilies(s string) ([]string, error) {
	if s == "" || s == "all" {
		return append([]string(nil), Families...), nil
	}
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		ok := false
		for _, g := range Families {
			ok = ok || g == f
		}
		if !ok {
			return nil, fmt.Errorf("unknown fault family %q (have %s)", f, strings.Join(Families, ", "))
		}
		out = append(out, f)
	}
	return out, nil
}
