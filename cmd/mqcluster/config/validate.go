package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/listener"
)

// maxPacketSize is the largest MQTT packet: a remaining length of
// 268,435,455 bytes plus a fixed header of 5.
const maxPacketSize = 268435460

// Validate reports every bad setting, each as "config: key: what is wrong".
// Files the configuration names must be readable, and TLS certificates
// must load.
func (c *Config) Validate() error {
	v := &validator{}
	var lvl slog.Level
	if lvl.UnmarshalText([]byte(c.Log.Level)) != nil {
		v.add("log.level", "%q: want debug, info, warn or error", c.Log.Level)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		v.add("log.format", "%q: want text or json", c.Log.Format)
	}
	c.validateListeners(v)
	c.validateLimits(v)
	m := &c.MQTT
	v.check(m.MaximumQoS <= 2, "mqtt.maximum_qos", "%d: want 0, 1 or 2", m.MaximumQoS)
	switch broker.SharedStrategy(m.SharedStrategy) {
	case broker.ShareRoundRobin, broker.ShareRandom, broker.ShareSticky, broker.ShareHash:
	default:
		v.add("mqtt.shared_strategy", "%q: want round_robin, random, sticky or hash", m.SharedStrategy)
	}
	v.check(m.SysInterval >= 0, "mqtt.sys_interval", "%v: want >= 0", m.SysInterval)
	c.validateCluster(v)
	c.validateAuth(v)
	c.validateOps(v)
	if len(v.errs) == 0 {
		// What the broker checks itself, in case it knows more.
		b := c.BrokerConfig()
		if err := b.Validate(); err != nil {
			v.errs = append(v.errs, fmt.Errorf("config: %w", err))
		}
	}
	return errors.Join(v.errs...)
}

type validator struct{ errs []error }

func (v *validator) add(key, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...)))
}

func (v *validator) check(ok bool, key, format string, args ...any) {
	if !ok {
		v.add(key, format, args...)
	}
}

// file checks that the file a key names can be read.
func (v *validator) file(key, path string) {
	if path == "" {
		return
	}
	f, err := os.Open(path)
	if err != nil {
		v.add(key, "%v", err)
		return
	}
	f.Close()
}

func (c *Config) validateListeners(v *validator) {
	for i, l := range c.Listeners {
		key := fmt.Sprintf("listeners[%d]", i)
		lc, err := c.ListenerConfig(i, nil)
		if err != nil {
			v.errs = append(v.errs, fmt.Errorf("config: %s.%w", key, err))
			continue
		}
		for _, err := range listener.Unjoin(lc.Validate()) {
			v.errs = append(v.errs, fmt.Errorf("config: %s.%w", key, err))
		}
		ws := l.Type == "ws" || l.Type == "wss"
		v.check(ws || l.Path == "", key+".path", "only for ws and wss listeners")
		v.check(ws || len(l.AllowedOrigins) == 0, key+".allowed_origins", "only for ws and wss listeners")
		for j := range i {
			if c.Listeners[j].Address == l.Address && l.Address != "" && !isPortZero(l.Address) {
				v.add(key+".address", "%q: also the address of listeners[%d]", l.Address, j)
			}
		}
	}
}

func isPortZero(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port == "0"
}

func (c *Config) validateLimits(v *validator) {
	l := &c.Limits
	v.check(l.MaxPacketSize >= 16 && l.MaxPacketSize <= maxPacketSize, "limits.max_packet_size", "%d: must be between 16 and %d", l.MaxPacketSize, maxPacketSize)
	v.check(l.ConnectTimeout > 0, "limits.connect_timeout", "%v: want > 0", l.ConnectTimeout)
	v.check(l.ReceiveMaximum >= 1, "limits.receive_maximum", "0: want 1..65535")
	v.check(l.MaxInflight >= 1 && l.MaxInflight <= 65000, "limits.max_inflight", "%d: want 1..65000", l.MaxInflight)
	v.check(l.MaxAwaitingRel > 0, "limits.max_awaiting_rel", "%d: want > 0", l.MaxAwaitingRel)
	v.check(l.MaxTopicLevels > 0, "limits.max_topic_levels", "%d: want > 0", l.MaxTopicLevels)
	v.check(l.MaxClientIDLen >= 23 && l.MaxClientIDLen <= 65535, "limits.max_client_id_len", "%d: want 23..65535", l.MaxClientIDLen)
	v.check(l.MaxQueuedMessages > 0, "limits.max_queued_messages", "%d: want > 0", l.MaxQueuedMessages)
	v.check(l.MaxQueuedBytes > 0, "limits.max_queued_bytes", "%d: want > 0", l.MaxQueuedBytes)
	v.check(l.WriteQueueBytes > 0, "limits.write_queue_bytes", "%d: want > 0", l.WriteQueueBytes)
	v.check(l.WriteTimeout > 0, "limits.write_timeout", "%v: want > 0", l.WriteTimeout)
	v.check(l.MaxConnections >= 0, "limits.max_connections", "%d: want >= 0 (0: no bound)", l.MaxConnections)
	v.check(l.MaxConnectionsPerIP >= 0, "limits.max_connections_per_ip", "%d: want >= 0 (0: no bound)", l.MaxConnectionsPerIP)
	v.check(l.ConnectRate >= 0, "limits.connect_rate", "%v: want >= 0 (0: no bound)", l.ConnectRate)
	v.check(l.ConnectRate == 0 || l.ConnectBurst > 0, "limits.connect_burst", "%d: want > 0 with a connect_rate", l.ConnectBurst)
	v.check(l.MaxPublishRate >= 0, "limits.max_publish_rate", "%v: want >= 0 (0: no bound)", l.MaxPublishRate)
	v.check(l.MaxPublishRate == 0 || l.PublishBurst > 0, "limits.publish_burst", "%d: want > 0 with a max_publish_rate", l.PublishBurst)
}

