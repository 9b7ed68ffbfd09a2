package k8s_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/auth"
	"github.com/mqcluster/mqcluster/broker/packet"
	"github.com/mqcluster/mqcluster/cmd/mqcluster/config"
)

// The pod the tests pretend to be.
const (
	podName  = "mqcluster-0"
	podIP    = "10.244.1.7"
	memLimit = "1073741824"
)

// TestBaseFitsTheBinary loads the base's configuration with the pod's
// environment and arguments, as mqcluster would in mqcluster-0, and checks
// that the manifests agree with it: ports, mount paths, probes, the join
// seeds and the node id.
func TestBaseFitsTheBinary(t *testing.T) {
	sts := readStatefulSet(t, "base/statefulset.yaml")
	svcs := readServices(t, "base/service.yaml")
	c := sts.container(t)
	cfg := loadPodConfig(t, sts, "base/mqcluster.yaml")

	if !cfg.IsCluster() || cfg.Cluster.BootstrapExpect != sts.Spec.Replicas {
		t.Errorf("cluster.bootstrap_expect = %d, want the %d replicas", cfg.Cluster.BootstrapExpect, sts.Spec.Replicas)
	}
	if cfg.Cluster.NodeID != podName {
		t.Errorf("cluster.node_id = %q, want the pod name %q", cfg.Cluster.NodeID, podName)
	}
	if sts.Spec.PodManagementPolicy != "Parallel" {
		t.Errorf("podManagementPolicy %q: no pod is ready before the cluster forms, so the pods must start in parallel", sts.Spec.PodManagementPolicy)
	}

	// Node-to-node addresses: bound to the pod IP, on the declared ports.
	for key, a := range map[string]struct{ addr, port string }{
		"cluster.raft_addr":   {cfg.Cluster.RaftAddr, "raft"},
		"cluster.grpc_addr":   {cfg.Cluster.GRPCAddr, "grpc"},
		"cluster.gossip_addr": {cfg.Cluster.GossipAddr, "gossip"},
	} {
		host, port := splitHostPort(t, a.addr)
		if host != podIP {
			t.Errorf("%s = %q: want the pod IP, the address peers dial", key, a.addr)
		}
		if want := c.port(t, a.port, "TCP"); port != want {
			t.Errorf("%s = %q: want the container port %q (%d)", key, a.addr, a.port, want)
		}
	}
	if want := c.port(t, "gossip", "TCP"); c.port(t, "gossip-udp", "UDP") != want {
		t.Errorf("memberlist uses TCP and UDP on one port: gossip-udp differs from gossip")
	}

	// Joining through the headless Service, which lists unready pods.
	headless := svcs[sts.Spec.ServiceName]
	if headless == nil || headless.Spec.ClusterIP != "None" || !headless.Spec.PublishNotReadyAddresses {
		t.Fatalf("serviceName %q: want a headless Service with publishNotReadyAddresses", sts.Spec.ServiceName)
	}
	if len(cfg.Cluster.Join) == 0 {
		t.Errorf("cluster.join is empty")
	}
	for _, seed := range cfg.Cluster.Join {
		host, port := splitHostPort(t, seed)
		if host != headless.Metadata.Name || port != headless.port(t, "gossip") {
			t.Errorf("cluster.join seed %q: want %s:%d, the headless Service's gossip port", seed, headless.Metadata.Name, headless.port(t, "gossip"))
		}
	}
	for _, svc := range svcs {
		if !maps(svc.Spec.Selector, sts.Spec.Selector.MatchLabels) {
			t.Errorf("Service %s selects %v, not the pods (%v)", svc.Metadata.Name, svc.Spec.Selector, sts.Spec.Selector.MatchLabels)
		}
		for _, p := range svc.Spec.Ports {
			c.port(t, p.TargetPort, cmpOr(p.Protocol, "TCP"))
		}
	}

	// Every listener has a container port, and every port of the client
	// Service leads to a listener.
	listening := map[int]bool{}
	for _, l := range cfg.Listeners {
		_, port := splitHostPort(t, l.Address)
		listening[port] = true
		if !slices.ContainsFunc(c.Ports, func(p containerPort) bool { return p.ContainerPort == port }) {
			t.Errorf("listener %s %s has no container port", l.Type, l.Address)
		}
	}
	clients := svcs["mqcluster"]
	if clients == nil || clients.Spec.Type != "LoadBalancer" {
		t.Fatalf("want a LoadBalancer Service mqcluster for clients")
	}
	for _, p := range clients.Spec.Ports {
		if !listening[c.port(t, p.TargetPort, "TCP")] {
			t.Errorf("client Service port %s (%d) leads to no listener", p.Name, p.Port)
		}
	}

	// Probes on the admin server.
	for name, p := range map[string]*probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		want := map[string]string{"startup": "/healthz", "liveness": "/healthz", "readiness": "/readyz"}[name]
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != want {
			t.Errorf("%s probe: want GET %s", name, want)
			continue
		}
		_, adminPort := splitHostPort(t, cfg.Admin.Address)
		if got := c.port(t, p.HTTPGet.Port, "TCP"); got != adminPort {
			t.Errorf("%s probe on port %d, the admin server listens on %d", name, got, adminPort)
		}
	}

	// Time to drain: the preStop pause, then what docs/configuration.md
	// asks for, drain.timeout + drain.handoff_grace + 10 s.
	need := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds)*time.Second + cfg.Drain.Timeout + cfg.Drain.HandoffGrace + 10*time.Second
	if grace := time.Duration(sts.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second; grace < need {
		t.Errorf("terminationGracePeriodSeconds %v: the preStop pause and the drain take up to %v", grace, need)
	}

	// State on the volume claim, files where the volumes are mounted.
	if mountOf(t, c, sts.Spec.VolumeClaimTemplates[0].Metadata.Name) != cfg.DataDir {
		t.Errorf("data_dir %q is not where the volume claim %q is mounted", cfg.DataDir, sts.Spec.VolumeClaimTemplates[0].Metadata.Name)
	}
	// The configuration file and the files it names (certificate, key,
	// password file) were read from where the volumes are mounted:
	// loadPodConfig put them nowhere else.
}

