package broker

import (
	"errors"
	"fmt"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// PeerIdentifier is implemented by a connection whose transport has
// identified the peer, as a TLS listener does from a verified client
// certificate. The broker asks once the CONNECT has been read (so after the
// TLS handshake).
type PeerIdentifier interface {
	// PeerIdentity returns the username and the client identifier the
	// transport vouches for; either or both may be empty.
	PeerIdentity() (username, clientID string)
}

// AnonymousPolicy is implemented by a connection whose listener decides
// whether a client that presents no credentials (no username, no password,
// no authentication method, no identity from the transport) may connect.
// Such a client is refused with CONNACK 0x87 Not authorized (return code 5
// in 3.1.1) when AllowAnonymous is false. A connection that does not
// implement it leaves every decision to the Authenticator.
type AnonymousPolicy interface {
	AllowAnonymous() bool
}

// errAnonymous is the reason an anonymous CONNECT is refused.
var errAnonymous = errors.New("anonymous clients are not allowed on this listener")

// applyPeerIdentity takes into cp what the transport knows about the peer:
// a username replaces the CONNECT's (the certificate is then the client's
// credential), a client identifier replaces the client's own. It reports
// whether the username came from the transport, and false in ok after
// refusing the CONNECT.
func (c *conn) applyPeerIdentity(cp *packet.Connect) (certified, ok bool) {
	pi, has := c.nc.(PeerIdentifier)
	if !has {
		return false, true
	}
	user, id := pi.PeerIdentity()
	if id != "" {
		if len(id) > c.srv.cfg.MaxClientIDLen {
			c.refuse(packet.ClientIdentifierNotValid, fmt.Errorf("client identifier from the certificate: %d bytes", len(id)))
			return false, false
		}
		cp.ClientID = id
	}
	if user != "" {
		cp.Username, cp.HasUsername = user, true
	}
	return user != "", true
}

// admit decides whether the client may connect: the listener's anonymous
// policy, then the transport's identity or the Authenticator. It returns
// what authenticate returns: the authentication data for the CONNACK and
// when the credentials expire (zero: never).
func (c *conn) admit(cp *packet.Connect, certified bool) ([]byte, time.Time, bool) {
	method := cp.Properties.AuthMethod
	anonymous := !cp.HasUsername && !cp.HasPassword && method == ""
	if p, has := c.nc.(AnonymousPolicy); has && anonymous && !p.AllowAnonymous() {
		c.refuse(packet.NotAuthorized, errAnonymous)
		return nil, time.Time{}, false
	}
	if certified && method == "" {
		// A verified certificate whose name is the username: the
		// Authorizer decides what it may do, as for any other user.
		return nil, time.Time{}, true
	}
	return c.authenticate(cp)
}
