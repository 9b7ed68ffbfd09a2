package broker

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"time"

	"github.com/mqcluster/mqcluster/broker/packet"
)

// expiryNever is the session expiry of a 3.1.1 clean-session-0 session and
// of a 5.0 session with expiry 0xFFFFFFFF ([MQTT-3.1.2-... ] "does not expire").
const expiryNever = ^uint32(0)

// handshake reads and answers the CONNECT (and any AUTH exchange) within the
// connect timeout. It reports whether the connection is now established.
func (c *conn) handshake() bool {
	cfg := &c.srv.cfg
	c.nc.SetReadDeadline(time.Now().Add(cfg.ConnectTimeout))
	pk, err := c.rd.ReadPacket()
	if err != nil {
		c.refuseConnect(pk, err)
		return false
	}
	cp, ok := pk.(*packet.Connect)
	if !ok {
		// [MQTT-3.1.0-1]: the first packet must be CONNECT.
		c.srv.stats.ProtocolErrors.Add(1)
		c.srv.log.Info("first packet is not CONNECT; closing", "remote", c.nc.RemoteAddr().String(), "packet", pk.Type().String())
		c.closeNow()
		return false
	}
	c.version = cp.Version
	c.rd.SetVersion(cp.Version)
	if !c.srv.connects.allow(time.Now()) {
		c.srv.stats.RateLimitedConnects.Add(1)
		c.refuse(packet.ConnectionRateExceeded, errors.New("connect rate exceeded"))
		return false
	}
	if err := packet.Validate(cp, cp.Version, c.srv.lim); err != nil {
		c.refuse(packet.CodeOf(err), err)
		return false
	}
	certified, ok := c.applyPeerIdentity(cp)
	if !ok {
		return false
	}
	props := &cp.Properties
	assigned := false
	if cp.ClientID == "" {
		// [MQTT-3.1.3-6] the server assigns an id; 3.1.1 only with clean
		// session 1 ([MQTT-3.1.3-8], decided by Validate).
		cp.ClientID = newClientID()
		assigned = cp.Version == packet.V5
	}
	c.clientID = cp.ClientID
	c.info = ClientInfo{ClientID: cp.ClientID, Username: cp.Username, Version: cp.Version, Remote: c.nc.RemoteAddr()}

	if cfg.MaximumQoS < 2 && cp.Will != nil && cp.Will.QoS > cfg.MaximumQoS {
		c.refuse(packet.QoSNotSupported, errors.New("will QoS above maximum QoS"))
		return false
	}
	if !cfg.RetainAvailable && cp.Will != nil && cp.Will.Retain {
		c.refuse(packet.RetainNotSupported, errors.New("will retain not supported"))
		return false
	}
	authData, authExpiry, ok := c.admit(cp, certified)
	if !ok {
		return false
	}
	if cp.Will != nil && isSysTopic(cp.Will.Topic) {
		// Like a PUBLISH to $SYS (BAD-INPUT row 13): the broker's own topics.
		c.refuse(packet.NotAuthorized, errors.New("will topic in $SYS"))
		return false
	}
	if cp.Will != nil && c.srv.acl != nil && !c.srv.acl.CanPublish(&c.info, cp.Will.Topic) {
		c.refuse(packet.NotAuthorized, errors.New("will topic not authorized"))
		return false
	}

	// Keep alive: the client's, capped by the server's maximum ([MQTT-3.1.2-21]).
	ka := cp.KeepAlive
	serverKA := false
	if cfg.MaxKeepAlive > 0 && (ka == 0 || ka > cfg.MaxKeepAlive) {
		ka = cfg.MaxKeepAlive
		serverKA = cp.Version == packet.V5
	}
	c.keepAlive = time.Duration(ka) * time.Second
	c.nc.SetReadDeadline(time.Time{})

	if cp.Version == packet.V5 {
		c.clientAliasMax = props.TopicAliasMaximum
		c.requestProblem = !props.Has(packet.PropRequestProblemInfo) || props.RequestProblemInfo == 1
		if props.Has(packet.PropMaximumPacketSize) {
			c.clientMaxPacket = int(props.MaximumPacketSize)
		}
	}
	c.will = cp.Will

	ack := &packet.Connack{ReasonCode: packet.Success}
	if cp.Version == packet.V5 {
		c.connackProps(ack, cp, assigned, serverKA, ka, authData)
	}
	if err := c.srv.unavailableErr(); err != nil {
		c.refuse(packet.ServerUnavailable, err)
		return false
	}
	tr, ok := c.claimSession(cp)
	if !ok {
		return false
	}
	_, present := c.srv.attach(c, cp, ack, tr)
	c.registerWill(cp)
	c.setAuthExpiry(authExpiry)
	c.srv.stats.Connected.Add(1)
	c.srv.log.Debug("client connected", "client_id", c.clientID, "version", cp.Version.String(),
		"clean_start", cp.CleanStart, "session_present", present)
	return true
}

