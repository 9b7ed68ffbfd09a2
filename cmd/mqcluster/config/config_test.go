package config

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mqcluster/mqcluster/broker/listener"
)

// writeFile writes a configuration file into a temporary directory.
func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "mqcluster.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func load(t *testing.T, args []string, env ...string) *Config {
	t.Helper()
	ld, err := Load(args, env, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	return ld.Config
}

// The file overrides the defaults, the environment the file, the flags
// the environment; MQCLUSTER_CONFIG names the file unless --config does.
func TestPrecedence(t *testing.T) {
	file := writeFile(t, `
data_dir: /from/file
log:
  level: warn
  format: json
limits:
  max_packet_size: 2048
  max_inflight: 10
  connect_timeout: 3s
cluster:
  join: [seed-a:7946, seed-b:7946]
`)
	other := writeFile(t, "limits:\n  max_inflight: 99\n")
	c := load(t, []string{"--config", file, "--limits-max-packet-size", "8192", "--log-level", "debug", "--max-queued-messages", "77"},
		"MQCLUSTER_CONFIG="+other, // --config wins
		"MQCLUSTER_LIMITS_MAX_PACKET_SIZE=4096", "MQCLUSTER_DATA_DIR=/from/env", "MQCLUSTER_LOG_LEVEL=error",
		"MQCLUSTER_CLUSTER_JOIN=seed-c:7946, seed-d:7946", "MQCLUSTER_LIMITS_CONNECT_TIMEOUT=4s")
	for _, tc := range []struct {
		key       string
		got, want any
	}{
		{"limits.max_packet_size (flag over env over file)", c.Limits.MaxPacketSize, 8192},
		{"log.level (flag over env over file)", c.Log.Level, "debug"},
		{"data_dir (env over file)", c.DataDir, "/from/env"},
		{"cluster.join (env over file)", c.Cluster.Join, []string{"seed-c:7946", "seed-d:7946"}},
		{"limits.connect_timeout (env over file)", c.Limits.ConnectTimeout, 4 * time.Second},
		{"log.format (file over default)", c.Log.Format, "json"},
		{"limits.max_inflight (--config over MQCLUSTER_CONFIG)", c.Limits.MaxInflight, uint16(10)},
		{"limits.max_queued_messages (legacy flag)", c.Limits.MaxQueuedMessages, 77},
		{"limits.max_topic_levels (default)", c.Limits.MaxTopicLevels, Default().Limits.MaxTopicLevels},
	} {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %v, want %v", tc.key, tc.got, tc.want)
		}
	}
	c = load(t, nil, "MQCLUSTER_CONFIG="+other)
	if c.Limits.MaxInflight != 99 {
		t.Errorf("MQCLUSTER_CONFIG not read: max_inflight %d", c.Limits.MaxInflight)
	}
}

// Errors name the key, with its place in the listeners and its line.
func TestFileErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"limits:\n  max_packet_sise: 10\n", "limits.max_packet_sise: unknown key (line 2)"},
		{"listeners:\n  - type: tcp\n  - type: tls\n    tls: {cert_fil: x}\n", "listeners[1].tls.cert_fil: unknown key (line 4)"},
		{"bogus: 1\n", "bogus: unknown key (line 1)"},
		{"limits:\n  max_packet_size: big\n", `limits.max_packet_size: "big": want an integer (line 2)`},
		{"limits:\n  connect_timeout: 10\n", `limits.connect_timeout: "10": want a duration`},
		{"limits:\n  max_keep_alive: 70000\n", `limits.max_keep_alive: "70000": want an integer 0..65535`},
		{"mqtt:\n  retain_available: maybe\n", `mqtt.retain_available: "maybe": want true or false`},
		{"limits: 5\n", "limits: want a mapping of keys (line 1)"},
		{"cluster:\n  join: seed:1\n", "cluster.join: want a list (line 2)"},
		{"log:\n  level: [a, b]\n", "log.level: want a single value, not a list (line 2)"},
		{"listeners:\n  - type: ws\n    allowed_origins: [{a: b}]\n", "listeners[0].allowed_origins[0]: want a single value (line 3)"},
		{"log:\n  level: info\n  level: debug\n", "log.level: set twice (line 3)"},
		{"a: 1\n---\nb: 2\n", "one YAML document expected"},
	} {
		_, err := Load([]string{"--config", writeFile(t, tc.body)}, nil, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %q", tc.body, err, tc.want)
		}
	}
}

