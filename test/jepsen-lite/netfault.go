package main

import (
	"fmt"
	"os/exec"
	"strings"
)

// Network faults live inside the node namespaces: an nftables table
// "mqjl" whose set "blocked" holds the addresses of the nodes this node
// cannot reach (both directions dropped), and an htb qdisc on eth0 whose
// slow class carries traffic to the other nodes when a link is slowed.

const firewall = `table inet mqjl {
	set blocked { type ipv4_addr; }
	chain in { type filter hook input priority -10; policy accept; ip saddr @blocked drop; }
	chain out { type filter hook output priority -10; policy accept; ip daddr @blocked drop; }
}
`

// initFirewall installs the (empty) partition table in namespace ns.
func initFirewall(ns string) error {
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(firewall)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", ns, err, out)
	}
	return nil
}

// setBlocked replaces the set of addresses namespace ns drops.
func setBlocked(ns string, ips []string) error {
	script := "flush set inet mqjl blocked\n"
	if len(ips) > 0 {
		script += "add element inet mqjl blocked { " + strings.Join(ips, ", ") + " }\n"
	}
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %v: %s", ns, err, out)
	}
	return nil
}

// Partition applies components: every node drops traffic with the nodes
// outside the components it is in (a node may be in several, as in a ring
// or a bridge). Nodes in no component are cut from all.
func (nw *Network) Partition(components [][]int) error {
	for i, ns := range nw.NodeNS {
		reach := map[int]bool{i: true}
		for _, c := range components {
			in := false
			for _, m := range c {
				in = in || m == i
			}
			if in {
				for _, m := range c {
					reach[m] = true
				}
			}
		}
		var blocked []string
		for j, ip := range nw.NodeIPs {
			if !reach[j] {
				blocked = append(blocked, ip)
			}
		}
		if err := setBlocked(ns, blocked); err != nil {
			return err
		}
	}
	return nil
}

// Heal removes every partition rule.
func (nw *Network) Heal() error {
	var first error
	for _, ns := range nw.NodeNS {
		if err := setBlocked(ns, nil); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// SlowLink limits what node i sends to the other nodes to rate (an htb
// class), adding delay with netem when the kernel has it. It returns a
// note saying which of the two was possible.
func (nw *Network) SlowLink(i int, rate string, delay string) (string, error) {
	ns := nw.NodeNS[i]
	steps := [][]string{
		{"tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "htb", "default", "1"},
		{"tc", "class", "replace", "dev", "eth0", "parent", "1:", "classid", "1:1", "htb", "rate", "10gbit"},
		{"tc", "class", "replace", "dev", "eth0", "parent", "1:", "classid", "1:2", "htb", "rate", rate, "ceil", rate},
	}
	for j, ip := range nw.NodeIPs {
		if j != i {
			steps = append(steps, []string{"tc", "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip",
				"prio", "1", "u32", "match", "ip", "dst", ip + "/32", "flowid", "1:2"})
		}
	}
	for _, s := range steps {
		if err := inNS(ns, s...); err != nil {
			nw.Fast(i)
			return "", err
		}
	}
	note := "htb rate " + rate
	if delay != "" {
		if err := inNS(ns, "tc", "qdisc", "replace", "dev", "eth0", "parent", "1:2", "handle", "20:", "netem", "delay", delay); err != nil {
			note += " (no sch_netem in this kernel: no added delay)"
		} else {
			note += " + netem delay " + delay
		}
	}
	return note, nil
}

// Fast removes node i's rate limit.
func (nw *Network) Fast(i int) error {
	err := inNS(nw.NodeNS[i], "tc", "qdisc", "del", "dev", "eth0", "root")
	if err != nil && strings.Contains(err.Error(), "No such file") {
		return nil
	}
	return err
}
