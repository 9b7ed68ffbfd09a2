package listener

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// certCheckInterval is how often a handshake may look at the certificate
// files for a change.
const certCheckInterval = time.Second

// certStore serves a TLS listener's certificate and reloads it when its
// files change: a handshake stats the files at most once per
// certCheckInterval, and Reload (SIGHUP) loads them at once. A pair that
// fails to load is logged and the previous one kept.
type certStore struct {
	certFile, keyFile string
	log               *slog.Logger

	cert    atomic.Pointer[tls.Certificate]
	checked atomic.Int64 // unix ns of the last look at the files

	mu     sync.Mutex // one reload at a time; guards the fields below
	stamp  fileStamps // of the files the current pair was loaded from
	failed fileStamps // of the files that last failed to load (logged once)
}

// fileStamp is what says a file changed without reading it.
type fileStamp struct {
	mod  time.Time
	size int64
}

type fileStamps struct{ cert, key fileStamp }

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

// newCertStore loads the pair once; failing that, the listener does not
// start.
func newCertStore(certFile, keyFile string, log *slog.Logger) (*certStore, error) {
	s := &certStore{certFile: certFile, keyFile: keyFile, log: log}
	st, err := s.stamps()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	s.cert.Store(&cert)
	s.stamp = st
	s.checked.Store(time.Now().UnixNano())
	return s, nil
}

func (s *certStore) stamps() (fileStamps, error) {
	c, err := stampOf(s.certFile)
	if err != nil {
		return fileStamps{}, err
	}
	k, err := stampOf(s.keyFile)
	if err != nil {
		return fileStamps{}, err
	}
	return fileStamps{cert: c, key: k}, nil
}

// getCertificate is the tls.Config's GetCertificate.
func (s *certStore) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := time.Now().UnixNano()
	if last := s.checked.Load(); now-last >= int64(certCheckInterval) && s.checked.CompareAndSwap(last, now) {
		s.reload(false)
	}
	return s.cert.Load(), nil
}

// reload loads the pair again if the files changed since the current one
// was loaded, or in any case when forced.
func (s *certStore) reload(force bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.stamps()
	if err != nil {
		if st != s.failed {
			s.log.Error("TLS certificate not reloaded; keeping the previous one", "err", err)
		}
		s.failed = st
		return
	}
	if !force && (st == s.stamp || st == s.failed) {
		return
	}
	cert, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		if force || st != s.failed {
			s.log.Error("TLS certificate not reloaded; keeping the previous one",
				"cert_file", s.certFile, "key_file", s.keyFile, "err", err)
		}
		s.failed = st
		return
	}
	s.stamp, s.failed = st, fileStamps{}
	if old := s.cert.Load(); old != nil && sameChain(old, &cert) {
		return
	}
	s.cert.Store(&cert)
	s.log.Info("TLS certificate reloaded", "cert_file", s.certFile)
}

func sameChain(a, b *tls.Certificate) bool {
	if len(a.Certificate) != len(b.Certificate) {
		return false
	}
	for i := range a.Certificate {
		if !bytes.Equal(a.Certificate[i], b.Certificate[i]) {
			return false
		}
	}
	return true
}
