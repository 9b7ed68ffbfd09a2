// Package packet is the MQTT 3.1, 3.1.1 and 5.0 codec: fixed header, all
// fifteen control packets, 5.0 properties and reason codes, the stream reader
// a connection uses, and validation against the normative statements of the
// specifications.
//
// It owns bytes on the wire and nothing else. It never panics on input, never
// reads past a packet, never keeps the caller's buffer, and checks the
// remaining length against the configured maximum packet size before it
// allocates a body. Decoding answers "is this well formed"; Validate answers
// "may a server accept it" and returns the reason code the server must send.
// It imports only the standard library and broker/topic.
package packet
