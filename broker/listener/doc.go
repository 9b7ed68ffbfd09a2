// Package listener owns the ways MQTT clients reach a broker: plain TCP,
// TLS (reloadable certificates, optional client certificates whose names
// can become the username or client id), WebSocket and secure WebSocket
// (MQTT over binary frames as a byte stream), each optionally behind a
// proxy that speaks the PROXY protocol (v1 and v2).
//
// A Listener is a net.Listener: broker.Server.Serve accepts from it. The
// connections it returns also tell the broker the listener's anonymous
// policy (AllowAnonymous) and, for TLS, the identity of a verified client
// certificate (PeerIdentity).
//
// It never waits on one client in Accept: TLS handshakes run in the
// connection's own goroutine at its first read (under the broker's
// CONNECT deadline), PROXY headers and WebSocket upgrades in a goroutine
// per pending connection with a deadline of their own. It never imports
// the broker: it only implements the small interfaces the broker declares.
package listener