// Validation reports every bad value as "config: key: ...".
func TestValidationNamesTheKey(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		body string
		args []string
		env  []string
		want []string
	}{
		{body: "limits:\n  max_packet_size: 5\n", want: []string{"config: limits.max_packet_size: 5: must be between 16 and 268435460"}},
		{body: "listeners:\n  - {type: tcp, address: ':1883'}\n  - type: tls\n    tls: {cert_file: " + missing + ", key_file: " + missing + "}\n",
			want: []string{"config: listeners[1].tls.cert_file: open " + missing + ": no such file", "config: listeners[1].tls.key_file: open "}},
		{body: "listeners:\n  - {type: udp, address: ':1'}\n", want: []string{`config: listeners[0].type: "udp": want tcp, tls, ws or wss`}},
		{body: "listeners:\n  - {type: tls, address: ':1'}\n", want: []string{"config: listeners[0].tls: required by a tls listener"}},
		{body: "listeners:\n  - {type: tcp, address: 'nonsense'}\n", want: []string{`config: listeners[0].address: "nonsense"`}},
		{body: "listeners:\n  - {type: tcp, path: /mqtt}\n", want: []string{"config: listeners[0].path: only for ws and wss listeners"}},
		{body: "listeners:\n  - {type: ws, path: mqtt}\n", want: []string{`config: listeners[0].path: "mqtt": want an absolute path`}},
		{body: "listeners:\n  - {type: tcp, address: ':1884'}\n  - {type: ws, address: ':1884'}\n", want: []string{`config: listeners[1].address: ":1884": also the address of listeners[0]`}},
		{body: "listeners:\n  - type: tls\n    tls: {cert_file: " + missing + ", key_file: " + missing + ", min_version: '1.1'}\n",
			want: []string{`config: listeners[0].tls.min_version: "1.1": want 1.2 or 1.3`}},
		{body: "listeners:\n  - type: wss\n    tls: {cert_file: " + missing + ", key_file: " + missing + ", client_auth: maybe}\n",
			want: []string{`config: listeners[0].tls.client_auth: "maybe": want none, optional or required`}},
		{body: "listeners:\n  - type: wss\n    tls: {cert_file: " + missing + ", key_file: " + missing + ", identity: cn_as_username}\n",
			want: []string{"config: listeners[0].tls.identity: cn_as_username needs client_auth optional or required"}},
		{body: "listeners:\n  - type: tls\n    tls: {cert_file: " + missing + ", key_file: " + missing + ", client_auth: required}\n",
			want: []string{"config: listeners[0].tls.client_ca_file: required by client_auth required"}},
		{body: "mqtt:\n  shared_strategy: fair\n  maximum_qos: 3\n", want: []string{`config: mqtt.shared_strategy: "fair"`, "config: mqtt.maximum_qos: 3"}},
		{body: "log:\n  level: loud\n  format: xml\n", want: []string{`config: log.level: "loud"`, `config: log.format: "xml"`}},
		{body: "limits:\n  connect_rate: 10\n", want: []string{"config: limits.connect_burst: 0: want > 0 with a connect_rate"}},
		{body: "auth:\n  password_file: " + missing + "\n  jwt: {issuer: me}\n",
			want: []string{"config: auth.password_file: open " + missing, "config: auth.jwt: set exactly one of secret_file, public_key_file and jwks_file"}},
		{args: []string{"--join", "seed:1", "--data-dir", ""}, want: []string{"config: data_dir: a cluster node needs a data directory"}},
		{args: []string{"--join", "nonsense", "--data-dir", dir}, want: []string{`config: cluster.join[0]: "nonsense": want host:port`}},
		{env: []string{"MQCLUSTER_LIMITS_MAX_INFLIGHT=many"}, want: []string{`config: limits.max_inflight (MQCLUSTER_LIMITS_MAX_INFLIGHT): "many": want an integer 0..65535`}},
		{args: []string{"--limits-receive-maximum", "0"}, want: []string{"config: limits.receive_maximum: 0: want 1..65535"}},
	} {
		args := tc.args
		if tc.body != "" {
			args = append([]string{"--config", writeFile(t, tc.body)}, args...)
		}
		_, err := Load(args, tc.env, &bytes.Buffer{})
		for _, want := range tc.want {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%q %q %q: error %v, want it to contain %q", tc.body, tc.args, tc.env, err, want)
			}
		}
	}
}

// A bad flag value is refused when the flags are parsed.
func TestBadFlagValue(t *testing.T) {
	_, err := Load([]string{"--limits-connect-timeout", "soon"}, nil, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "-limits-connect-timeout: want a duration") {
		t.Fatalf("error %v", err)
	}
}

// Without listeners there is one tcp listener on :1883; --listen sets the
// address of the first tcp listener, or adds one.
func TestListenersAndListen(t *testing.T) {
	c := load(t, nil)
	if len(c.Listeners) != 1 || c.Listeners[0].Type != "tcp" || c.Listeners[0].Address != ":1883" {
		t.Fatalf("default listeners %+v", c.Listeners)
	}
	c = load(t, []string{"--listen", "127.0.0.1:1999"})
	if len(c.Listeners) != 1 || c.Listeners[0].Address != "127.0.0.1:1999" {
		t.Fatalf("--listen: %+v", c.Listeners)
	}
	file := writeFile(t, "listeners:\n  - type: ws\n  - type: tcp\n    address: ':1884'\n")
	c = load(t, []string{"--config", file, "--listen", ":2000"})
	if len(c.Listeners) != 2 || c.Listeners[1].Address != ":2000" || c.Listeners[0].Address != ":8080" || c.Listeners[0].Path != "/mqtt" {
		t.Fatalf("--listen over the file: %+v", c.Listeners)
	}
	c = load(t, []string{"--config", writeFile(t, "listeners:\n  - type: ws\n")}, "MQCLUSTER_LISTEN=:2001")
	if len(c.Listeners) != 2 || c.Listeners[0].Type != "tcp" || c.Listeners[0].Address != ":2001" {
		t.Fatalf("MQCLUSTER_LISTEN without a tcp listener: %+v", c.Listeners)
	}
}

