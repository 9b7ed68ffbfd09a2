package broker

import (
	"net"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// ClientInfo describes an authenticated connection to the hooks.
type ClientInfo struct {
	ClientID string
	Username string
	Version  packet.Version
	Remote   net.Addr
}

// AuthRequest is what a CONNECT presents for authentication.
type AuthRequest struct {
	ClientInfo
	Password    []byte
	HasUsername bool
	HasPassword bool
	// Method and Data are the 5.0 Authentication Method and Data of the
	// CONNECT, or of the latest AUTH packet in an enhanced exchange.
	Method string
	Data   []byte
}

// AuthResult is an authenticator's answer to one step.
type AuthResult struct {
	// Code is Success to admit, ContinueAuthentication to send Data in an
	// AUTH packet and wait for the client's next AUTH, or a failure code
	// (BadUserNameOrPassword, NotAuthorized, BadAuthenticationMethod, ...).
	Code packet.ReasonCode
	// Data is the Authentication Data sent back to the client.
	Data []byte
	// Username, if set, replaces the client's username (for ACLs).
	Username string
	// Expiry, if not zero, is when the credentials stop being valid (a
	// token's exp): the server closes the connection then, with DISCONNECT
	// 0xA0 (Maximum connect time) first for a 5.0 client. A successful
	// re-authentication replaces it; zero there means no limit any more.
	Expiry time.Time
}

// Authenticator admits or refuses connections. Authenticate is called once
// per CONNECT and once per AUTH packet of an enhanced exchange (5.0); it must
// be safe for concurrent use.
type Authenticator interface {
	Authenticate(req *AuthRequest) AuthResult
}

// Authorizer decides what an authenticated client may do. Its methods must be
// safe for concurrent use and cheap: CanRead runs for every delivery of a
// retained message.
type Authorizer interface {
	CanPublish(c *ClientInfo, topic string) bool
	CanSubscribe(c *ClientInfo, filter string) bool
	CanRead(c *ClientInfo, topic string) bool
}
