package config

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"slices"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/auth"
	"github.com/mqcluster/mqcluster/broker/listener"
	"github.com/mqcluster/mqcluster/node"
)

// defaultAddress is the address of a listener that names none.
var defaultAddress = map[string]string{"tcp": ":1883", "tls": ":8883", "ws": ":8080", "wss": ":8443"}

// normalize fills in what was left unset: one tcp listener on :1883 when
// there is none, listen as the address of the first tcp listener, the
// defaults inside each listener, the node id of a cluster node.
func (c *Config) normalize(listen string) {
	if len(c.Listeners) == 0 {
		c.Listeners = []Listener{{Type: "tcp", Address: defaultAddress["tcp"]}}
	}
	if listen != "" {
		if i := slices.IndexFunc(c.Listeners, func(l Listener) bool { return l.Type == "tcp" }); i >= 0 {
			c.Listeners[i].Address = listen
		} else {
			c.Listeners = append([]Listener{{Type: "tcp", Address: listen}}, c.Listeners...)
		}
	}
	for i := range c.Listeners {
		l := &c.Listeners[i]
		if l.Address == "" {
			l.Address = defaultAddress[l.Type]
		}
		if l.Path == "" && (l.Type == "ws" || l.Type == "wss") {
			l.Path = "/mqtt"
		}
		if t := l.TLS; t != nil {
			t.ClientAuth = cmp(t.ClientAuth, string(listener.ClientAuthNone))
			t.MinVersion = cmp(t.MinVersion, "1.2")
			t.Identity = cmp(t.Identity, string(listener.IdentityNone))
		}
	}
	if c.IsCluster() && c.Cluster.NodeID == "" {
		c.Cluster.NodeID, _ = os.Hostname()
	}
}

func cmp(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// IsCluster reports whether the broker runs as a cluster node.
func (c *Config) IsCluster() bool { return c.Cluster.BootstrapExpect > 0 || len(c.Cluster.Join) > 0 }

// AuthConfigured reports whether clients are authenticated: a password
// file or JWT keys.
func (c *Config) AuthConfigured() bool { return c.Auth.PasswordFile != "" || c.Auth.JWT != nil }

// BrokerConfig is the broker's part.
func (c *Config) BrokerConfig() broker.Config {
	b := broker.DefaultConfig()
	l, m := &c.Limits, &c.MQTT
	b.MaxPacketSize, b.ConnectTimeout, b.MaxKeepAlive = l.MaxPacketSize, l.ConnectTimeout, l.MaxKeepAlive
	b.ReceiveMaximum, b.MaxInflight, b.MaxAwaitingRel = l.ReceiveMaximum, l.MaxInflight, l.MaxAwaitingRel
	b.TopicAliasMaximum, b.OutboundTopicAliases = l.TopicAliasMaximum, l.OutboundTopicAliases
	b.MaxTopicLevels, b.MaxClientIDLen, b.MaxSessionExpiry = l.MaxTopicLevels, l.MaxClientIDLen, l.MaxSessionExpiry
	b.QueueMessages, b.QueueBytes, b.DropOldest, b.QueueQoS0 = l.MaxQueuedMessages, l.MaxQueuedBytes, l.DropOldest, l.QueueQoS0
	b.WriteQueueBytes, b.WriteTimeout = l.WriteQueueBytes, l.WriteTimeout
	b.MaxConnections, b.MaxConnectionsPerIP = l.MaxConnections, l.MaxConnectionsPerIP
	b.ConnectRate, b.ConnectBurst = l.ConnectRate, l.ConnectBurst
	b.MaxPublishRate, b.PublishBurst = l.MaxPublishRate, l.PublishBurst
	b.MaximumQoS, b.RetainAvailable = m.MaximumQoS, m.RetainAvailable
	b.WildcardSubscriptions, b.SubscriptionIdentifiers, b.SharedSubscriptions = m.WildcardSubscriptions, m.SubscriptionIdentifiers, m.SharedSubscriptions
	b.SharedStrategy = broker.SharedStrategy(m.SharedStrategy)
	b.ServerReference, b.ResponseInformation, b.SysInterval = m.ServerReference, m.ResponseInformation, m.SysInterval
	b.ClusterTimeout, b.MoveTimeout = c.Cluster.Timeout, c.Cluster.MoveTimeout
	return b
}

// NodeConfig is the cluster node's part (IsCluster).
func (c *Config) NodeConfig(log *slog.Logger) (node.Config, error) {
	n := node.DefaultConfig()
	cl := &c.Cluster
	n.NodeID, n.DataDir, n.BootstrapExpect, n.Join = cl.NodeID, c.DataDir, cl.BootstrapExpect, cl.Join
	n.RaftAddr, n.RaftAdvertise, n.GossipAddr, n.GRPCAddr = cl.RaftAddr, cl.RaftAdvertise, cl.GossipAddr, cl.GRPCAddr
	n.MaxVoters, n.ApplyTimeout, n.NodeDownAfter, n.Logger = cl.MaxVoters, cl.ApplyTimeout, cl.NodeDownAfter, log
	n.TLSCertFile, n.TLSKeyFile, n.TLSCAFile = cl.TLSCertFile, cl.TLSKeyFile, cl.TLSCAFile
	n.SessionHold, n.ContactLease = cl.SessionHold, cl.ContactLease
	if cl.GossipKeyFile != "" {
		key, err := readGossipKey(cl.GossipKeyFile)
		if err != nil {
			return n, fmt.Errorf("config: cluster.gossip_key_file: %w", err)
		}
		n.GossipKey = key
	}
	return n, nil
}

// readGossipKey reads a memberlist key: 16, 24 or 32 bytes, raw or in
// base64 (as `openssl rand -base64 32` writes it).
func readGossipKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if t := bytes.TrimSpace(b); len(t) > 0 {
		if k, err := base64.StdEncoding.DecodeString(string(t)); err == nil && validKeyLen(len(k)) {
			return k, nil
		}
	}
	if !validKeyLen(len(b)) {
		return nil, fmt.Errorf("%d bytes: want a key of 16, 24 or 32 bytes, raw or in base64", len(b))
	}
	return b, nil
}