func (c *Config) validateCluster(v *validator) {
	cl := &c.Cluster
	v.check(cl.BootstrapExpect >= 0, "cluster.bootstrap_expect", "%d: want >= 0", cl.BootstrapExpect)
	v.check(cl.Timeout > 0, "cluster.timeout", "%v: want > 0", cl.Timeout)
	if !c.IsCluster() {
		return
	}
	v.check(c.DataDir != "", "data_dir", "a cluster node needs a data directory")
	v.check(cl.NodeID != "", "cluster.node_id", "required (the host name is unknown)")
	for key, addr := range map[string]string{"cluster.raft_addr": cl.RaftAddr, "cluster.gossip_addr": cl.GossipAddr, "cluster.grpc_addr": cl.GRPCAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			v.add(key, "%q: want host:port", addr)
		}
	}
	if cl.RaftAdvertise != "" {
		if _, _, err := net.SplitHostPort(cl.RaftAdvertise); err != nil {
			v.add("cluster.raft_advertise", "%q: want host:port", cl.RaftAdvertise)
		}
	}
	for i, seed := range cl.Join {
		if _, _, err := net.SplitHostPort(seed); err != nil {
			v.add(fmt.Sprintf("cluster.join[%d]", i), "%q: want host:port", seed)
		}
	}
	v.check(cl.MaxVoters >= 1, "cluster.max_voters", "%d: want >= 1", cl.MaxVoters)
	v.check(cl.ApplyTimeout > 0, "cluster.apply_timeout", "%v: want > 0", cl.ApplyTimeout)
	v.check(cl.NodeDownAfter > 0, "cluster.node_down_after", "%v: want > 0", cl.NodeDownAfter)
	v.check(cl.ContactLease > 0, "cluster.contact_lease", "%v: want > 0", cl.ContactLease)
	v.check(cl.SessionHold >= 0, "cluster.session_hold", "%v: want >= 0", cl.SessionHold)
	v.check(cl.MoveTimeout > 0, "cluster.move_timeout", "%v: want > 0", cl.MoveTimeout)
	if cl.GossipKeyFile != "" {
		if _, err := readGossipKey(cl.GossipKeyFile); err != nil {
			v.add("cluster.gossip_key_file", "%v", err)
		}
	}
	set := 0
	for _, f := range []string{cl.TLSCertFile, cl.TLSKeyFile, cl.TLSCAFile} {
		if f != "" {
			set++
		}
	}
	v.check(set == 0 || set == 3, "cluster.tls_cert_file", "tls_cert_file, tls_key_file and tls_ca_file go together")
	v.file("cluster.tls_cert_file", cl.TLSCertFile)
	v.file("cluster.tls_key_file", cl.TLSKeyFile)
	v.file("cluster.tls_ca_file", cl.TLSCAFile)
}

func (c *Config) validateAuth(v *validator) {
	a := &c.Auth
	v.file("auth.password_file", a.PasswordFile)
	v.file("auth.acl_file", a.ACLFile)
	j := a.JWT
	if j == nil {
		return
	}
	n := 0
	for _, kf := range []struct{ key, path string }{{"secret_file", j.SecretFile}, {"public_key_file", j.PublicKeyFile}, {"jwks_file", j.JWKSFile}} {
		if kf.path != "" {
			n++
			v.file("auth.jwt."+kf.key, kf.path)
		}
	}
	v.check(n == 1, "auth.jwt", "set exactly one of secret_file, public_key_file and jwks_file")
	v.check(j.Leeway >= 0, "auth.jwt.leeway", "%v: want >= 0", j.Leeway)
}

// LoopbackOnlyAnonymous reports the listeners that admit anonymous clients from loopback
// addresses only while bound to other interfaces too: the case worth a
// word at start.
func (c *Config) LoopbackOnlyAnonymous() []int {
	var out []int
	for i, l := range c.Listeners {
		if c.Anonymous(i) == listener.AnonymousLoopback && !listener.IsLoopbackAddress(l.Address) {
			out = append(out, i)
		}
	}
	return out
}