// TestBaseRunsLocked checks the pod's security settings and its time to
// drain.
func TestBaseRunsLocked(t *testing.T) {
	sts := readStatefulSet(t, "base/statefulset.yaml")
	pod, c := sts.Spec.Template.Spec, sts.container(t)
	if !pod.SecurityContext.RunAsNonRoot || pod.SecurityContext.RunAsUser == 0 || pod.SecurityContext.FSGroup == 0 {
		t.Errorf("pod securityContext %+v: want runAsNonRoot, a user and an fsGroup", pod.SecurityContext)
	}
	sc := c.SecurityContext
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !sc.ReadOnlyRootFilesystem ||
		!slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("container securityContext %+v: want no privilege escalation, a read-only root and no capabilities", sc)
	}
	if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
	}
	if !pod.AutomountServiceAccountToken.isFalse() {
		t.Errorf("automountServiceAccountToken: the broker does not talk to the API server")
	}
	if !pod.EnableServiceLinks.isFalse() {
		t.Errorf("enableServiceLinks: the Service mqcluster would put MQCLUSTER_* variables in the environment")
	}
}

// TestDemoFitsTheBinary loads the demo overlay's configuration and checks
// that its user can log in.
func TestDemoFitsTheBinary(t *testing.T) {
	sts := readStatefulSet(t, "base/statefulset.yaml")
	cfg := loadPodConfig(t, sts, "overlays/demo/mqcluster.yaml")
	for _, l := range cfg.Listeners {
		if l.TLS != nil {
			t.Errorf("listener %s %s: the demo mounts no certificate", l.Type, l.Address)
		}
	}
	acfg, ok := cfg.AuthConfig(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if !ok {
		t.Fatal("the demo has no password file")
	}
	a, err := auth.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	req := &broker.AuthRequest{ClientInfo: broker.ClientInfo{ClientID: "c", Username: "demo"},
		Password: []byte("demo"), HasUsername: true, HasPassword: true}
	if res := a.Authenticate(req); res.Code != packet.Success {
		t.Errorf("demo / demo: %v, want success", res.Code)
	}
}

// loadPodConfig runs mqcluster's configuration loader on the arguments and
// environment of the StatefulSet's container, in pod mqcluster-0, with the
// configuration file cfgFile mounted where the config volume is. The files
// of the other volumes are stand-ins: a fresh self-signed certificate for
// mqcluster-tls, the demo's password file for mqcluster-auth.
func loadPodConfig(t *testing.T, sts *statefulSet, cfgFile string) *config.Config {
	t.Helper()
	c := sts.container(t)
	root := t.TempDir()
	// Mount paths in the configuration, the arguments and the environment
	// become directories under root.
	var oldnew []string
	for _, m := range c.VolumeMounts {
		v := sts.volumes()[m.Name]
		if v.ConfigMap == nil && v.Secret == nil {
			continue
		}
		dir := filepath.Join(root, m.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		switch v.source() {
		case "mqcluster-config":
			writeFile(t, filepath.Join(dir, "mqcluster.yaml"), readFile(t, cfgFile))
		case "mqcluster-tls":
			cert, key := selfSigned(t)
			writeFile(t, filepath.Join(dir, "tls.crt"), cert)
			writeFile(t, filepath.Join(dir, "tls.key"), key)
		case "mqcluster-auth":
			writeFile(t, filepath.Join(dir, "passwd"), readFile(t, "overlays/demo/passwd"))
			writeFile(t, filepath.Join(dir, "admin-token"), readFile(t, "overlays/demo/admin-token"))
			writeFile(t, filepath.Join(dir, "gossip-key"), readFile(t, "overlays/demo/gossip-key"))
		}
		oldnew = append(oldnew, m.MountPath+"/", dir+"/")
	}
	moved := strings.NewReplacer(oldnew...)
	cfgPath := filepath.Join(root, "config", "mqcluster.yaml")
	writeFile(t, cfgPath, []byte(moved.Replace(string(readFile(t, filepath.Join(root, "config", "mqcluster.yaml"))))))

	args := slices.Clone(c.Args)
	if len(args) == 0 || args[0] != "serve" {
		t.Fatalf("container args %q: want serve first", args)
	}
	for i := range args {
		args[i] = moved.Replace(args[i])
	}
	var environ []string
	for k, v := range c.env(t) {
		environ = append(environ, k+"="+moved.Replace(v))
	}
	ld, err := config.Load(args[1:], environ, io.Discard)
	if err != nil {
		t.Fatalf("mqcluster refuses the pod's configuration:\n%v", err)
	}
	for _, w := range ld.Warnings {
		t.Errorf("start warning: %s", w)
	}
	return ld.Config
}

// The parts of the manifests the tests read.

type statefulSet struct {
	Spec struct {
		ServiceName         string `yaml:"serviceName"`
		Replicas            int    `yaml:"replicas"`
		PodManagementPolicy string `yaml:"podManagementPolicy"`
		Selector            struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds int     `yaml:"terminationGracePeriodSeconds"`
	AutomountServiceAccountToken  optBool `yaml:"automountServiceAccountToken"`
	EnableServiceLinks            optBool `yaml:"enableServiceLinks"`
	SecurityContext               struct {
		RunAsNonRoot bool `yaml:"runAsNonRoot"`
		RunAsUser    int  `yaml:"runAsUser"`
		FSGroup      int  `yaml:"fsGroup"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []volume    `yaml:"volumes"`
}

type optBool struct{ v *bool }

func (b *optBool) UnmarshalYAML(n *yaml.Node) error {
	var v bool
	if err := n.Decode(&v); err != nil {
		return err
	}
	b.v = &v
	return nil
}

func (b optBool) isFalse() bool { return b.v != nil && !*b.v }

type container struct {
	Name  string          `yaml:"name"`
	Args  []string        `yaml:"args"`
	Env   []envVar        `yaml:"env"`
	Ports []containerPort `yaml:"ports"`

	StartupProbe   *probe `yaml:"startupProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`

	Lifecycle struct {
		PreStop struct {
			Sleep struct {
				Seconds int `yaml:"seconds"`
			} `yaml:"sleep"`
		} `yaml:"preStop"`
	} `yaml:"lifecycle"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type containerPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
	Protocol      string `yaml:"protocol"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		FieldRef *struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
		ResourceFieldRef *struct {
			Resource string `yaml:"resource"`
		} `yaml:"resourceFieldRef"`
	} `yaml:"valueFrom"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

type volume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
	Secret *struct {
		SecretName string `yaml:"secretName"`
	} `yaml:"secret"`
}

// source is the ConfigMap or Secret a volume shows.
func (v volume) source() string {
	switch {
	case v.ConfigMap != nil:
		return v.ConfigMap.Name
	case v.Secret != nil:
		return v.Secret.SecretName
	}
	return ""
}

type service struct {
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Type                     string            `yaml:"type"`
		ClusterIP                string            `yaml:"clusterIP"`
		PublishNotReadyAddresses bool              `yaml:"publishNotReadyAddresses"`
		Selector                 map[string]string `yaml:"selector"`
		Ports                    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
			Protocol   string `yaml:"protocol"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

func (s *service) port(t *testing.T, name string) int {
	t.Helper()
	for _, p := range s.Spec.Ports {
		if p.Name == name {
			return p.Port
		}
	}
	t.Fatalf("Service %s has no port %q", s.Metadata.Name, name)
	return 0
}

func readStatefulSet(t *testing.T, file string) *statefulSet {
	t.Helper()
	var s statefulSet
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, file)))
	dec.KnownFields(false)
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return &s
}

func readServices(t *testing.T, file string) map[string]*service {
	t.Helper()
	out := map[string]*service{}
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, file)))
	for {
		var s service
		err := dec.Decode(&s)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out[s.Metadata.Name] = &s
	}
}