// Anonymous clients: a listener's allow_anonymous, else auth's, else
// refused when credentials are checked, else loopback only.
func TestAnonymousPolicy(t *testing.T) {
	yes, no := true, false
	secret := writeFile(t, strings.Repeat("s", 40))
	for _, tc := range []struct {
		listener, auth *bool
		password       bool
		want           listener.Anonymous
	}{
		{nil, nil, false, listener.AnonymousLoopback},
		{nil, nil, true, listener.AnonymousDeny},
		{&yes, nil, true, listener.AnonymousAllow},
		{nil, &yes, true, listener.AnonymousAllow},
		{&no, &yes, false, listener.AnonymousDeny},
		{nil, &no, false, listener.AnonymousDeny},
		{&yes, &no, false, listener.AnonymousAllow},
	} {
		c := load(t, nil)
		c.Listeners[0].AllowAnonymous, c.Auth.AllowAnonymous = tc.listener, tc.auth
		if tc.password {
			c.Auth.JWT = &JWT{SecretFile: secret}
		}
		if got := c.Anonymous(0); got != tc.want {
			t.Errorf("listener %v auth %v password %v: %v, want %v", ptr(tc.listener), ptr(tc.auth), tc.password, got, tc.want)
		}
	}
	c := load(t, []string{"--listen", "127.0.0.1:1883"})
	if got := c.LoopbackOnlyAnonymous(); len(got) != 0 {
		t.Errorf("a loopback listener needs no warning: %v", got)
	}
	if got := load(t, nil).LoopbackOnlyAnonymous(); len(got) != 1 {
		t.Errorf("the default :1883 listener: %v", got)
	}
}

func ptr(b *bool) string {
	if b == nil {
		return "unset"
	}
	if *b {
		return "true"
	}
	return "false"
}

// What --print-config prints is a configuration file that loads into the
// same configuration.
func TestPrintRoundTrip(t *testing.T) {
	file := writeFile(t, `
listeners:
  - type: ws
    address: 127.0.0.1:0
    allowed_origins: [https://app.example]
    allow_anonymous: false
  - type: tcp
    address: 127.0.0.1:0
    proxy_protocol: true
limits:
  connect_rate: 100.5
  connect_burst: 10
auth:
  allow_anonymous: true
`)
	c := load(t, []string{"--config", file, "--join", "seed:1", "--data-dir", t.TempDir(), "--node-id", "n1"})
	var out bytes.Buffer
	if err := c.Write(&out); err != nil {
		t.Fatal(err)
	}
	again := load(t, []string{"--config", writeFile(t, out.String())})
	if !reflect.DeepEqual(c, again) {
		t.Fatalf("printed:\n%s\nloads into\n%+v\nnot\n%+v", out.String(), again, c)
	}
	for _, want := range []string{"max_packet_size: 1048576", "connect_timeout: 10s", "join:\n    - seed:1", "allow_anonymous: false"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("printed configuration lacks %q:\n%s", want, out.String())
		}
	}
}

// An MQCLUSTER_ variable that is no setting is worth a warning: a typo
// would otherwise go unnoticed.
func TestUnknownEnvironmentVariable(t *testing.T) {
	ld, err := Load(nil, []string{"MQCLUSTER_DATADIR=/x", "MQCLUSTER_DATA_DIR=/y", "HOME=/root"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ld.Warnings) != 1 || !strings.Contains(ld.Warnings[0], "MQCLUSTER_DATADIR") {
		t.Fatalf("warnings %q", ld.Warnings)
	}
}

// docs/configuration.md describes every key, its variable and flag, and
// every key of a listener.
func TestDocsDescribeEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	var want []string
	for _, k := range Keys() {
		if k.Help == "" {
			t.Errorf("%s has no help text", k.Path)
		}
		want = append(want, "`"+k.Path+"`", "`"+k.Env+"`", "`--"+k.Flag+"`")
	}
	for name := range legacyFlags {
		want = append(want, "`--"+name+"`")
	}
	for _, t := range []reflect.Type{reflect.TypeFor[Listener](), reflect.TypeFor[TLS]()} {
		for i := range t.NumField() {
			want = append(want, "`"+yamlName(t.Field(i))+"`")
		}
	}
	want = append(want, "`--config`", "`--print-config`", "`--listen`", "`MQCLUSTER_CONFIG`", "`MQCLUSTER_LISTEN`")
	for _, w := range want {
		if !strings.Contains(doc, w) {
			t.Errorf("docs/configuration.md does not mention %s", w)
		}
	}
}
