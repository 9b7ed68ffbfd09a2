package broker

// Store persists what must survive a restart, kill -9 included: persistent
// sessions with their subscriptions, the messages queued and in flight for
// them (QoS 2 state included), the QoS 2 packet ids their clients have sent
// and not yet released, and the retained set.
//
// Commit is the only write path. It applies ops atomically and durably (one
// transaction, fsync) and then calls done; the broker sends the packet that
// depends on the write (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK) from done,
// so nothing is acknowledged before it is on disk. Implementations batch
// concurrent commits into one transaction (group commit) and must call the
// done functions in the order Commit was called, from one goroutine. A
// non-nil error means none of that commit's ops were applied; the broker
// logs it and goes on from memory. Commit may block while the pipeline is
// full; it is never called with a broker lock held, and done functions never
// block, call Commit or call Close.
type Store interface {
	Commit(ops []StoreOp, done func(error))
	// Load returns everything stored, for a restart.
	Load() (*Snapshot, error)
	// Close waits for pending commits and closes the store.
	Close() error
}

// StoreOpKind says what a StoreOp does.
type StoreOpKind uint8

// Store operations. Ops on a session that is not stored (no OpPutSession
// since its last OpDeleteSession) are ignored, except OpPutSession itself.
const (
	// OpPutSession writes Session (without Messages and AwaitingRel),
	// replacing the stored record but keeping the session's messages and
	// released ids.
	OpPutSession StoreOpKind = iota + 1
	// OpDeleteSession removes ClientID's record, messages and released ids.
	OpDeleteSession
	// OpPutMessage stores Message in ClientID's queue under Message.Seq.
	OpPutMessage
	// OpDeleteMessage removes message Seq of ClientID (its flow ended).
	OpDeleteMessage
	// OpReleaseMessage marks message Seq of ClientID as PUBREC-ed: after a
	// restart the server resends PUBREL for it, not PUBLISH.
	OpReleaseMessage
	// OpAddRel records inbound QoS 2 PacketID of ClientID as received and
	// not yet released.
	OpAddRel
	// OpClearRel forgets inbound QoS 2 PacketID of ClientID (PUBREL came).
	OpClearRel
	// OpPutRetained sets the retained message Retained (its Topic).
	OpPutRetained
	// OpDeleteRetained clears the retained message of Topic.
	OpDeleteRetained
)

// StoreOp is one write.
type StoreOp struct {
	Kind     StoreOpKind
	ClientID string
	Session  *SessionRecord
	Message  *StoredMessage
	Seq      uint64
	PacketID uint16
	Topic    string
	Retained *Message
}

// StoredMessage is one message queued or in flight for a persistent session.
type StoredMessage struct {
	Seq      uint64 // order within the session, increasing
	PacketID uint16 // 0 for QoS 0
	QoS      byte
	Retain   bool
	Released bool // PUBREC received: PUBREL is what is resent
	SubIDs   []uint32
	// ShareFilter and ShareGroup name the share group it came through.
	ShareFilter, ShareGroup string
	Msg                     *Message
	// Restored, in a record a session is exported to: the message was in
	// the session's store when this node started (not stored).
	Restored bool
}

// SessionRecord is the stored form of a persistent session.
type SessionRecord struct {
	ClientID string
	Version  byte
	Expiry   uint32 // seconds after disconnect; 0xFFFFFFFF never
	Username string
	// DisconnectedAt is the unix-nanosecond time of the last disconnect, 0
	// while connected.
	DisconnectedAt int64
	Subscriptions  []Subscription
	// Messages (in Seq order) and AwaitingRel are filled by Load only.
	Messages    []StoredMessage
	AwaitingRel []uint16
	// Delivered names the messages whose delivery to the session ended
	// lately (acknowledged by its client), newest first: a session that
	// moves between nodes takes them along, so that no node delivers them
	// again. Not stored.
	Delivered []MessageRef
}

// Snapshot is what a Store hands back on start.
type Snapshot struct {
	Sessions []SessionRecord
	Retained []*Message
}