// connackProps fills the 5.0 CONNACK properties: what the server announces
// about itself and what it decided for this client.
func (c *conn) connackProps(ack *packet.Connack, cp *packet.Connect, assigned, serverKA bool, ka uint16, authData []byte) {
	cfg := &c.srv.cfg
	p := &ack.Properties
	set := func(id packet.PropID) { p.Set(id) }
	if assigned {
		p.AssignedClientID = cp.ClientID
		set(packet.PropAssignedClientID)
	}
	if serverKA {
		p.ServerKeepAlive = ka
		set(packet.PropServerKeepAlive)
	}
	p.ReceiveMaximum = cfg.ReceiveMaximum
	set(packet.PropReceiveMaximum)
	p.MaximumPacketSize = uint32(cfg.MaxPacketSize)
	set(packet.PropMaximumPacketSize)
	p.TopicAliasMaximum = cfg.TopicAliasMaximum
	set(packet.PropTopicAliasMaximum)
	if cfg.MaximumQoS < 2 {
		p.MaximumQoS = cfg.MaximumQoS
		set(packet.PropMaximumQoS)
	}
	if !cfg.RetainAvailable {
		p.RetainAvailable = 0
		set(packet.PropRetainAvailable)
	}
	if !cfg.WildcardSubscriptions {
		p.WildcardSubAvailable = 0
		set(packet.PropWildcardSubAvailable)
	}
	if !cfg.SubscriptionIdentifiers {
		p.SubIDAvailable = 0
		set(packet.PropSubIDAvailable)
	}
	if !cfg.SharedSubscriptions {
		p.SharedSubAvailable = 0
		set(packet.PropSharedSubAvailable)
	}
	if exp := cp.Properties.SessionExpiry; cfg.MaxSessionExpiry > 0 && exp > cfg.MaxSessionExpiry {
		p.SessionExpiry = cfg.MaxSessionExpiry
		set(packet.PropSessionExpiry)
	}
	// [MQTT-3.1.2-28..29]: response information only when requested.
	if cp.Properties.RequestResponseInfo == 1 && cfg.ResponseInformation != "" {
		p.ResponseInfo = cfg.ResponseInformation
		set(packet.PropResponseInfo)
	}
	if cp.Properties.AuthMethod != "" {
		p.AuthMethod = cp.Properties.AuthMethod
		set(packet.PropAuthMethod)
		if authData != nil {
			p.AuthData = authData
			set(packet.PropAuthData)
		}
	}
}

// authenticate runs the authenticator over the CONNECT and, for 5.0
// enhanced authentication, the AUTH exchange ([MQTT-4.12.0-...]). It returns
// the final authentication data for the CONNACK and when the credentials
// expire (zero: never).
func (c *conn) authenticate(cp *packet.Connect) ([]byte, time.Time, bool) {
	method := cp.Properties.AuthMethod
	if c.srv.auth == nil {
		if method != "" {
			// No enhanced authentication configured: [MQTT-4.12.0-...] the
			// server refuses an unknown method with 0x8C.
			c.refuse(packet.BadAuthenticationMethod, errors.New("no authentication method configured"))
			return nil, time.Time{}, false
		}
		return nil, time.Time{}, true
	}
	req := &AuthRequest{ClientInfo: c.info, Password: cp.Password, HasUsername: cp.HasUsername,
		HasPassword: cp.HasPassword, Method: method, Data: cp.Properties.AuthData}
	for {
		res := c.srv.auth.Authenticate(req)
		if res.Username != "" {
			c.info.Username = res.Username
		}
		switch {
		case res.Code == packet.Success:
			return res.Data, res.Expiry, true
		case res.Code == packet.ContinueAuthentication && c.version == packet.V5 && method != "":
			auth := &packet.Auth{ReasonCode: packet.ContinueAuthentication}
			auth.Properties.AuthMethod = method
			auth.Properties.Set(packet.PropAuthMethod)
			if res.Data != nil {
				auth.Properties.AuthData = res.Data
				auth.Properties.Set(packet.PropAuthData)
			}
			c.writeDirect(auth)
			pk, err := c.rd.ReadPacket()
			if err != nil {
				c.refuseRead(err)
				return nil, time.Time{}, false
			}
			a, ok := pk.(*packet.Auth)
			if !ok || a.ReasonCode != packet.ContinueAuthentication || a.Properties.AuthMethod != method {
				c.refuse(packet.ProtocolError, errors.New("expected AUTH continuing the exchange"))
				return nil, time.Time{}, false
			}
			req.Data = a.Properties.AuthData
		default:
			code := res.Code
			if !code.IsError() {
				code = packet.NotAuthorized
			}
			c.srv.log.Info("authentication failed", "client_id", c.clientID, "username", cp.Username,
				"remote", c.nc.RemoteAddr().String(), "reason_code", byte(code))
			c.refuse(code, nil)
			return nil, time.Time{}, false
		}
	}
}

