package auth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A password file keeps comments, blank lines and order through an edit;
// CRLF line ends and white space around an entry are accepted.
func TestPasswordFileParseAndEdit(t *testing.T) {
	alice, bob := cheapHash(t, "a-pass"), cheapHash(t, "b-pass")
	src := "# users of the test broker\r\n\nalice:" + alice + "\r\n  # bob is new\nbob:" + bob + "  \n"
	f, err := ParsePasswordFile("pw", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	users := f.entries()
	if len(users) != 2 || users["alice"] != alice || users["bob"] != bob {
		t.Fatalf("entries: %v", users)
	}
	if !f.Has("alice") || f.Has("carol") {
		t.Fatal("Has")
	}
	carol := cheapHash(t, "c-pass")
	if err := f.Set("carol", carol); err != nil {
		t.Fatal(err)
	}
	if err := f.Set("alice", bob); err != nil {
		t.Fatal(err)
	}
	if !f.Delete("bob") || f.Delete("bob") {
		t.Fatal("Delete: want true once, then false")
	}
	want := "# users of the test broker\n\nalice:" + bob + "\n  # bob is new\ncarol:" + carol + "\n"
	if got := string(f.Bytes()); got != want {
		t.Fatalf("edited file:\n%s\nwant:\n%s", got, want)
	}
	if err := f.Set("dave", "plaintext"); !errors.Is(err, ErrHashFormat) {
		t.Fatalf("Set with a plain-text password: %v", err)
	}
	if err := f.Set("da:ve", carol); err == nil {
		t.Fatal("Set accepted a user name with ':'")
	}
	empty, err := ParsePasswordFile("empty", nil)
	if err != nil || len(empty.entries()) != 0 || len(empty.Bytes()) != 0 {
		t.Fatalf("empty file: %v %v", empty, err)
	}
}

// Each malformed line is an error naming the file and the line.
func TestPasswordFileErrors(t *testing.T) {
	good := cheapHash(t, "x")
	for _, tc := range []struct {
		src  string
		line int
		want string
	}{
		{"alice" + good, 1, "want user:hash"},
		{"# ok\nalice:" + good + "\nalice:" + good, 3, "already defined on line 2"},
		{"\n\nbob:secret", 3, "unrecognised password hash"},
		{":" + good, 1, "empty user name"},
		{"bo\x01b:" + good, 1, "control character"},
		{"carol:$7$101$abc$def", 1, "unrecognised password hash"},
	} {
		_, err := ParsePasswordFile("/etc/mqcluster/passwd", []byte(tc.src))
		var fe *FileError
		if !errors.As(err, &fe) || fe.Line != tc.line || fe.File != "/etc/mqcluster/passwd" {
			t.Errorf("%q: got %v, want an error on line %d", tc.src, err, tc.line)
			continue
		}
		prefix := "/etc/mqcluster/passwd:" + string(rune('0'+tc.line)) + ": "
		if msg := err.Error(); !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, tc.want) {
			t.Errorf("%q: message %q, want %q... %q", tc.src, msg, prefix, tc.want)
		}
	}
}

func TestValidUsername(t *testing.T) {
	for u, ok := range map[string]bool{
		"alice": true, "user name": true, "ümlaut": true, "a@b.example": true,
		"": false, "a:b": false, " a": false, "a ": false, "#a": false, "a\nb": false, "a\x7f": false,
	} {
		if err := ValidUsername(u); (err == nil) != ok {
			t.Errorf("ValidUsername(%q) = %v, want ok %v", u, err, ok)
		}
	}
}

// WriteFileAtomic replaces the file whole, with mode 0600, and leaves no
// temporary file behind.
func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "passwd")
	if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("new\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil || string(data) != "new\n" {
		t.Fatalf("content %q, %v", data, err)
	}
	info, _ := os.Stat(path)
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", info.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d files, want 1", len(entries))
	}
	if err := WriteFileAtomic(filepath.Join(dir, "missing", "passwd"), nil, 0o600); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}
