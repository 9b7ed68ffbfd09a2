package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/mqcluster/mqcluster/broker"
)

// Load returns every stored session, with its messages in Seq order and its
// unreleased packet ids in order, and the retained set. Nothing it returns
// shares memory with the file. A record that cannot be decoded fails the
// whole Load with an error wrapping ErrCorrupt that names it.
func (s *Store) Load() (*broker.Snapshot, error) {
	snap := &broker.Snapshot{}
	err := s.db.View(func(tx *bolt.Tx) error {
		if err := loadSessions(tx.Bucket(bucketSessions), snap); err != nil {
			return err
		}
		return loadRetained(tx.Bucket(bucketRetained), snap)
	})
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return nil, ErrClosed
	}
	if err != nil {
		return nil, err
	}
	return snap, nil
}

func loadSessions(b *bolt.Bucket, snap *broker.Snapshot) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v != nil {
			return fmt.Errorf("%w: sessions: key %q is not a bucket", ErrCorrupt, k)
		}
		rec, err := loadSession(k, b.Bucket(k))
		if err != nil {
			return err
		}
		snap.Sessions = append(snap.Sessions, *rec)
	}
	return nil
}

// loadSession reads the session stored under key k.
func loadSession(k []byte, b *bolt.Bucket) (*broker.SessionRecord, error) {
	v := b.Get(keyRec)
	if v == nil {
		return nil, fmt.Errorf("%w: session key %q: no record", ErrCorrupt, k)
	}
	rec, err := decodeSession(v)
	if err != nil {
		return nil, fmt.Errorf("session key %q: %w", k, err)
	}
	id := rec.ClientID
	if !bytes.Equal(appendKey(nil, id), k) {
		return nil, fmt.Errorf("%w: session key %q holds client id %q", ErrCorrupt, k, id)
	}
	if mb := b.Bucket(bucketMsgs); mb != nil {
		c := mb.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 8 {
				return nil, fmt.Errorf("%w: session %q: message key %x", ErrCorrupt, id, k)
			}
			seq := binary.BigEndian.Uint64(k)
			m, err := decodeStored(v)
			if err != nil {
				return nil, fmt.Errorf("session %q message seq %d: %w", id, seq, err)
			}
			if m.Seq != seq {
				return nil, fmt.Errorf("%w: session %q message seq %d: record says seq %d", ErrCorrupt, id, seq, m.Seq)
			}
			rec.Messages = append(rec.Messages, *m)
		}
	}
	if rb := b.Bucket(bucketRel); rb != nil {
		c := rb.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if len(k) != 2 {
				return nil, fmt.Errorf("%w: session %q: rel key %x", ErrCorrupt, id, k)
			}
			rec.AwaitingRel = append(rec.AwaitingRel, binary.BigEndian.Uint16(k))
		}
	}
	return rec, nil
}

func loadRetained(b *bolt.Bucket, snap *broker.Snapshot) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil {
			return fmt.Errorf("%w: retained: key %q is a bucket", ErrCorrupt, k)
		}
		m, err := decodeRetained(v)
		if err != nil {
			return fmt.Errorf("retained topic key %q: %w", k, err)
		}
		if !bytes.Equal(appendKey(nil, m.Topic), k) {
			return fmt.Errorf("%w: retained key %q holds topic %q", ErrCorrupt, k, m.Topic)
		}
		snap.Retained = append(snap.Retained, m)
	}
	return nil
}
