package auth

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
)

// eventually retries fn until it returns nil or timeout passes.
func eventually(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	wait := time.Millisecond
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not true within %v: %v", timeout, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// logBuffer collects log output for assertions; safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

func connectReq(user, password string) *broker.AuthRequest {
	return &broker.AuthRequest{ClientInfo: broker.ClientInfo{ClientID: "c-" + user, Username: user},
		HasUsername: user != "", HasPassword: password != "", Password: []byte(password)}
}

// The order of checks: anonymous, password file, then a token; each
// refusal with its reason code.
func TestAuthenticate(t *testing.T) {
	k := keysOnce()
	dir := t.TempDir()
	pw := writeFile(t, dir, "passwd", []byte("alice:"+cheapHash(t, "a-pass")+"\n"))
	secret := writeFile(t, dir, "secret", k.secret)
	tok := token(t, jwt.SigningMethodHS256, k.secret, "", jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()})
	carolTok := token(t, jwt.SigningMethodHS256, k.secret, "", jwt.MapClaims{"sub": "carol", "exp": time.Now().Add(time.Hour).Unix()})
	var logs logBuffer
	strict, err := New(Config{PasswordFile: pw, JWT: &JWTConfig{SecretFile: secret}, Logger: logs.logger(), ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Close()
	open, err := New(Config{PasswordFile: pw, AllowAnonymous: true, ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()

	ok, bad, denied := packet.Success, packet.BadUserNameOrPassword, packet.NotAuthorized
	for _, tc := range []struct {
		a              *Auth
		user, password string
		want           packet.ReasonCode
	}{
		{strict, "alice", "a-pass", ok},
		{strict, "alice", "wrong", bad},
		{strict, "mallory", "a-pass", bad},
		{strict, "alice", "", bad},
		{strict, "", "", denied},
		{strict, "alice", tok, ok},       // not alice's password, but her token
		{strict, "", carolTok, ok},       // a token alone (5.0)
		{strict, "alice", carolTok, bad}, // a token for someone else
		{open, "", "", ok},
		{open, "alice", "wrong", bad}, // anonymous access is no fallback for bad credentials
		{open, "alice", tok, bad},     // no JWT configured
	} {
		res := tc.a.Authenticate(connectReq(tc.user, tc.password))
		if res.Code != tc.want {
			t.Errorf("user %q password %.12q: code %#x, want %#x", tc.user, tc.password, byte(res.Code), byte(tc.want))
		}
	}
	req := connectReq("alice", "a-pass")
	req.Method = "SCRAM-SHA-256"
	if res := strict.Authenticate(req); res.Code != packet.BadAuthenticationMethod {
		t.Errorf("enhanced authentication: code %#x, want 0x8C", byte(res.Code))
	}
	for _, secret := range []string{"a-pass", "wrong", tok} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("the log holds a credential: %s", logs.String())
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err == nil {
		t.Fatal("a configuration that admits nobody passed Validate")
	}
	if err := (Config{AllowAnonymous: true}).Validate(); err != nil {
		t.Fatal(err)
	}
	// Without any source of credentials, user names are taken on trust.
	a, err := New(Config{AllowAnonymous: true, ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if res := a.Authenticate(connectReq("anyone", "anything")); res.Code != packet.Success {
		t.Fatalf("code %#x", byte(res.Code))
	}
	if !a.CanPublish(&broker.ClientInfo{}, "x") || !a.CanSubscribe(&broker.ClientInfo{}, "#") || !a.CanRead(&broker.ClientInfo{}, "$SYS/x") {
		t.Fatal("without an ACL file everything is allowed")
	}
	if _, err := New(Config{ACLFile: "/nonexistent/acl", AllowAnonymous: true}); err == nil || !strings.Contains(err.Error(), "/nonexistent/acl") {
		t.Fatalf("missing ACL file: %v", err)
	}
}

// Edits of the ACL and the password file apply to the next check without a
// restart; a broken edit keeps the previous rules and is logged with its
// file and line, once; fixing it applies again.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	aclPath := writeFile(t, dir, "acl", []byte("allow read a/#\n"))
	pwPath := writeFile(t, dir, "passwd", []byte("alice:"+cheapHash(t, "one")+"\n"))
	var logs logBuffer
	a, err := New(Config{PasswordFile: pwPath, ACLFile: aclPath, Logger: logs.logger(), ReloadInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c := &broker.ClientInfo{Username: "alice", ClientID: "c"}
	if !a.CanSubscribe(c, "a/x") || a.CanSubscribe(c, "b/x") {
		t.Fatal("initial rules")
	}

	// The same size, written at once: only the content tells the change.
	writeFile(t, dir, "acl", []byte("allow read b/#\n"))
	eventually(t, 5*time.Second, func() error {
		if !a.CanSubscribe(c, "b/x") || a.CanSubscribe(c, "a/x") {
			return errors.New("ACL change not applied")
		}
		return nil
	})

	writeFile(t, dir, "acl", []byte("allow read c/#\nallow bogus d\n"))
	eventually(t, 5*time.Second, func() error {
		if !strings.Contains(logs.String(), "acl:2: unknown access") {
			return fmt.Errorf("no log line naming the file and line: %s", logs.String())
		}
		return nil
	})
	if !a.CanSubscribe(c, "b/x") || a.CanSubscribe(c, "c/x") {
		t.Fatal("a broken file replaced the good rules")
	}
	if err := a.Reload(); err == nil || !strings.Contains(err.Error(), "acl:2:") {
		t.Fatalf("Reload of a broken file: %v", err)
	}
	if n := strings.Count(logs.String(), "unknown access"); n != 1 {
		t.Fatalf("the broken file was logged %d times, want once", n)
	}

	// Replaced by rename, as editors and WriteFileAtomic do.
	if err := WriteFileAtomic(aclPath, []byte("allow read c/#\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(pwPath, []byte("alice:"+cheapHash(t, "two")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() error {
		if !a.CanSubscribe(c, "c/x") {
			return errors.New("fixed ACL not applied")
		}
		if a.Authenticate(connectReq("alice", "two")).Code != packet.Success {
			return errors.New("new password not accepted")
		}
		return nil
	})
	if a.Authenticate(connectReq("alice", "one")).Code == packet.Success {
		t.Fatal("old password still accepted")
	}

	// A file that disappears keeps its rules too.
	if err := os.Remove(aclPath); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); err == nil {
		t.Fatal("Reload of a missing file reported no error")
	}
	if !a.CanSubscribe(c, "c/x") {
		t.Fatal("a missing file dropped the rules")
	}
}

// A rotated JWKS applies to the next CONNECT.
func TestReloadJWKS(t *testing.T) {
	k := keysOnce()
	dir := t.TempDir()
	path := writeFile(t, dir, "jwks.json", []byte(`{"keys": [{"kty": "oct", "kid": "old", "k": "`+
		b64urlOf("0123456789abcdef0123456789abcdef-old")+`"}]}`))
	a := newJWTAuth(t, JWTConfig{JWKSFile: path})
	claims := jwt.MapClaims{"sub": "svc", "exp": time.Now().Add(time.Hour).Unix()}
	req := func(tok string) *broker.AuthRequest {
		return &broker.AuthRequest{HasPassword: true, Password: []byte(tok)}
	}
	oldTok := token(t, jwt.SigningMethodHS256, []byte("0123456789abcdef0123456789abcdef-old"), "old", claims)
	newTok := token(t, jwt.SigningMethodRS256, k.rsa, "r1", claims)
	if a.Authenticate(req(oldTok)).Code != packet.Success || a.Authenticate(req(newTok)).Code == packet.Success {
		t.Fatal("before rotation")
	}
	writeFile(t, dir, "jwks.json", jwksOf(t, k))
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if a.Authenticate(req(oldTok)).Code == packet.Success || a.Authenticate(req(newTok)).Code != packet.Success {
		t.Fatal("after rotation")
	}
}

func b64urlOf(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestReloadHalfWritten: a poll that catches a file halfway through a
// write (here: its first line only, which parses) does not take it; the
// rules change once two polls read the same content.
func TestReloadHalfWritten(t *testing.T) {
	dir := t.TempDir()
	aclPath := writeFile(t, dir, "acl", []byte("allow read a/#\n"))
	a, err := New(Config{ACLFile: aclPath, AllowAnonymous: true, ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c := &broker.ClientInfo{Username: "alice", ClientID: "c"}

	writeFile(t, dir, "acl", []byte("allow read c/#\n"))
	if err := a.reload(false); err != nil {
		t.Fatal(err)
	}
	if !a.CanSubscribe(c, "a/x") || a.CanSubscribe(c, "c/x") {
		t.Fatal("a poll took content no earlier poll had read")
	}
	writeFile(t, dir, "acl", []byte("allow read c/#\nallow read d/#\n"))
	a.reload(false)
	if !a.CanSubscribe(c, "a/x") || a.CanSubscribe(c, "d/x") {
		t.Fatal("content that changed between two polls was taken")
	}
	a.reload(false)
	if a.CanSubscribe(c, "a/x") || !a.CanSubscribe(c, "c/x") || !a.CanSubscribe(c, "d/x") {
		t.Fatal("content read by two polls in a row was not taken")
	}
}
