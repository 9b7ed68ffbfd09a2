package config

import (
	"log/slog"
	"net"

	"github.com/mqcluster/mqcluster/node/admin"
)

// validateOps checks the admin endpoint and the drain.
func (c *Config) validateOps(v *validator) {
	if a := c.Admin.Address; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			v.add("admin.address", "%q: want host:port, or empty for none", a)
		}
	}
	if c.Admin.TokenFile != "" {
		ac := c.AdminConfig(nil)
		ac.Address = "127.0.0.1:0"
		if err := ac.Validate(); err != nil {
			v.add("admin.token_file", "%v", err)
		}
	}
	d := &c.Drain
	v.check(d.Rate >= 0, "drain.rate", "%v: want >= 0 (0: all at once)", d.Rate)
	v.check(d.Timeout > 0, "drain.timeout", "%v: want > 0", d.Timeout)
	v.check(d.HandoffGrace >= 0, "drain.handoff_grace", "%v: want >= 0", d.HandoffGrace)
}

// AdminConfig is the admin endpoint's part (Admin.Address set). The node
// id, version and leave hook are the caller's to fill in.
func (c *Config) AdminConfig(log *slog.Logger) admin.Config {
	a := admin.DefaultConfig()
	a.Address, a.TokenFile, a.Logger = c.Admin.Address, c.Admin.TokenFile, log
	a.NodeID = c.Cluster.NodeID
	return a
}

// AdminIsLoopback reports whether the admin endpoint is bound to loopback
// addresses only: otherwise it is worth a word at start.
func (c *Config) AdminIsLoopback() bool {
	host, _, err := net.SplitHostPort(c.Admin.Address)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
