package store

import (
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/mqcluster/mqcluster/broker"
)

// TestRoundTrip writes every op kind, reopens the file and checks that Load
// returns exactly what the ops describe.
func TestRoundTrip(t *testing.T) {
	s := openAt(t, tempPath(t), testOptions)

	c1, c2 := sessionRecord("c1"), sessionRecord("c2")
	c2.Subscriptions, c2.Username, c2.Version = nil, "", 4
	m1 := storedMessage(1, fullMessage("t/1"))
	m256 := storedMessage(256, presentButEmpty("t/256")) // sorts after 2 only as a number
	m2 := storedMessage(2, bareMessage("t/2"))
	m3 := storedMessage(3, fullMessage("t/3"))
	mBig := storedMessage(1<<40, fullMessage("t/big"))
	mBig.SubIDs = nil
	mustCommit(t, s, putSession(c1), putMessage("c1", m256), putMessage("c1", m1))
	mustCommit(t, s, putMessage("c1", m3), putMessage("c1", mBig), putMessage("c1", m2))
	mustCommit(t, s, releaseMessage("c1", 2), deleteMessage("c1", 3))
	mustCommit(t, s, addRel("c1", 10), addRel("c1", 5), addRel("c1", 0x0100), addRel("c1", 7))
	mustCommit(t, s, clearRel("c1", 7), putSession(c2))
	mustCommit(t, s, putRetained(fullMessage("r/a")), putRetained(bareMessage("r/b")), putRetained(presentButEmpty("r/c")))
	mustCommit(t, s, deleteRetained("r/b"))
	// A new record for c1 keeps its messages and released ids.
	c1b := sessionRecord("c1")
	c1b.Expiry, c1b.DisconnectedAt, c1b.Subscriptions = 60, 0, c1b.Subscriptions[:1]
	mustCommit(t, s, putSession(c1b))

	released := *m2
	released.Released = true
	want := &broker.Snapshot{
		Sessions: []broker.SessionRecord{*c1b, *c2},
		Retained: []*broker.Message{fullMessage("r/a"), presentButEmpty("r/c")},
	}
	want.Sessions[0].Messages = []broker.StoredMessage{*m1, released, *m256, *mBig}
	want.Sessions[0].AwaitingRel = []uint16{5, 10, 0x0100}

	checkSnapshot(t, load(t, s), want)
	s = reopen(t, s)
	checkSnapshot(t, load(t, s), want)
}

func TestEmptyStore(t *testing.T) {
	s := openAt(t, tempPath(t), testOptions)
	checkSnapshot(t, load(t, s), &broker.Snapshot{})
	s = reopen(t, s)
	checkSnapshot(t, load(t, s), &broker.Snapshot{})
}

// TestOpsOnUnknownSessionIgnored: only OpPutSession creates a session; every
// other session op on a client id that is not stored leaves no trace, also
// after the session was deleted.
func TestOpsOnUnknownSessionIgnored(t *testing.T) {
	s := openAt(t, tempPath(t), testOptions)
	ghostOps := func(id string) []broker.StoreOp {
		return []broker.StoreOp{
			putMessage(id, storedMessage(1, fullMessage("t"))),
			releaseMessage(id, 1),
			deleteMessage(id, 2),
			addRel(id, 3),
			clearRel(id, 4),
			deleteSession(id),
		}
	}
	mustCommit(t, s, ghostOps("ghost")...)
	checkSnapshot(t, load(t, s), &broker.Snapshot{})

	mustCommit(t, s, putSession(sessionRecord("gone")))
	mustCommit(t, s, deleteSession("gone"))
	mustCommit(t, s, ghostOps("gone")...)
	// Each op alone too, each in its own transaction.
	for _, op := range ghostOps("gone") {
		mustCommit(t, s, op)
	}
	checkSnapshot(t, load(t, s), &broker.Snapshot{})
}

// TestDeleteSessionRemovesEverything: a session put again after a delete
// starts empty.
func TestDeleteSessionRemovesEverything(t *testing.T) {
	s := openAt(t, tempPath(t), testOptions)
	mustCommit(t, s,
		putSession(sessionRecord("c")),
		putMessage("c", storedMessage(1, fullMessage("t"))),
		putMessage("c", storedMessage(2, fullMessage("t"))),
		releaseMessage("c", 2),
		addRel("c", 9),
		putSession(sessionRecord("other")),
		putMessage("other", storedMessage(1, bareMessage("o"))),
		addRel("other", 1),
	)
	mustCommit(t, s, deleteSession("c"))

	other := sessionRecord("other")
	other.Messages = []broker.StoredMessage{*storedMessage(1, bareMessage("o"))}
	other.AwaitingRel = []uint16{1}
	checkSnapshot(t, load(t, s), &broker.Snapshot{Sessions: []broker.SessionRecord{*other}})

	mustCommit(t, s, putSession(sessionRecord("c")))
	s = reopen(t, s)
	checkSnapshot(t, load(t, s), &broker.Snapshot{Sessions: []broker.SessionRecord{*sessionRecord("c"), *other}})
}