// refuseConnect answers a CONNECT that could not be read, in the version the
// client speaks where that is known: an unsupported protocol name or level
// gets CONNACK 0x84 in the 5.0 form when the level is 5, else return code
// 0x01 in the 3.1.1 form ([MQTT-3.1.2-2] in both); a malformed CONNECT whose
// first bytes say "MQTT" level 5 gets CONNACK 0x81 or 0x82 before the close
// ([MQTT-3.1.4-1], section 4.13). Anything else (an oversized or unparsable
// fixed header, a first packet that is not CONNECT, a 3.1.1 CONNECT that is
// malformed, a timeout) is closed without an answer.
func (c *conn) refuseConnect(pk packet.Packet, err error) {
	var perr *packet.Error
	if errors.As(err, &perr) {
		switch perr.Code {
		case packet.UnsupportedProtocolVersion:
			c.version = packet.V311
			if cp, ok := pk.(*packet.Connect); ok && cp.Version == packet.V5 {
				c.version = packet.V5
			}
		case packet.MalformedPacket, packet.ProtocolError:
			if c.head.version() == packet.V5 {
				c.version = packet.V5
			}
		}
	}
	c.refuseRead(err)
}

// refuseRead answers a CONNECT-phase read failure.
func (c *conn) refuseRead(err error) {
	var perr *packet.Error
	if errors.As(err, &perr) {
		c.refuse(perr.Code, err)
		return
	}
	c.closeNow()
}

// refuse answers a CONNECT with a failing CONNACK and closes ([MQTT-3.2.2-6]:
// 3.1.1 return codes; a 5.0 reason code otherwise). A packet that is merely
// malformed before the version is known gets no CONNACK in 3.1.1.
func (c *conn) refuse(code packet.ReasonCode, err error) {
	c.srv.stats.ProtocolErrors.Add(1)
	if err != nil {
		c.srv.log.Info("connect refused", "client_id", c.clientID, "remote", c.nc.RemoteAddr().String(),
			"reason_code", byte(code), "err", err)
	}
	v := c.version
	if v == 0 {
		if code != packet.UnsupportedProtocolVersion {
			c.closeNow()
			return
		}
		v = packet.V311 // a 3.1.1 return code is what an unknown version can read
	}
	ack := &packet.Connack{ReasonCode: code}
	if v < packet.V5 {
		switch code {
		case packet.MalformedPacket, packet.ProtocolError:
			c.closeNow()
			return
		}
		ack.ReasonCode = code.V3ConnackCode()
	}
	c.version = v
	c.writeDirect(ack)
	c.closeNow()
}

// writeDirect writes one packet synchronously (before the session exists).
func (c *conn) writeDirect(pk packet.Packet) {
	buf, err := pk.Append(nil, c.version)
	if err != nil {
		return
	}
	c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	c.nc.Write(buf)
}

// newClientID returns a server-assigned client identifier.
func newClientID() string {
	var b [12]byte
	rand.Read(b[:])
	return "mqc-" + hex.EncodeToString(b[:])
}

// connectHeadLen covers what tells a CONNECT's version: a fixed header of up
// to five bytes, the protocol name "MQTT" with its length, the level.
const connectHeadLen = 5 + 2 + 4 + 1

// connectHead is the reader's source for a connection: it passes reads
// through to src and keeps a copy of the first connectHeadLen bytes, so that
// a CONNECT too broken to decode can still be refused in the client's own
// protocol version.
type connectHead struct {
	src io.Reader
	b   [connectHeadLen]byte
	n   int
}

func (h *connectHead) Read(p []byte) (int, error) {
	n, err := h.src.Read(p)
	if h.n < len(h.b) && n > 0 && n <= len(p) {
		h.n += copy(h.b[h.n:], p[:n])
	}
	return n, err
}

// version returns the protocol level of the CONNECT the connection began
// with when its protocol name is "MQTT", 0 when the bytes seen do not say.
func (h *connectHead) version() packet.Version {
	fh, n, err := packet.ParseFixedHeader(h.b[:h.n], 0)
	if err != nil || fh.Type != packet.CONNECT {
		return 0
	}
	rest := h.b[n:h.n]
	if len(rest) < 7 || string(rest[:6]) != "\x00\x04MQTT" {
		return 0
	}
	return packet.Version(rest[6])
}
