package auth

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"time"
)

// The files are watched by a poll, at most once per ReloadInterval, from
// one goroutine (or Reload): a stat per file, and a read only when the
// size, the modification time or the file itself (a rename over it)
// changed, or when the modification time is so recent that a second write
// within the clock's granularity could hide behind it. Changed content is
// taken when two polls in a row read it (Reload takes it at once), so a
// file caught halfway through a write is not applied. A changed file is
// parsed into a new immutable snapshot that replaces the old one in one
// atomic store; operations already running finish on the old one. A file
// that no longer parses keeps the previous good rules and is logged once
// per broken content, naming the file and line.

// racyWindow is how long after a file's modification time its content is
// compared on each poll, whatever its stat says.
const racyWindow = 2 * time.Second

// watched is one configuration file and what was last read from it.
type watched struct {
	path  string
	parse func(name string, data []byte) (any, error)
	val   any // the last good parse

	info   fs.FileInfo // at the last read
	sum    [sha256.Size]byte
	broken [sha256.Size]byte // content of the last failed parse
	failed bool
	gone   bool // the last stat failed (logged once)

	// changed content read once by a poll, applied when the next poll
	// reads it again
	pending    bool
	pendingSum [sha256.Size]byte
}

// load reads the file for the first time; an error is fatal to New.
func (w *watched) load() error {
	data, info, err := readFile(w.path)
	if err != nil {
		return &FileError{File: w.path, Err: err}
	}
	v, err := w.parse(w.path, data)
	if err != nil {
		return err
	}
	w.val, w.info, w.sum = v, info, sha256.Sum256(data)
	return nil
}

// poll rereads the file if it may have changed. It reports whether a new
// value was parsed, and returns the parse error of a changed file.
func (w *watched) poll(a *Auth, force bool) (bool, error) {
	info, err := os.Stat(w.path)
	if err != nil {
		if !w.gone {
			a.log.Error("cannot read file; keeping the rules last read from it", "file", w.path, "err", err)
			w.gone = true
		}
		return false, err
	}
	w.gone = false
	if !force && !w.pending && sameStat(w.info, info) && time.Since(info.ModTime()) > racyWindow {
		return false, nil
	}
	data, info, err := readFile(w.path)
	if err != nil {
		return false, err
	}
	w.info = info
	sum := sha256.Sum256(data)
	if sum == w.sum {
		w.failed, w.pending = false, false
		return false, nil
	}
	if !force && (!w.pending || sum != w.pendingSum) {
		w.pending, w.pendingSum = true, sum
		return false, nil
	}
	w.pending = false
	v, err := w.parse(w.path, data)
	if err != nil {
		if !w.failed || sum != w.broken {
			a.log.Error("file changed but does not parse; keeping the previous rules", "file", w.path, "err", err)
		}
		w.failed, w.broken = true, sum
		return false, err
	}
	w.val, w.sum, w.failed = v, sum, false
	a.log.Info("file reloaded", "file", w.path)
	return true, nil
}

func sameStat(a, b fs.FileInfo) bool {
	return a != nil && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && os.SameFile(a, b)
}

// readFile reads a file and the stat of what was read.
func readFile(path string) ([]byte, fs.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, nil, errors.New("not a regular file")
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(f); err != nil {
		return nil, nil, err
	}
	return b.Bytes(), info, nil
}

// reload polls every file and, when one changed, publishes a new
// snapshot. It returns the first error met; the snapshot then still holds
// the last good content of the broken file.
func (a *Auth) reload(force bool) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	changed := false
	var first error
	for _, w := range a.files {
		ch, err := w.poll(a, force)
		changed = changed || ch
		if err != nil && first == nil {
			first = err
		}
	}
	if changed {
		a.publish()
	}
	return first
}

// publish builds a snapshot of the files' current values and stores it.
func (a *Auth) publish() {
	s := &snapshot{}
	if a.passwd != nil {
		s.users = a.passwd.val.(map[string]string)
	}
	if a.acl != nil {
		s.acl = a.acl.val.(*aclSet)
	}
	if a.keys != nil {
		s.keys = a.keys.val.(*keySet)
	}
	a.snap.Store(s)
}

// run polls the files every interval until Close.
func (a *Auth) run(interval time.Duration) {
	defer close(a.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			a.reload(false)
		}
	}
}
