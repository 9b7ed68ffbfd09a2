package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/auth"
	"github.com/mqcluster/mqcluster/broker/packet"
)

// passwd runs the command with stdin and returns its error and output.
func passwd(stdin string, args ...string) (string, error) {
	var out bytes.Buffer
	err := runPasswd(args, strings.NewReader(stdin), &out)
	return out.String(), err
}

// admits reports whether the password file admits user with password, as
// the broker's authenticator reads it.
func admits(t *testing.T, file, user, password string) bool {
	t.Helper()
	a, err := auth.New(auth.Config{PasswordFile: file, ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	res := a.Authenticate(&broker.AuthRequest{ClientInfo: broker.ClientInfo{Username: user},
		HasUsername: true, HasPassword: true, Password: []byte(password)})
	return res.Code == packet.Success
}

// The life of a password file: created in batch mode, a user added from
// standard input, a password changed, a user deleted; comments survive,
// the mode is 0600, and the broker's authenticator accepts the result.
func TestPasswdLifecycle(t *testing.T) {
	file := filepath.Join(t.TempDir(), "passwd")
	if _, err := passwd("", "-c", "-b", file, "alice", "a-pass"); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(file)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", info.Mode().Perm(), err)
	}
	data, _ := os.ReadFile(file)
	if !strings.HasPrefix(string(data), "alice:$argon2id$v=19$m=65536,t=3,p=2$") {
		t.Fatalf("file %q", data)
	}
	// An administrator's comment survives later edits.
	if err := os.WriteFile(file, append([]byte("# broker users\n"), data...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := passwd("b-pass\nb-pass\n", "--bcrypt", file, "bob"); err != nil {
		t.Fatal(err)
	}
	if !admits(t, file, "alice", "a-pass") || !admits(t, file, "bob", "b-pass") || admits(t, file, "bob", "a-pass") {
		t.Fatal("the authenticator does not read the file as written")
	}
	if _, err := passwd("changed\n", file, "alice"); err != nil { // one line: no confirmation
		t.Fatal(err)
	}
	if admits(t, file, "alice", "a-pass") || !admits(t, file, "alice", "changed") {
		t.Fatal("password not changed")
	}
	if _, err := passwd("", "-D", file, "bob"); err != nil {
		t.Fatal(err)
	}
	data, _ = os.ReadFile(file)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 2 || lines[0] != "# broker users" || !strings.HasPrefix(lines[1], "alice:$argon2id$") {
		t.Fatalf("file after the edits:\n%s", data)
	}
	// -c starts over.
	if _, err := passwd("", "-c", "-b", file, "carol", "c-pass"); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(file); !strings.HasPrefix(string(data), "carol:") || strings.Contains(string(data), "alice") {
		t.Fatalf("-c kept the old file: %q", data)
	}
	entries, _ := os.ReadDir(filepath.Dir(file))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}

// Mistakes are errors that leave the file as it was.
func TestPasswdErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "passwd")
	if _, err := passwd("", "-c", "-b", "--bcrypt", file, "alice", "a-pass"); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(file)
	broken := filepath.Join(dir, "broken")
	os.WriteFile(broken, []byte("alice:plaintext\n"), 0o600)
	for _, tc := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"one\ntwo\n", []string{file, "bob"}, "do not match"},
		{"", []string{file, "bob"}, "no password"},
		{"\n", []string{file, "bob"}, "empty password"},
		{"", []string{"-b", file, "bob", ""}, "empty password"},
		{"", []string{"-D", file, "nobody"}, "not in"},
		{"", []string{"-b", filepath.Join(dir, "missing"), "bob", "x"}, "-c creates it"},
		{"", []string{"-b", file, "bo:b", "x"}, "':'"},
		{"", []string{"-b", "--argon2id", "--bcrypt", file, "bob", "x"}, "choose one"},
		{"", []string{"-D", "-b", file, "alice"}, "-D takes no other option"},
		{"", []string{file}, "want 2 arguments"},
		{"", []string{"-b", file, "bob"}, "want 3 arguments"},
		{"", []string{"-b", broken, "bob", "x"}, broken + ":1:"},
		{"", []string{"-x", file, "bob"}, "not defined"},
	} {
		_, err := passwd(tc.stdin, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
	if after, _ := os.ReadFile(file); !bytes.Equal(before, after) {
		t.Fatal("a failed command changed the file")
	}
	if out, err := passwd("", "-h"); err != nil || !strings.Contains(out, "usage: mqcluster passwd") {
		t.Fatalf("-h: %v, %q", err, out)
	}
}
