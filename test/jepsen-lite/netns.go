package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// Network is the run's namespaces: a hub holding the bridge, one namespace
// per node, and a veth from the root namespace (where clients run) to the
// hub. Everything it creates is named after the harness's pid.
type Network struct {
	Prefix   string   // mqjl-<pid>-
	Hub      string   // hub namespace
	RootIf   string   // veth end in the root namespace
	Subnet   string   // 10.213.X
	NodeNS   []string // namespace per node
	NodeIPs  []string
	ClientIP string
}

var staleNS = regexp.MustCompile(`^mqjl-(\d+)-`)
var staleLink = regexp.MustCompile(`^mqjl(\d+)h`)

// run runs a command and returns its combined output as an error on failure.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNS runs a command inside namespace ns.
func inNS(ns string, args ...string) error {
	return run("ip", append([]string{"netns", "exec", ns}, args...)...)
}

// checkPrivileges says clearly what is missing: root, ip, nft.
func checkPrivileges() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("jepsen-lite needs root (network namespaces, nftables); run it with sudo or as root")
	}
	missing := func() []string {
		var out []string
		for _, tool := range []string{"ip", "nft", "tc"} {
			if _, err := exec.LookPath(tool); err != nil {
				out = append(out, tool)
			}
		}
		return out
	}
	if m := missing(); len(m) > 0 {
		// A fresh Debian machine: install them.
		if _, err := exec.LookPath("apt-get"); err == nil {
			fmt.Fprintf(os.Stderr, "jepsen-lite: %v missing; installing iproute2 and nftables\n", m)
			run("apt-get", "update", "-qq")
			cmd := exec.Command("apt-get", "install", "-y", "-qq", "iproute2", "nftables")
			cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
			cmd.Run()
		}
	}
	if m := missing(); len(m) > 0 {
		return fmt.Errorf("%v not found: apt-get install -y iproute2 nftables", m)
	}
	if err := run("ip", "netns", "list"); err != nil {
		return fmt.Errorf("network namespaces not permitted here: %v", err)
	}
	return nil
}

// pidAlive reports whether pid is a running process.
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || err == syscall.EPERM
}

// CleanupStale removes namespaces and links of earlier runs whose harness
// process is gone, killing the processes left inside them.
func CleanupStale(logf func(string, ...any)) {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		m := staleNS.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		if pid, _ := strconv.Atoi(m[1]); pidAlive(pid) {
			continue
		}
		logf("removing stale namespace %s", f[0])
		killNSProcs(f[0])
		run("ip", "netns", "del", f[0])
	}
	out, _ = exec.Command("ip", "-o", "link", "show").Output()
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0]
		m := staleLink.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		if pid, _ := strconv.Atoi(m[1]); pidAlive(pid) {
			continue
		}
		logf("removing stale link %s", name)
		run("ip", "link", "del", name)
	}
}

// killNSProcs kills every process in namespace ns, by pid.
func killNSProcs(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, p := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(p); err == nil && pid > 1 {
			syscall.Kill(pid, syscall.SIGCONT)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// NewNetwork creates the hub, n node namespaces and the root's veth.
func NewNetwork(n int) (*Network, error) {
	pid := os.Getpid()
	nw := &Network{Prefix: fmt.Sprintf("mqjl-%d-", pid), RootIf: fmt.Sprintf("mqjl%dh", pid),
		Subnet: fmt.Sprintf("10.213.%d", pid%250+1)}
	nw.Hub = nw.Prefix + "hub"
	nw.ClientIP = nw.Subnet + ".1"
	steps := [][]string{
		{"ip", "netns", "add", nw.Hub},
		{"ip", "-n", nw.Hub, "link", "set", "lo", "up"},
		{"ip", "-n", nw.Hub, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", nw.Hub, "link", "set", "br0", "up"},
		{"ip", "link", "add", nw.RootIf, "type", "veth", "peer", "name", "up0", "netns", nw.Hub},
		{"ip", "-n", nw.Hub, "link", "set", "up0", "master", "br0"},
		{"ip", "-n", nw.Hub, "link", "set", "up0", "up"},
		{"ip", "addr", "add", nw.ClientIP + "/24", "dev", nw.RootIf},
		{"ip", "link", "set", nw.RootIf, "up"},
	}
	for i := 0; i < n; i++ {
		ns := fmt.Sprintf("%sn%d", nw.Prefix, i)
		ip := fmt.Sprintf("%s.%d", nw.Subnet, 11+i)
		port := fmt.Sprintf("n%d", i)
		nw.NodeNS = append(nw.NodeNS, ns)
		nw.NodeIPs = append(nw.NodeIPs, ip)
		steps = append(steps,
			[]string{"ip", "netns", "add", ns},
			[]string{"ip", "-n", ns, "link", "set", "lo", "up"},
			[]string{"ip", "-n", nw.Hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"ip", "-n", nw.Hub, "link", "set", port, "master", "br0"},
			[]string{"ip", "-n", nw.Hub, "link", "set", port, "up"},
			[]string{"ip", "-n", ns, "addr", "add", ip + "/24", "dev", "eth0"},
			[]string{"ip", "-n", ns, "link", "set", "eth0", "up"},
		)
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			nw.Close()
			return nil, err
		}
	}
	for _, ns := range nw.NodeNS {
		if err := initFirewall(ns); err != nil {
			nw.Close()
			return nil, err
		}
	}
	return nw, nil
}

// Close kills what runs in the namespaces and removes them and the links.
func (nw *Network) Close() {
	for _, ns := range nw.NodeNS {
		killNSProcs(ns)
		run("ip", "netns", "del", ns)
	}
	run("ip", "link", "del", nw.RootIf)
	run("ip", "netns", "del", nw.Hub)
}
