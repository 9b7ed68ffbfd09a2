package auth

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode"
)

// FileError is a problem in one line of a configuration file.
type FileError struct {
	File string
	Line int // 1-based; 0 when the problem is the whole file
	Err  error
}

func (e *FileError) Error() string {
	if e.Line == 0 {
		return e.File + ": " + e.Err.Error()
	}
	return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
}

func (e *FileError) Unwrap() error { return e.Err }

// ValidUsername reports why u cannot be a user of the password file: it
// is empty, contains ':' (the separator) or a control character, or starts
// or ends with white space (which the file format would lose).
func ValidUsername(u string) error {
	switch {
	case u == "":
		return errors.New("empty user name")
	case strings.ContainsRune(u, ':'):
		return errors.New("user name contains ':'")
	case strings.TrimSpace(u) != u:
		return errors.New("user name starts or ends with white space")
	case strings.HasPrefix(u, "#"):
		return errors.New("user name starts with '#', which marks a comment")
	}
	for _, r := range u {
		if unicode.IsControl(r) {
			return errors.New("user name contains a control character")
		}
	}
	return nil
}

// PasswordFile is the text of a password file, edited line by line so that
// comments, blank lines and the order of users survive. Each entry is a
// line "user:hash"; lines whose first non-blank character is '#' are
// comments.
type PasswordFile struct {
	lines []string
}

// ParsePasswordFile reads the password file data, named name in errors. A
// malformed line, a hash it cannot read or a user listed twice is a
// *FileError naming the line.
func ParsePasswordFile(name string, data []byte) (*PasswordFile, error) {
	f := &PasswordFile{}
	seen := make(map[string]int)
	text := strings.TrimSuffix(string(data), "\n")
	if text == "" {
		return f, nil
	}
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSuffix(line, "\r")
		f.lines = append(f.lines, line)
		user, _, ok, err := parsePasswordLine(line)
		if err == nil && ok {
			if first, dup := seen[user]; dup {
				err = fmt.Errorf("user %q already defined on line %d", user, first)
			}
			seen[user] = i + 1
		}
		if err != nil {
			return nil, &FileError{File: name, Line: i + 1, Err: err}
		}
	}
	return f, nil
}

// parsePasswordLine splits one line; ok is false for a comment or a blank.
func parsePasswordLine(line string) (user, hash string, ok bool, err error) {
	t := strings.TrimSpace(line)
	if t == "" || t[0] == '#' {
		return "", "", false, nil
	}
	user, hash, found := strings.Cut(t, ":")
	if !found {
		return "", "", false, errors.New("want user:hash")
	}
	if err := ValidUsername(user); err != nil {
		return "", "", false, err
	}
	hash = strings.TrimSpace(hash)
	if err := checkHash(hash); err != nil {
		return "", "", false, fmt.Errorf("user %q: %w", user, err)
	}
	return user, hash, true, nil
}

// entries returns the users and their hashes.
func (f *PasswordFile) entries() map[string]string {
	m := make(map[string]string, len(f.lines))
	for _, line := range f.lines {
		if u, h, ok, _ := parsePasswordLine(line); ok {
			m[u] = h
		}
	}
	return m
}

// find returns the index of user's line, or -1.
func (f *PasswordFile) find(user string) int {
	for i, line := range f.lines {
		if u, _, ok, _ := parsePasswordLine(line); ok && u == user {
			return i
		}
	}
	return -1
}

// Has reports whether user has an entry.
func (f *PasswordFile) Has(user string) bool { return f.find(user) >= 0 }

// Set gives user the stored hash, replacing its entry in place or adding
// one at the end.
func (f *PasswordFile) Set(user, hash string) error {
	if err := ValidUsername(user); err != nil {
		return err
	}
	if err := checkHash(hash); err != nil {
		return err
	}
	line := user + ":" + hash
	if i := f.find(user); i >= 0 {
		f.lines[i] = line
		return nil
	}
	f.lines = append(f.lines, line)
	return nil
}

// Delete removes user's entry and reports whether there was one.
func (f *PasswordFile) Delete(user string) bool {
	i := f.find(user)
	if i < 0 {
		return false
	}
	f.lines = append(f.lines[:i], f.lines[i+1:]...)
	return true
}

// Bytes is the file's text, one line per entry or comment.
func (f *PasswordFile) Bytes() []byte {
	var b bytes.Buffer
	for _, l := range f.lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// WriteFileAtomic replaces path with data: it writes a temporary file in
// the same directory with mode perm, syncs it and renames it over path, so
// that a reader sees the old file or the new one, never a part.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	fail := func(err error) error {
		tmp.Close()
		os.Remove(name)
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(name)
		return err
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync() // the rename itself survives a crash
		d.Close()
	}
	return nil
}
