package auth

import (
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
)

// Config says where the credentials and the rules come from.
type Config struct {
	// PasswordFile holds "user:hash" lines (see PasswordFile).
	PasswordFile string
	// ACLFile holds the access rules; when empty every authenticated client
	// may publish and subscribe to anything.
	ACLFile string
	// AllowAnonymous admits clients that send neither user name nor
	// password. Without a PasswordFile and JWT it admits every client, and
	// user names are then taken on trust.
	AllowAnonymous bool
	// JWT, when set, admits clients whose password is a valid token.
	JWT *JWTConfig
	// Logger receives reloads, refusals and broken files; never passwords
	// or tokens.
	Logger *slog.Logger
	// ReloadInterval is how often the files are checked for changes: zero
	// means every second, a negative value never (Reload still applies
	// changes).
	ReloadInterval time.Duration
}

// DefaultConfig is a configuration that admits nobody until a source of
// credentials or AllowAnonymous is set.
func DefaultConfig() Config { return Config{ReloadInterval: time.Second} }

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.PasswordFile == "" && c.JWT == nil && !c.AllowAnonymous {
		return errors.New("auth: no PasswordFile, no JWT and AllowAnonymous off would refuse every client")
	}
	if c.JWT != nil {
		if _, err := c.JWT.keyFile(); err != nil {
			return err
		}
	}
	return nil
}

// Auth is a broker.Authenticator and a broker.Authorizer over a password
// file, JWT keys and an ACL file, which it reloads when they change.
type Auth struct {
	cfg  Config
	log  *slog.Logger
	snap atomic.Pointer[snapshot]

	reloadMu          sync.Mutex // serializes reloads
	files             []*watched
	passwd, acl, keys *watched // entries of files, nil when not configured
	hashSlots         chan struct{}
	dummyOnce         sync.Once
	dummyHash         string
	stop, done        chan struct{}
	closeOnce         sync.Once
}

// snapshot is one immutable view of the files.
type snapshot struct {
	users map[string]string // nil: no password file
	acl   *aclSet           // nil: no ACL file
	keys  *keySet           // nil: no JWT
}

var (
	_ broker.Authenticator = (*Auth)(nil)
	_ broker.Authorizer    = (*Auth)(nil)
)

