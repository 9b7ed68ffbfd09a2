// Package store is the durable broker.Store of a node: persistent sessions,
// the messages queued and in flight for them, the inbound QoS 2 packet ids
// not yet released, and the retained set, kept in one bbolt file.
//
// It owns the file layout and the record encoding below, and the commit
// pipeline. It never interprets MQTT beyond what the ops say: it does not
// expire sessions or messages, route, or decide what to store. It never
// acknowledges a write (calls done with nil) before the transaction holding
// it has been fsynced.
//
// # Commit pipeline
//
// Commit encodes its ops in the caller's goroutine and queues one request
// (QueueSize requests at most; Commit blocks while the queue is full). One
// committer goroutine takes the first waiting request and every request
// queued behind it, up to MaxBatchOps ops, applies them in submission order
// in one read-write transaction, fsyncs once, and then calls each done in
// submission order with the transaction's result. Requests that arrive while
// a transaction is being written wait and form the next batch: that is the
// group commit. MaxBatchDelay > 0 additionally holds a batch open for more
// requests, which trades latency for fewer fsyncs.
//
// # Layout (format version 1)
//
//	meta/                          bucket
//	  version                      uint32, big endian: the format version (1)
//	sessions/                      bucket
//	  <client key>/                one bucket per stored session
//	    rec                        session record
//	    msgs/                      bucket
//	      <seq>                    uint64 big endian -> stored message record
//	    rel/                       bucket
//	      <packet id>              uint16 big endian -> empty value
//	retained/                      bucket
//	  <topic key>                  retained record
//
// A client key is the client id and a topic key is the topic name, except
// that a string that is empty, longer than 1024 bytes or starts with byte
// 0xFF (never the first byte of UTF-8) is keyed by 0xFF followed by its
// SHA-256, so that any string fits bbolt's key limits. The records carry
// the full client id and topic; Load checks that they match their keys.
// Big-endian keys make cursor order Seq order and packet id order.
//
// Open creates the buckets in an empty file and refuses a file whose format
// version is newer than this build reads (ErrUnsupportedVersion).
//
// # Record encoding (record version 1)
//
// Every record value starts with a record version byte (1). Integers are
// encoding/binary uvarints unless said otherwise; "varint" is the signed
// zig-zag form. string and bytes are a uvarint length and the raw bytes.
//
//	session record:
//	  byte    record version (1)
//	  string  ClientID
//	  byte    Version (MQTT protocol level)
//	  uvarint Expiry (at most 0xFFFFFFFF)
//	  string  Username
//	  varint  DisconnectedAt
//	  uvarint subscription count, then per subscription:
//	    string  Filter
//	    string  Group
//	    string  Real
//	    byte    options: bits 0-1 QoS, bit 2 NoLocal,
//	            bit 3 RetainAsPublished, bits 4-5 RetainHandling
//	    uvarint SubID (at most 0xFFFFFFFF)
//
//	stored message record:
//	  byte    record version (1)
//	  byte    flags: bit 0 Retain, bit 1 Released (always at offset 1, so
//	          OpReleaseMessage sets the bit without decoding the record)
//	  uvarint Seq (equal to the key)
//	  uvarint PacketID (at most 0xFFFF)
//	  byte    QoS
//	  uvarint subscription id count, then each id as a uvarint
//	  string  ShareFilter
//	  string  ShareGroup
//	  message
//
//	retained record:
//	  byte    record version (1)
//	  message
//
//	message:
//	  string  Topic
//	  bytes   Payload
//	  byte    QoS
//	  byte    flags: bit 0 Retain, bit 1 PayloadFormat present,
//	          bit 2 ContentType present, bit 3 ResponseTopic present,
//	          bit 4 CorrelationData present
//	  byte    PayloadFormat     (if present)
//	  string  ContentType       (if present)
//	  string  ResponseTopic     (if present)
//	  bytes   CorrelationData   (if present)
//	  uvarint user property count, then per property: string Key, string Value
//	  varint  ExpiresAt
//	  string  Origin
//
// Only the pass-through properties of broker.Message.Props are stored; any
// other property set there is dropped. Decoders check every length against
// the bytes left before allocating, reject unknown versions and flag bits,
// QoS above 2 and trailing bytes, copy everything they return out of the
// input, and report ErrCorrupt instead of panicking.
package store