// TestDeleteAndPutSessionInOneCommit: ops apply in order within a commit.
func TestDeleteAndPutSessionInOneCommit(t *testing.T) {
	s := openAt(t, tempPath(t), testOptions)
	mustCommit(t, s, putSession(sessionRecord("c")), putMessage("c", storedMessage(1, bareMessage("t"))))
	mustCommit(t, s, deleteSession("c"), putSession(sessionRecord("c")), addRel("c", 4))
	want := sessionRecord("c")
	want.AwaitingRel = []uint16{4}
	checkSnapshot(t, load(t, s), &broker.Snapshot{Sessions: []broker.SessionRecord{*want}})
}

// TestAppliedTwice: every op sets state, so committing it a second time
// (a retry after an error, a replay) changes nothing.
func TestAppliedTwice(t *testing.T) {
	base := []broker.StoreOp{
		putSession(sessionRecord("c")),
		putMessage("c", storedMessage(1, fullMessage("t/1"))),
		putMessage("c", storedMessage(2, fullMessage("t/2"))),
		addRel("c", 5),
		putRetained(fullMessage("r")),
	}
	newer := sessionRecord("c")
	newer.Expiry = 10
	tests := []struct {
		name string
		op   broker.StoreOp
	}{
		{"put session new", putSession(sessionRecord("new"))},
		{"put session existing", putSession(newer)},
		{"delete session", deleteSession("c")},
		{"put message new", putMessage("c", storedMessage(3, bareMessage("t/3")))},
		{"put message existing", putMessage("c", storedMessage(1, bareMessage("t/1b")))},
		{"delete message", deleteMessage("c", 1)},
		{"release message", releaseMessage("c", 2)},
		{"add rel", addRel("c", 6)},
		{"clear rel", clearRel("c", 5)},
		{"put retained new", putRetained(fullMessage("r2"))},
		{"put retained existing", putRetained(bareMessage("r"))},
		{"delete retained", deleteRetained("r")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openAt(t, tempPath(t), testOptions)
			mustCommit(t, s, base...)
			before := load(t, s)
			mustCommit(t, s, tt.op)
			once := load(t, s)
			if reflect.DeepEqual(before, once) {
				t.Fatalf("the op changed nothing: the test proves nothing")
			}
			mustCommit(t, s, tt.op)
			checkSnapshot(t, load(t, s), once)
			mustCommit(t, s, tt.op, tt.op)
			checkSnapshot(t, load(t, s), once)
		})
	}
}

// TestLongAndOddKeys: client ids and topics that do not fit or may not be
// bbolt keys as they are round-trip and stay distinct.
func TestLongAndOddKeys(t *testing.T) {
	s := openAt(t, tempPath(t), testOptions)
	long := strings.Repeat("x", 70_000) // above bbolt's 32 KiB key limit
	longer := long + "y"
	ff := "\xff" + "raw" // cannot collide with a hashed key
	var want broker.Snapshot
	for _, id := range []string{"", long, longer, ff, strings.Repeat("z", maxRawKey)} {
		mustCommit(t, s, putSession(sessionRecord(id)), addRel(id, 1))
		mustCommit(t, s, putRetained(bareMessage(id)))
	}
	// In key order: raw keys first, then hashed ones by hash.
	for _, id := range []string{strings.Repeat("z", maxRawKey), "", long, longer, ff} {
		rec := sessionRecord(id)
		rec.AwaitingRel = []uint16{1}
		want.Sessions = append(want.Sessions, *rec)
		want.Retained = append(want.Retained, bareMessage(id))
	}
	got := load(t, s)
	if len(got.Sessions) != 5 || len(got.Retained) != 5 {
		t.Fatalf("got %d sessions, %d retained; want 5 and 5", len(got.Sessions), len(got.Retained))
	}
	// Hashed keys sort by hash: compare as sets.
	byID := map[string]broker.SessionRecord{}
	for _, r := range got.Sessions {
		byID[r.ClientID] = r
	}
	for _, r := range want.Sessions {
		if !reflect.DeepEqual(byID[r.ClientID], r) {
			t.Errorf("session %.20q: got %+v", r.ClientID, byID[r.ClientID])
		}
	}
	topics := map[string]bool{}
	for _, m := range got.Retained {
		topics[m.Topic] = true
	}
	for _, m := range want.Retained {
		if !topics[m.Topic] {
			t.Errorf("retained %.20q missing", m.Topic)
		}
	}
	mustCommit(t, s, deleteSession(long), deleteRetained(long))
	if got := load(t, s); len(got.Sessions) != 4 || len(got.Retained) != 4 {
		t.Fatalf("after deleting the long key: %d sessions, %d retained; want 4 and 4", len(got.Sessions), len(got.Retained))
	}
}