// New reads the configured files; a file that cannot be read or parsed is
// an error naming it (and the line). Unless ReloadInterval is negative it
// starts one goroutine that watches the files; Close stops it.
func New(cfg Config) (*Auth, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Auth{
		cfg:       cfg,
		log:       log.With("component", "auth"),
		hashSlots: make(chan struct{}, runtime.GOMAXPROCS(0)),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	if cfg.PasswordFile != "" {
		a.passwd = &watched{path: cfg.PasswordFile, parse: func(name string, data []byte) (any, error) {
			f, err := ParsePasswordFile(name, data)
			if err != nil {
				return nil, err
			}
			return f.entries(), nil
		}}
		a.files = append(a.files, a.passwd)
	}
	if cfg.ACLFile != "" {
		a.acl = &watched{path: cfg.ACLFile, parse: func(name string, data []byte) (any, error) { return parseACL(name, data) }}
		a.files = append(a.files, a.acl)
	}
	if cfg.JWT != nil {
		jc := *cfg.JWT
		a.cfg.JWT = &jc
		file, _ := jc.keyFile()
		a.keys = &watched{path: file, parse: func(name string, data []byte) (any, error) { return jc.parseKeyFile(name, data) }}
		a.files = append(a.files, a.keys)
	}
	for _, w := range a.files {
		if err := w.load(); err != nil {
			return nil, err
		}
	}
	a.publish()
	interval := cfg.ReloadInterval
	if interval == 0 {
		interval = time.Second
	}
	if interval > 0 && len(a.files) > 0 {
		go a.run(interval)
	} else {
		close(a.done)
	}
	return a, nil
}

// Close stops watching the files. It is safe to call more than once.
func (a *Auth) Close() {
	a.closeOnce.Do(func() { close(a.stop) })
	<-a.done
}

// Reload rereads every file now and applies what parses; it returns the
// first error (a broken file keeps its previous rules).
func (a *Auth) Reload() error { return a.reload(true) }

// Authenticate decides a CONNECT (5.0 [MQTT-3.1.4-2]: a failed check
// refuses the connection). No credentials: admitted only with AllowAnonymous, else
// 0x87 Not authorized (3.1.1 return code 5). A user of the password file
// whose password matches is admitted; then a password that is a JWT is
// checked when JWT is configured. Anything else is 0x86 Bad user name or
// password (3.1.1 return code 4). An enhanced authentication method is
// refused with 0x8C ([MQTT-4.12.0-1]).
func (a *Auth) Authenticate(req *broker.AuthRequest) broker.AuthResult {
	if req.Method != "" {
		a.refused(req, "authentication method not supported")
		return broker.AuthResult{Code: packet.BadAuthenticationMethod}
	}
	s := a.snap.Load()
	if !req.HasUsername && !req.HasPassword {
		if a.cfg.AllowAnonymous {
			return broker.AuthResult{Code: packet.Success}
		}
		a.refused(req, "anonymous access not allowed")
		return broker.AuthResult{Code: packet.NotAuthorized}
	}
	if s.users == nil && s.keys == nil {
		// Nothing to check credentials against: Validate made sure that
		// AllowAnonymous is on.
		return broker.AuthResult{Code: packet.Success}
	}
	jwtShaped := s.keys != nil && looksLikeJWT(req.Password)
	if s.users != nil && req.HasUsername && req.HasPassword {
		hash, known := s.users[req.Username]
		switch {
		case known && a.verify(hash, req.Password):
			return broker.AuthResult{Code: packet.Success}
		case !known && !jwtShaped:
			a.verify(a.dummy(), req.Password) // about as slow as for a known user
		}
	}
	if jwtShaped {
		name, exp, err := verifyToken(a.cfg.JWT, s.keys, string(req.Password), req.Username)
		if err == nil {
			return broker.AuthResult{Code: packet.Success, Username: name, Expiry: exp}
		}
		a.refused(req, "token refused: "+err.Error())
		return broker.AuthResult{Code: packet.BadUserNameOrPassword}
	}
	a.refused(req, "bad user name or password")
	return broker.AuthResult{Code: packet.BadUserNameOrPassword}
}

func (a *Auth) refused(req *broker.AuthRequest, why string) {
	a.log.Info("authentication refused", "client_id", req.ClientID, "username", req.Username, "reason", why)
}

// verify checks a password against a stored hash. At most GOMAXPROCS run
// at once: an argon2id check takes 64 MiB, and a storm of CONNECTs must
// not take gigabytes.
func (a *Auth) verify(hash string, password []byte) bool {
	a.hashSlots <- struct{}{}
	defer func() { <-a.hashSlots }()
	ok, err := VerifyPassword(hash, password)
	return ok && err == nil
}

// dummy is a hash no password matches, checked for unknown users so that
// the time of a refusal does not tell whether the user exists.
func (a *Auth) dummy() string {
	a.dummyOnce.Do(func() {
		a.dummyHash, _ = HashPassword(Argon2id, []byte("no user has this password"))
	})
	return a.dummyHash
}

// CanPublish implements broker.Authorizer: a PUBLISH (or will) topic.
func (a *Auth) CanPublish(c *broker.ClientInfo, topic string) bool {
	s := a.snap.Load()
	return s.acl == nil || s.acl.canTopic(c, accPublish, topic)
}

// CanSubscribe implements broker.Authorizer: a SUBSCRIBE filter.
func (a *Auth) CanSubscribe(c *broker.ClientInfo, filter string) bool {
	s := a.snap.Load()
	return s.acl == nil || s.acl.canSubscribe(c, filter)
}

// CanRead implements broker.Authorizer: one delivery of a topic.
func (a *Auth) CanRead(c *broker.ClientInfo, topic string) bool {
	s := a.snap.Load()
	return s.acl == nil || s.acl.canTopic(c, accReceive, topic)
}
