package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// JWTConfig admits clients that present a JSON Web Token as the CONNECT
// password. Exactly one of SecretFile, PublicKeyFile and JWKSFile names
// the key; each key verifies one algorithm only, so a token cannot choose
// how it is checked.
type JWTConfig struct {
	// SecretFile holds the HS256 shared secret: at least 32 bytes (RFC 7518
	// section 3.2), one trailing newline ignored.
	SecretFile string
	// PublicKeyFile holds a PEM public key (PKIX "PUBLIC KEY", PKCS #1 "RSA
	// PUBLIC KEY", or a "CERTIFICATE"): RSA of 2048 bits or more verifies
	// RS256, EC P-256 verifies ES256.
	PublicKeyFile string
	// JWKSFile holds a JSON Web Key Set; the token's "kid" header picks the
	// key (a set of one key needs none). See docs/security.md.
	JWKSFile string
	// Issuer and Audience, when set, must be the token's iss and among its
	// aud.
	Issuer   string
	Audience string
	// UsernameClaim is the claim that holds the user name ("sub" when
	// empty). It must be a non-empty string and equal the CONNECT user name
	// when the client sends one.
	UsernameClaim string
	// Leeway tolerates clock skew in exp and nbf.
	Leeway time.Duration
	// AllowNoExpiry admits tokens without exp; by default they are refused.
	AllowNoExpiry bool
}

// keyFile is the one file the configuration names.
func (c *JWTConfig) keyFile() (string, error) {
	n, file := 0, ""
	for _, f := range []string{c.SecretFile, c.PublicKeyFile, c.JWKSFile} {
		if f != "" {
			n, file = n+1, f
		}
	}
	if n != 1 {
		return "", errors.New("auth: JWT needs exactly one of SecretFile, PublicKeyFile and JWKSFile")
	}
	return file, nil
}

func (c *JWTConfig) usernameClaim() string {
	if c.UsernameClaim == "" {
		return "sub"
	}
	return c.UsernameClaim
}

// parseKeyFile reads the configured key file into a key set.
func (c *JWTConfig) parseKeyFile(name string, data []byte) (*keySet, error) {
	var k jwtKey
	var err error
	switch {
	case c.JWKSFile != "":
		return parseJWKS(name, data)
	case c.SecretFile != "":
		k, err = secretKey(data)
	default:
		k, err = pemKey(data)
	}
	if err != nil {
		return nil, &FileError{File: name, Err: err}
	}
	return &keySet{byKid: map[string]jwtKey{"": k}, single: true}, nil
}

// jwtKey is one verification key and the one algorithm it verifies.
type jwtKey struct {
	alg string // HS256, RS256 or ES256
	key any    // []byte, *rsa.PublicKey or *ecdsa.PublicKey
}

// keySet holds the keys by kid; a key without kid is under "".
type keySet struct {
	byKid map[string]jwtKey
	// single is a key from a secret or PEM file: it verifies every token,
	// whatever kid the token names.
	single bool
}

var errWrongAlg = errors.New("token algorithm does not match its key")

// keyFor picks the token's key by kid and refuses a token whose alg is not
// the key's: an RS256 public key must never verify an HS256 MAC.
func (ks *keySet) keyFor(t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	if ks.single {
		kid = ""
	}
	k, ok := ks.byKid[kid]
	if !ok && kid == "" && len(ks.byKid) == 1 {
		for _, only := range ks.byKid {
			k, ok = only, true
		}
	}
	if !ok {
		return nil, fmt.Errorf("no key with kid %q", kid)
	}
	if t.Method == nil || t.Method.Alg() != k.alg {
		return nil, errWrongAlg
	}
	return k.key, nil
}

// minSecret is the shortest HS256 secret: the size of the hash output.
const minSecret = 32

func secretKey(data []byte) (jwtKey, error) {
	s := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	if len(s) < minSecret {
		return jwtKey{}, fmt.Errorf("HS256 secret of %d bytes; at least %d are needed", len(s), minSecret)
	}
	return jwtKey{alg: "HS256", key: []byte(s)}, nil
}

// pemKey reads the first PEM block that holds a public key.
func pemKey(data []byte) (jwtKey, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return jwtKey{}, errors.New("no PEM public key or certificate found")
		}
		var pub any
		var err error
		switch b.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(b.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(b.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(b.Bytes); err == nil {
				pub = cert.PublicKey
			}
		default:
			continue
		}
		if err != nil {
			return jwtKey{}, fmt.Errorf("PEM %s: %w", b.Type, err)
		}
		return publicKey(pub)
	}
}

// publicKey decides the algorithm of a public key.
func publicKey(pub any) (jwtKey, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return jwtKey{}, fmt.Errorf("RSA key of %d bits; at least 2048 are needed", k.N.BitLen())
		}
		return jwtKey{alg: "RS256", key: k}, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return jwtKey{}, fmt.Errorf("EC key on %s; ES256 needs P-256", k.Curve.Params().Name)
		}
		return jwtKey{alg: "ES256", key: k}, nil
	}
	return jwtKey{}, fmt.Errorf("unsupported public key type %T: want RSA or EC P-256", pub)
}

// looksLikeJWT reports whether a password has the shape of a compact JWS:
// three base64url parts separated by dots.
func looksLikeJWT(p []byte) bool {
	dots := 0
	for _, c := range p {
		switch {
		case c == '.':
			dots++
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return dots == 2 && len(p) > 4
}

// verifyToken checks a token and returns the user name it carries and the
// time the credentials expire (zero when the token has no exp).
func verifyToken(cfg *JWTConfig, ks *keySet, token, username string) (string, time.Time, error) {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{"HS256", "RS256", "ES256"}),
		jwt.WithLeeway(cfg.Leeway),
	}
	if !cfg.AllowNoExpiry {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	claims := jwt.MapClaims{}
	if _, err := jwt.NewParser(opts...).ParseWithClaims(token, claims, ks.keyFor); err != nil {
		return "", time.Time{}, err
	}
	name, _ := claims[cfg.usernameClaim()].(string)
	if name == "" {
		return "", time.Time{}, fmt.Errorf("claim %q is missing or not a string", cfg.usernameClaim())
	}
	if username != "" && username != name {
		return "", time.Time{}, fmt.Errorf("claim %q is not the CONNECT user name", cfg.usernameClaim())
	}
	var expiry time.Time
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		expiry = exp.Add(cfg.Leeway)
	}
	return name, expiry, nil
}
