package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Nemesis starts and stops faults, recording each in the history.
type Nemesis struct {
	nw    *Network
	cl    *Cluster
	hist  *History
	bin   string
	ctlRm string // command template removing a voter: {id} {addr}
	logf  func(string, ...any)
	Notes []string
}

func (nm *Nemesis) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	for _, n := range nm.Notes {
		if n == s {
			return
		}
	}
	nm.Notes = append(nm.Notes, s)
	nm.logf("note: %s", s)
}

// resolve fixes the nodes of a leader fault when it starts.
func (nm *Nemesis) resolve(f Fault) Fault {
	if f.Kind == "leader" || f.Kind == "isolate-leader" {
		l := nm.cl.Leader()
		if l < 0 {
			l = 0
			nm.note("no leader known when a leader fault started; node 0 taken")
		}
		f.Nodes = []int{l}
		if f.Kind == "isolate-leader" {
			var rest []int
			for i := range nm.cl.Nodes {
				if i != l {
					rest = append(rest, i)
				}
			}
			f.Comps = [][]int{{l}, rest}
		}
	}
	return f
}

// Start applies f and returns it with its nodes resolved.
func (nm *Nemesis) Start(f Fault) Fault {
	f = nm.resolve(f)
	op := Op{Type: "info", F: "fault-start", Node: -1, Value: f.Family + "/" + f.Kind, Nodes: f.Nodes}
	var err error
	switch f.Family {
	case "partition":
		err = nm.nw.Partition(f.Comps)
		op.Nodes = nil
		for _, c := range f.Comps {
			op.Nodes = append(op.Nodes, c...)
			op.Nodes = append(op.Nodes, -1) // component separator
		}
	case "kill":
		for _, i := range f.Nodes {
			nm.cl.Kill(nm.cl.Nodes[i])
		}
	case "pause":
		for _, i := range f.Nodes {
			nm.cl.Pause(nm.cl.Nodes[i])
		}
	case "slow":
		for _, i := range f.Nodes {
			var note string
			note, err = nm.nw.SlowLink(i, "64kbit", "200ms")
			if note != "" {
				nm.note("slow link: %s", note)
			}
		}
	case "membership":
		err = nm.removeVoter(f.Nodes[0])
	}
	if err != nil {
		op.Error = err.Error()
	}
	nm.hist.Add(op)
	nm.logf("fault start %s %v", f, errString(err))
	return f
}

// Stop ends f.
func (nm *Nemesis) Stop(f Fault) {
	var err error
	switch f.Family {
	case "partition":
		err = nm.nw.Heal()
	case "kill":
		for _, i := range f.Nodes {
			if e := nm.cl.Start(nm.cl.Nodes[i]); e != nil {
				err = e
			}
		}
	case "pause":
		for _, i := range f.Nodes {
			nm.cl.Resume(nm.cl.Nodes[i])
		}
	case "slow":
		for _, i := range f.Nodes {
			nm.nw.Fast(i)
		}
	case "membership":
		// A removed node comes back as a new run of itself on its data
		// directory: it joins through gossip and is added as a voter again.
		n := nm.cl.Nodes[f.Nodes[0]]
		nm.cl.Kill(n)
		err = nm.cl.Start(n)
	}
	op := Op{Type: "info", F: "fault-stop", Node: -1, Value: f.Family + "/" + f.Kind, Nodes: f.Nodes}
	if err != nil {
		op.Error = err.Error()
	}
	nm.hist.Add(op)
	nm.logf("fault stop  %s %v", f, errString(err))
}

// HealAll ends every fault: network healed, links fast, paused nodes
// resumed, killed nodes restarted.
func (nm *Nemesis) HealAll() {
	nm.nw.Heal()
	for i, n := range nm.cl.Nodes {
		nm.nw.Fast(i)
		switch n.State() {
		case statePaused:
			nm.cl.Resume(n)
		case stateKilled:
			nm.cl.Start(n)
		}
	}
	nm.hist.Add(Op{Type: "info", F: "heal", Node: -1})
}

// ctlAvailable reports whether the binary has a ctl command.
func ctlAvailable(bin string) bool {
	out, _ := exec.Command(bin, "ctl", "--help").CombinedOutput()
	s := string(out)
	return strings.Contains(s, "remove") && !strings.Contains(s, "unknown") && !strings.Contains(s, "flag provided but not defined")
}

// removeVoter takes node i out of the cluster. With the default template
// ("ctl leave") the node itself leaves gracefully (drains its clients,
// hands over their sessions, leaves Raft and gossip, exits); a template
// naming {id} is run from another node that is up (ctl remove).
func (nm *Nemesis) removeVoter(i int) error {
	target := nm.cl.Nodes[i]
	from := target
	if strings.Contains(nm.ctlRm, "{id}") {
		from = nil
		for _, n := range nm.cl.Live() {
			if n.Index != i {
				from = n
				break
			}
		}
		if from == nil {
			return fmt.Errorf("no live node to remove %s from", target.ID)
		}
	} else {
		nm.cl.Expect(target)
	}
	cmdline := strings.NewReplacer("{id}", target.ID, "{addr}", from.IP).Replace(nm.ctlRm)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"netns", "exec", from.NS, nm.bin}, strings.Fields(cmdline)...)
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", cmdline, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return "error: " + err.Error()
}
