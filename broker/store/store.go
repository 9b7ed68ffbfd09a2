package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/mqcluster/mqcluster/broker"
)

var _ broker.Store = (*Store)(nil)

// FormatVersion is the layout version this build writes and the newest it
// reads.
const FormatVersion = 1

// Errors.
var (
	// ErrClosed is passed to done by Commit after Close, and returned by
	// Load after Close.
	ErrClosed = errors.New("store: closed")
	// ErrCorrupt is wrapped by every error about a record that cannot be
	// decoded or does not match its key.
	ErrCorrupt = errors.New("store: corrupt record")
	// ErrUnsupportedVersion is returned by Open for a file written by a
	// newer format.
	ErrUnsupportedVersion = errors.New("store: unsupported format version")
	// ErrInvalidOp is passed to done for a Commit whose ops are malformed
	// (a missing record, an unknown kind, a QoS above 2); none of its ops
	// are applied and the rest of the batch is not affected.
	ErrInvalidOp = errors.New("store: invalid op")
	// ErrCommit wraps the error of a failed transaction; every Commit of
	// the batch gets it and none of their ops are applied.
	ErrCommit = errors.New("store: commit failed")
	// ErrLocked is returned by Open when another process holds the file
	// for longer than LockTimeout.
	ErrLocked = errors.New("store: file locked by another process")
)

// Options configure a Store. The zero value is the production default.
type Options struct {
	// NoSync skips fsync. Tests only: a crash loses acknowledged writes.
	NoSync bool
	// QueueSize is how many Commit calls may wait for the committer before
	// Commit blocks. 0 means 1024.
	QueueSize int
	// MaxBatchOps bounds the ops of one transaction; a single Commit with
	// more ops is still applied whole. 0 means 4096.
	MaxBatchOps int
	// MaxBatchDelay holds a batch open for more commits for up to this
	// long. 0 commits as soon as the committer is free: batches then form
	// from the commits that queued while the previous transaction was
	// being fsynced.
	MaxBatchDelay time.Duration
	// LockTimeout is how long Open waits for another process to release
	// the file. 0 means 5s.
	LockTimeout time.Duration
	// Logger receives commit failures; nil discards.
	Logger *slog.Logger
}

// DefaultOptions returns the production options, with every default
// spelled out.
func DefaultOptions() Options {
	return Options{QueueSize: 1024, MaxBatchOps: 4096, LockTimeout: 5 * time.Second}
}

// Validate reports options that make no sense.
func (o Options) Validate() error {
	switch {
	case o.QueueSize < 0:
		return fmt.Errorf("store: QueueSize %d is negative", o.QueueSize)
	case o.MaxBatchOps < 0:
		return fmt.Errorf("store: MaxBatchOps %d is negative", o.MaxBatchOps)
	case o.MaxBatchDelay < 0:
		return fmt.Errorf("store: MaxBatchDelay %v is negative", o.MaxBatchDelay)
	case o.LockTimeout < 0:
		return fmt.Errorf("store: LockTimeout %v is negative", o.LockTimeout)
	}
	return nil
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.QueueSize == 0 {
		o.QueueSize = d.QueueSize
	}
	if o.MaxBatchOps == 0 {
		o.MaxBatchOps = d.MaxBatchOps
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = d.LockTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Bucket and key names of the layout (see doc.go).
var (
	bucketMeta     = []byte("meta")
	bucketSessions = []byte("sessions")
	bucketRetained = []byte("retained")
	bucketMsgs     = []byte("msgs")
	bucketRel      = []byte("rel")
	keyVersion     = []byte("version")
	keyRec         = []byte("rec")
)

// Store is a broker.Store in one bbolt file. Its methods are safe for
// concurrent use.
type Store struct {
	db   *bolt.DB
	path string
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	notFull sync.Cond // signalled when the committer takes from queue or on Close
	queue   []request
	closed  bool
	// inDone is set while the committer calls done functions: Commit from
	// inside done must not wait for the committer, which is itself.
	inDone bool

	wake    chan struct{} // capacity 1: there is something for the committer
	stopped chan struct{} // closed when the committer has returned

	closeOnce sync.Once
	closeErr  error

	commits atomic.Uint64
	ops     atomic.Uint64
	txs     atomic.Uint64

	// beforeBatch, when set, is called by the committer with each batch
	// before it is applied. Tests use it to hold the committer.
	beforeBatch atomic.Pointer[func()]
}

// Stats are counters since Open.
type Stats struct {
	Commits      uint64 // Commit calls acknowledged (done called or being called)
	Ops          uint64 // ops applied
	Transactions uint64 // read-write transactions, one fsync each
}

// Stats returns the counters since Open. Commits / Transactions is the
// average group commit size.
func (s *Store) Stats() Stats {
	return Stats{Commits: s.commits.Load(), Ops: s.ops.Load(), Transactions: s.txs.Load()}
}

// Open opens or creates the store file at path and starts its committer.
func Open(path string, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        opts.LockTimeout,
		NoSync:         opts.NoSync,
		NoFreelistSync: true, // fewer pages per commit; rebuilt on open
		FreelistType:   bolt.FreelistMapType,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := initLayout(db, path); err != nil {
		_ = db.Close()
		return nil, err
	}
	s := &Store{
		db:      db,
		path:    path,
		opts:    opts,
		log:     opts.Logger.With("component", "store"),
		queue:   make([]request, 0, opts.QueueSize),
		wake:    make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	s.notFull.L = &s.mu
	go s.run()
	return s, nil
}

// initLayout creates the buckets of an empty file and checks the format
// version of an existing one.
func initLayout(db *bolt.DB, path string) error {
	return db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			empty := true
			_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
			if !empty {
				return fmt.Errorf("store: %s is not an mqcluster store (no %s bucket)", path, bucketMeta)
			}
			var err error
			if meta, err = tx.CreateBucket(bucketMeta); err != nil {
				return fmt.Errorf("store: init %s: %w", path, err)
			}
			if err := meta.Put(keyVersion, binary.BigEndian.AppendUint32(nil, FormatVersion)); err != nil {
				return fmt.Errorf("store: init %s: %w", path, err)
			}
		}
		v := meta.Get(keyVersion)
		if len(v) != 4 {
			return fmt.Errorf("%w: %s: format version %x", ErrCorrupt, path, v)
		}
		switch ver := binary.BigEndian.Uint32(v); {
		case ver > FormatVersion:
			return fmt.Errorf("%w: %s has format version %d, this build reads up to %d", ErrUnsupportedVersion, path, ver, FormatVersion)
		case ver == 0:
			return fmt.Errorf("%w: %s: format version 0", ErrCorrupt, path)
		}
		for _, name := range [][]byte{bucketSessions, bucketRetained} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("store: init %s: %w", path, err)
			}
		}
		return nil
	})
}

// Close stops accepting commits, applies and acknowledges every commit
// already queued, and closes the file. It is idempotent; later calls return
// the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.notFull.Broadcast()
		s.signal()
		<-s.stopped
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("store: close %s: %w", s.path, err)
		}
	})
	return s.closeErr
}