// TestInvalidOpRejectedAlone: a malformed commit gets ErrInvalidOp and
// applies nothing; the commits batched with it are applied.
func TestInvalidOpRejectedAlone(t *testing.T) {
	s := openAt(t, tempPath(t), testOptions)
	mustCommit(t, s, putSession(sessionRecord("c")))
	bad := []struct {
		name string
		op   broker.StoreOp
	}{
		{"no session", broker.StoreOp{Kind: broker.OpPutSession, ClientID: "c"}},
		{"no message", broker.StoreOp{Kind: broker.OpPutMessage, ClientID: "c"}},
		{"no msg", broker.StoreOp{Kind: broker.OpPutMessage, ClientID: "c", Message: &broker.StoredMessage{Seq: 1}}},
		{"qos 3", putMessage("c", &broker.StoredMessage{Seq: 1, QoS: 3, Msg: bareMessage("t")})},
		{"no retained", broker.StoreOp{Kind: broker.OpPutRetained}},
		{"unknown kind", broker.StoreOp{Kind: 200, ClientID: "c"}},
		{"zero kind", broker.StoreOp{ClientID: "c"}},
		{"ids differ", broker.StoreOp{Kind: broker.OpPutSession, ClientID: "c", Session: sessionRecord("d")}},
	}
	for _, b := range bad {
		release := hold(t, s)
		before := s.Stats().Transactions
		errs := make([]chan error, 3)
		for i := range errs {
			errs[i] = make(chan error, 1)
		}
		s.Commit([]broker.StoreOp{addRel("c", 1)}, func(err error) { errs[0] <- err })
		// The valid op before the bad one must not be applied either.
		s.Commit([]broker.StoreOp{addRel("c", 2), b.op}, func(err error) { errs[1] <- err })
		s.Commit([]broker.StoreOp{addRel("c", 3)}, func(err error) { errs[2] <- err })
		release()
		if err := <-errs[0]; err != nil {
			t.Errorf("%s: commit before: %v", b.name, err)
		}
		if err := <-errs[1]; !errors.Is(err, ErrInvalidOp) {
			t.Errorf("%s: bad commit: got %v, want ErrInvalidOp", b.name, err)
		}
		if err := <-errs[2]; err != nil {
			t.Errorf("%s: commit after: %v", b.name, err)
		}
		if n := s.Stats().Transactions - before; n != 1 {
			t.Errorf("%s: %d transactions, want 1", b.name, n)
		}
		if got := load(t, s).Sessions[0].AwaitingRel; !reflect.DeepEqual(got, []uint16{1, 3}) {
			t.Errorf("%s: awaiting rel %v, want [1 3]", b.name, got)
		}
		mustCommit(t, s, clearRel("c", 1), clearRel("c", 3))
	}
}

// TestLoadSharesNothingWithTheFile: what Load returns stays valid and
// unchanged after later writes and after Close unmaps the file.
func TestLoadSharesNothingWithTheFile(t *testing.T) {
	s := openAt(t, tempPath(t), testOptions)
	mustCommit(t, s, putSession(sessionRecord("c")), putMessage("c", storedMessage(1, fullMessage("t"))), putRetained(fullMessage("r")))
	snap := load(t, s)
	want := load(t, s)
	mustCommit(t, s, putMessage("c", storedMessage(1, bareMessage("overwritten"))), putRetained(bareMessage("r")))
	for i := range 200 { // grow the file so that bbolt remaps it
		mustCommit(t, s, putRetained(&broker.Message{Topic: "fill/" + strings.Repeat("f", i), Payload: make([]byte, 4096)}))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkSnapshot(t, snap, want)
}

func TestOpenRefusesNewerFormat(t *testing.T) {
	path := tempPath(t)
	s := openAt(t, path, testOptions)
	mustCommit(t, s, putSession(sessionRecord("c")))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	setMeta(t, path, binary.BigEndian.AppendUint32(nil, FormatVersion+1))
	_, err := Open(path, testOptions)
	if !errors.Is(err, ErrUnsupportedVersion) || !strings.Contains(err.Error(), "format version 2") {
		t.Fatalf("Open: got %v, want ErrUnsupportedVersion naming version 2", err)
	}
	setMeta(t, path, []byte{1})
	if _, err := Open(path, testOptions); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with a bad version value: got %v, want ErrCorrupt", err)
	}
}

func TestOpenRefusesForeignFile(t *testing.T) {
	path := tempPath(t)
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket([]byte("someone-else"))
		return err
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, testOptions); err == nil || !strings.Contains(err.Error(), "not an mqcluster store") {
		t.Fatalf("Open: got %v, want 'not an mqcluster store'", err)
	}
}