func validKeyLen(n int) bool { return n == 16 || n == 24 || n == 32 }

// Anonymous is the anonymous policy of listener i: its allow_anonymous,
// else auth.allow_anonymous, else refused when clients are authenticated,
// else allowed from loopback addresses only.
func (c *Config) Anonymous(i int) listener.Anonymous {
	allow := c.Listeners[i].AllowAnonymous
	if allow == nil {
		allow = c.Auth.AllowAnonymous
	}
	switch {
	case allow != nil && *allow:
		return listener.AnonymousAllow
	case allow != nil || c.AuthConfigured():
		return listener.AnonymousDeny
	}
	return listener.AnonymousLoopback
}

// ListenerConfig is listener i's configuration.
func (c *Config) ListenerConfig(i int, log *slog.Logger) (listener.Config, error) {
	l := c.Listeners[i]
	lc := listener.Config{Type: listener.Type(l.Type), Address: l.Address, ProxyProtocol: l.ProxyProtocol,
		Anonymous: c.Anonymous(i), Path: l.Path, AllowedOrigins: l.AllowedOrigins,
		HandshakeTimeout: c.Limits.ConnectTimeout, MaxMessageSize: c.Limits.MaxPacketSize, Logger: log}
	if t := l.TLS; t != nil {
		lc.TLS = &listener.TLSConfig{CertFile: t.CertFile, KeyFile: t.KeyFile, ClientCAFile: t.ClientCAFile,
			ClientAuth: listener.ClientAuth(t.ClientAuth), Identity: listener.Identity(t.Identity)}
		switch t.MinVersion {
		case "1.2":
			lc.TLS.MinVersion = tls.VersionTLS12
		case "1.3":
			lc.TLS.MinVersion = tls.VersionTLS13
		default:
			return lc, fmt.Errorf("tls.min_version: %q: want 1.2 or 1.3", t.MinVersion)
		}
	}
	return lc, nil
}

// AuthConfig is the configuration of package auth, and whether there is
// anything for it to do (a password file, an ACL file or JWT keys).
// Anonymous clients are the listeners' decision (Anonymous): the auth
// package admits those the listener let through.
func (c *Config) AuthConfig(log *slog.Logger) (auth.Config, bool) {
	a := auth.DefaultConfig()
	a.PasswordFile, a.ACLFile, a.AllowAnonymous, a.Logger = c.Auth.PasswordFile, c.Auth.ACLFile, true, log
	if j := c.Auth.JWT; j != nil {
		a.JWT = &auth.JWTConfig{SecretFile: j.SecretFile, PublicKeyFile: j.PublicKeyFile, JWKSFile: j.JWKSFile,
			Issuer: j.Issuer, Audience: j.Audience, UsernameClaim: j.UsernameClaim, Leeway: j.Leeway, AllowNoExpiry: j.AllowNoExpiry}
	}
	return a, a.PasswordFile != "" || a.ACLFile != "" || a.JWT != nil
}
