// Package packet is the MQTT 3.1, 3.1.1 and 5.0 codec: fixed header, all
// fifteen control packets, 5.0 properties and reason codes, the stream reader
// a connection uses, and validation against the normative statements of the
// specifications.
//
// It owns bytes on the wire and nothing else. It never panics on input, never
// reads past a packet, never keeps the caller's buffer, and checks the
// remaining length against the configured maximum packet size before it
// allocates a body. It imports only the standard library and broker/topic,
// does no I/O of its own beyond the io.Reader it is handed, and keeps no
// state between packets but a sync.Pool of read buffers.
//
// # Reading
//
// ParseFixedHeader reads the fixed header and refuses, from it alone, a
// malformed Remaining Length, reserved type 0, wrong fixed-header flags and a
// packet over the maximum size. Decode turns the body into a Packet;
// DecodePublish decodes a PUBLISH into a reused *Publish with one allocation.
// Reader does both over a connection, holding no buffer while the connection
// is idle.
//
// # What Decode decides and what Validate decides
//
// Decode answers "are these bytes a packet"; Validate answers "may a server
// accept this packet from a client", with the reason code to answer.
//
// Decode (and ParseFixedHeader) refuse, as *Error values:
//   - MalformedPacket (0x81): everything about the bytes. A Remaining Length
//     of five bytes or not minimally encoded; reserved packet type 0, and 15
//     before 5.0; fixed-header flags other than 0010 for PUBREL, SUBSCRIBE
//     and UNSUBSCRIBE and 0000 for the others; PUBLISH QoS 3; a packet
//     identifier of 0 where one is required (PUBLISH QoS > 0, SUBSCRIBE,
//     UNSUBSCRIBE); a field that a length or a flag promises but the packet
//     lacks, a length past the end, bytes after the last field; strings that
//     are not well-formed UTF-8 or contain U+0000 (binary data is not
//     checked); CONNECT reserved flag, will QoS 3, will QoS or retain without
//     the will flag, and before 5.0 a password without a user name; an
//     unknown property or one not allowed in the packet type; reserved bits
//     of SUBSCRIBE options (and a requested QoS of 3 before 5.0); 3.1.1
//     CONNACK and SUBACK codes the version does not define.
//   - ProtocolError (0x82) for the few protocol errors a decoded packet
//     cannot represent or that leave no packet: a property repeated that may
//     appear once, and a SUBSCRIBE or UNSUBSCRIBE without any topic filter
//     ([MQTT-3.8.3-3] in 3.1.1, [MQTT-3.8.3-2] and [MQTT-3.10.3-2] in 5.0,
//     which call it a protocol violation / Protocol Error; BAD-INPUT row 16
//     says 0x81, the specification decides 0x82). Decode with no version
//     (before CONNECT) refuses anything but CONNECT with 0x82 too.
//   - UnsupportedProtocolVersion (0x84): a CONNECT whose protocol name and
//     level are not "MQIsdp"/3, "MQTT"/4 or "MQTT"/5. The *Connect returned
//     along with the error carries the name and level read, so the server can
//     answer CONNACK 0x01 in 3.1.1 format or 0x84 in 5.0 format.
//   - PacketTooLarge (0x95): from ParseFixedHeader, before any body exists.
//
// Validate refuses what the packet means:
//   - CONNECT: client identifier empty with clean session 0 in 3.1.1
//     [MQTT-3.1.3-8], empty in 3.1, or longer than the limit (0x85); Receive
//     Maximum or Maximum Packet Size 0, Request Problem/Response Information
//     other than 0 or 1, Authentication Data without Authentication Method
//     (0x82); a will topic that is not a valid topic name (0x90); will
//     message properties as for PUBLISH.
//   - PUBLISH: DUP at QoS 0 [MQTT-3.3.1-2] (0x81); a topic with '+' or '#',
//     invalid or with too many levels (0x90); a zero-length topic without a
//     Topic Alias (0x82); Topic Alias 0 or above the server's Topic Alias
//     Maximum [MQTT-3.3.2-8] [MQTT-3.3.2-9] (0x94); a Subscription
//     Identifier from a client [MQTT-3.3.4-6], a Payload Format Indicator
//     other than 0 or 1, a Response Topic with wildcards (0x82); a payload
//     that is not UTF-8 under Payload Format Indicator 1 (0x99).
//   - SUBSCRIBE: Subscription Identifier 0 or repeated (0x82); in 5.0 a QoS
//     or Retain Handling of 3 (0x82, section 3.8.3.1) and No Local on a
//     shared subscription [MQTT-3.8.3-4] (0x82). A filter that is invalid,
//     has too many levels or a bad $share prefix does not make the packet
//     unacceptable: FilterCode gives its SUBACK code (0x8F in 5.0, 0x80 in
//     3.1.1).
//   - PUBACK, PUBREC, PUBREL, PUBCOMP, DISCONNECT and AUTH: reason codes a
//     client may not send (0x82); AUTH before 5.0 or without an
//     Authentication Method (0x82).
//   - CONNACK, SUBACK, UNSUBACK, PINGRESP from a client (0x82).
//
// What needs session state is the broker's: a second CONNECT, packet
// identifiers in use or unknown, Receive Maximum, whether enhanced
// authentication was negotiated, topic alias mappings, authorization.
//
// # Writing
//
// Append (and the Append method of every packet) computes the size first and
// writes into dst without allocating when dst has the capacity. For 3.1 and
// 3.1.1 it writes no properties and maps reason codes to what the version can
// carry; for 5.0 it writes the shortest legal form. Size gives the encoded
// size without encoding.
package packet