func TestOpenLocked(t *testing.T) {
	path := tempPath(t)
	openAt(t, path, testOptions)
	opts := testOptions
	opts.LockTimeout = 50e6
	if _, err := Open(path, opts); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: got %v, want ErrLocked", err)
	}
}

// setMeta overwrites the format version of a closed store file.
func setMeta(t *testing.T, path string, v []byte) {
	t.Helper()
	rawUpdate(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyVersion, v) })
}

// rawUpdate changes a closed store file behind the Store's back.
func rawUpdate(t *testing.T, path string, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(fn)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestLoadCorruptRecord: a damaged record fails Load with an error naming
// it, never a panic or a silently shorter snapshot.
func TestLoadCorruptRecord(t *testing.T) {
	seqKey := binary.BigEndian.AppendUint64(nil, 5)
	tests := []struct {
		name   string
		damage func(tx *bolt.Tx) error
		want   []string
	}{
		{"message record", func(tx *bolt.Tx) error {
			return sessionBucket(tx, "c1").Bucket(bucketMsgs).Put(seqKey, []byte{recordV1, 0, 5, 1, 1, 200})
		}, []string{`"c1"`, "seq 5"}},
		{"message seq mismatch", func(tx *bolt.Tx) error {
			return sessionBucket(tx, "c1").Bucket(bucketMsgs).Put(seqKey, appendStored(nil, storedMessage(6, bareMessage("t"))))
		}, []string{`"c1"`, "seq 5", "record says seq 6"}},
		{"message record version", func(tx *bolt.Tx) error {
			return sessionBucket(tx, "c1").Bucket(bucketMsgs).Put(seqKey, []byte{9})
		}, []string{`"c1"`, "seq 5", "record version 9"}},
		{"session record", func(tx *bolt.Tx) error {
			return sessionBucket(tx, "c1").Put(keyRec, []byte{recordV1, 2, 'c'})
		}, []string{`"c1"`}},
		{"session id mismatch", func(tx *bolt.Tx) error {
			return sessionBucket(tx, "c1").Put(keyRec, appendSession(nil, "c2", sessionRecord("c2")))
		}, []string{`"c1"`, `"c2"`}},
		{"session without record", func(tx *bolt.Tx) error {
			return sessionBucket(tx, "c1").Delete(keyRec)
		}, []string{`"c1"`, "no record"}},
		{"rel key", func(tx *bolt.Tx) error {
			return sessionBucket(tx, "c1").Bucket(bucketRel).Put([]byte{1, 2, 3}, nil)
		}, []string{`"c1"`, "rel key 010203"}},
		{"retained record", func(tx *bolt.Tx) error {
			return tx.Bucket(bucketRetained).Put([]byte("r"), []byte{recordV1, 1, 'r', 0, 3})
		}, []string{`"r"`, "message qos: 3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tempPath(t)
			s := openAt(t, path, testOptions)
			mustCommit(t, s, putSession(sessionRecord("c1")), putMessage("c1", storedMessage(5, fullMessage("t"))), addRel("c1", 1), putRetained(bareMessage("r")))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			rawUpdate(t, path, tt.damage)
			s = openAt(t, path, testOptions)
			snap, err := s.Load()
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Load: got %v, %v; want ErrCorrupt", snap, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestReleaseCorruptMessageFailsCommit: OpReleaseMessage reads the record
// it changes; a damaged one fails the commit instead of being rewritten.
func TestReleaseCorruptMessageFailsCommit(t *testing.T) {
	path := tempPath(t)
	s := openAt(t, path, testOptions)
	mustCommit(t, s, putSession(sessionRecord("c1")), putMessage("c1", storedMessage(5, fullMessage("t"))))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		return sessionBucket(tx, "c1").Bucket(bucketMsgs).Put(binary.BigEndian.AppendUint64(nil, 5), []byte{7})
	})
	s = openAt(t, path, testOptions)
	err := commit(t, s, releaseMessage("c1", 5))
	if !errors.Is(err, ErrCommit) || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "seq 5") {
		t.Fatalf("commit: got %v, want ErrCommit and ErrCorrupt naming seq 5", err)
	}
}

func sessionBucket(tx *bolt.Tx, id string) *bolt.Bucket {
	return tx.Bucket(bucketSessions).Bucket(appendKey(nil, id))
}

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, o := range []Options{{QueueSize: -1}, {MaxBatchOps: -1}, {MaxBatchDelay: -1}, {LockTimeout: -1}} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v: no error", o)
		}
		if _, err := Open(tempPath(t), o); err == nil {
			t.Errorf("Open with %+v: no error", o)
		}
	}
}