func (s *statefulSet) container(t *testing.T) *container {
	t.Helper()
	cs := s.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != "mqcluster" {
		t.Fatalf("want one container, mqcluster")
	}
	return &cs[0]
}

func (s *statefulSet) volumes() map[string]volume {
	out := map[string]volume{}
	for _, v := range s.Spec.Template.Spec.Volumes {
		out[v.Name] = v
	}
	return out
}

func mountOf(t *testing.T, c *container, volume string) string {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m.MountPath
		}
	}
	t.Fatalf("volume %q is not mounted", volume)
	return ""
}

// port is the number of the container port called name.
func (c *container) port(t *testing.T, name, protocol string) int {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name && cmpOr(p.Protocol, "TCP") == protocol {
			return p.ContainerPort
		}
	}
	t.Fatalf("container has no %s port %q", protocol, name)
	return 0
}

var envRef = regexp.MustCompile(`\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// env is the container's environment in pod mqcluster-0, with $(VAR)
// references expanded as the kubelet does: to variables defined earlier,
// left alone otherwise.
func (c *container) env(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range c.Env {
		val := e.Value
		switch {
		case e.ValueFrom == nil:
			val = envRef.ReplaceAllStringFunc(val, func(m string) string {
				if m == "$$" {
					return "$"
				}
				if v, ok := out[m[2:len(m)-1]]; ok {
					return v
				}
				return m
			})
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			val = podName
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP":
			val = podIP
		case e.ValueFrom.ResourceFieldRef != nil && e.ValueFrom.ResourceFieldRef.Resource == "limits.memory":
			val = memLimit
		default:
			t.Fatalf("env %s: a source the test does not know", e.Name)
		}
		out[e.Name] = val
	}
	return out
}

func splitHostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	return host, port
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// selfSigned is a fresh certificate and key in PEM.
func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mqcluster"},
		DNSNames:     []string{"mqcluster"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}
