package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mqcluster/mqcluster/broker"
	"github.com/mqcluster/mqcluster/broker/packet"
)

// testKeys are the keys of the JWT tests, generated once per test binary.
type testKeys struct {
	secret []byte
	rsa    *rsa.PrivateKey
	rsa2   *rsa.PrivateKey // a key no configuration trusts
	ec     *ecdsa.PrivateKey
}

var keysOnce = sync.OnceValue(func() *testKeys {
	k := &testKeys{secret: []byte("0123456789abcdef0123456789abcdef-hs256")}
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		panic(err)
	}
	return k
})

// token signs claims with method and key; kid goes in the header when set.
func token(t testing.TB, m jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pemPublic(t testing.TB, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// jwksOf builds a key set: an RSA key "r1", an EC key "e1", and an
// encryption key that must be skipped.
func jwksOf(t testing.TB, k *testKeys) []byte {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	pt, err := k.ec.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "enc1", "use": "enc", "alg": "RSA-OAEP", "n": enc(k.rsa2.N.Bytes()), "e": "AQAB"},
		{"kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256", "n": enc(k.rsa.N.Bytes()), "e": enc(big.NewInt(int64(k.rsa.E)).Bytes())},
		{"kty": "EC", "kid": "e1", "crv": "P-256", "x": enc(pt[1:33]), "y": enc(pt[33:])},
	}}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// newJWTAuth builds an Auth that checks tokens with cfg.
func newJWTAuth(t testing.TB, cfg JWTConfig) *Auth {
	t.Helper()
	a, err := New(Config{JWT: &cfg, ReloadInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

func TestJWT(t *testing.T) {
	k := keysOnce()
	dir := t.TempDir()
	hs := newJWTAuth(t, JWTConfig{SecretFile: writeFile(t, dir, "secret", append(k.secret, '\n'))})
	rsPEM := pemPublic(t, &k.rsa.PublicKey)
	rs := newJWTAuth(t, JWTConfig{PublicKeyFile: writeFile(t, dir, "rsa.pem", rsPEM), Issuer: "https://id.example", Audience: "mqtt"})
	es := newJWTAuth(t, JWTConfig{PublicKeyFile: writeFile(t, dir, "ec.pem", pemPublic(t, &k.ec.PublicKey)), UsernameClaim: "preferred_username"})
	jwks := newJWTAuth(t, JWTConfig{JWKSFile: writeFile(t, dir, "jwks.json", jwksOf(t, k))})
	lax := newJWTAuth(t, JWTConfig{SecretFile: writeFile(t, dir, "secret2", k.secret), AllowNoExpiry: true, Leeway: 10 * time.Second})

	now := time.Now()
	exp := now.Add(time.Hour).Unix()
	claims := func(extra ...any) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "alice", "exp": exp}
		for i := 0; i+1 < len(extra); i += 2 {
			if extra[i+1] == nil {
				delete(c, extra[i].(string))
			} else {
				c[extra[i].(string)] = extra[i+1]
			}
		}
		return c
	}
	rsOK := claims("iss", "https://id.example", "aud", []string{"other", "mqtt"})
	ok, bad := packet.Success, packet.BadUserNameOrPassword
	cases := []struct {
		name     string
		a        *Auth
		tok      string
		username string
		want     packet.ReasonCode
		wantUser string
	}{
		{"HS256", hs, token(t, jwt.SigningMethodHS256, k.secret, "", claims()), "", ok, "alice"},
		{"HS256 with the same user name", hs, token(t, jwt.SigningMethodHS256, k.secret, "", claims()), "alice", ok, "alice"},
		{"HS256 for another user name", hs, token(t, jwt.SigningMethodHS256, k.secret, "", claims()), "bob", bad, ""},
		{"HS256 wrong secret", hs, token(t, jwt.SigningMethodHS256, []byte("another secret of thirty-two bytes!!"), "", claims()), "", bad, ""},
		{"HS384 refused", hs, token(t, jwt.SigningMethodHS384, k.secret, "", claims()), "", bad, ""},
		{"expired", hs, token(t, jwt.SigningMethodHS256, k.secret, "", claims("exp", now.Add(-time.Minute).Unix())), "", bad, ""},
		{"not yet valid", hs, token(t, jwt.SigningMethodHS256, k.secret, "", claims("nbf", now.Add(time.Minute).Unix())), "", bad, ""},
		{"no exp", hs, token(t, jwt.SigningMethodHS256, k.secret, "", claims("exp", nil)), "", bad, ""},
		{"no exp allowed", lax, token(t, jwt.SigningMethodHS256, k.secret, "", claims("exp", nil)), "", ok, "alice"},
		{"expired within leeway", lax, token(t, jwt.SigningMethodHS256, k.secret, "", claims("exp", now.Add(-5*time.Second).Unix())), "", ok, "alice"},
		{"no sub", hs, token(t, jwt.SigningMethodHS256, k.secret, "", claims("sub", nil)), "", bad, ""},
		{"sub not a string", hs, token(t, jwt.SigningMethodHS256, k.secret, "", claims("sub", 42)), "", bad, ""},
		{"RS256", rs, token(t, jwt.SigningMethodRS256, k.rsa, "", rsOK), "", ok, "alice"},
		{"RS256 naming a kid", rs, token(t, jwt.SigningMethodRS256, k.rsa, "any-kid", rsOK), "", ok, "alice"},
		{"RS256 untrusted key", rs, token(t, jwt.SigningMethodRS256, k.rsa2, "", rsOK), "", bad, ""},
		{"RS256 wrong issuer", rs, token(t, jwt.SigningMethodRS256, k.rsa, "", claims("iss", "https://evil.example", "aud", "mqtt")), "", bad, ""},
		{"RS256 no issuer", rs, token(t, jwt.SigningMethodRS256, k.rsa, "", claims("aud", "mqtt")), "", bad, ""},
		{"RS256 wrong audience", rs, token(t, jwt.SigningMethodRS256, k.rsa, "", claims("iss", "https://id.example", "aud", "web")), "", bad, ""},
		// Algorithm confusion: an HS256 MAC keyed with the public key.
		{"HS256 keyed with the RSA public key", rs, token(t, jwt.SigningMethodHS256, rsPEM, "", rsOK), "", bad, ""},
		{"alg none", rs, token(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", rsOK), "", bad, ""},
		{"RS256 token for the HS256 key", hs, token(t, jwt.SigningMethodRS256, k.rsa, "", claims()), "", bad, ""},
		{"ES256 user name claim", es, token(t, jwt.SigningMethodES256, k.ec, "", claims("sub", "svc-1", "preferred_username", "carol")), "carol", ok, "carol"},
		{"ES256 without the user name claim", es, token(t, jwt.SigningMethodES256, k.ec, "", claims()), "", bad, ""},
		{"JWKS RSA by kid", jwks, token(t, jwt.SigningMethodRS256, k.rsa, "r1", claims()), "", ok, "alice"},
		{"JWKS EC by kid", jwks, token(t, jwt.SigningMethodES256, k.ec, "e1", claims()), "", ok, "alice"},
		{"JWKS kid of another key type", jwks, token(t, jwt.SigningMethodRS256, k.rsa, "e1", claims()), "", bad, ""},
		{"JWKS unknown kid", jwks, token(t, jwt.SigningMethodRS256, k.rsa, "r9", claims()), "", bad, ""},
		{"JWKS no kid, several keys", jwks, token(t, jwt.SigningMethodRS256, k.rsa, "", claims()), "", bad, ""},
		{"JWKS encryption key", jwks, token(t, jwt.SigningMethodRS256, k.rsa2, "enc1", claims()), "", bad, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := &broker.AuthRequest{ClientInfo: broker.ClientInfo{ClientID: "c", Username: tc.username},
				HasUsername: tc.username != "", HasPassword: true, Password: []byte(tc.tok)}
			res := tc.a.Authenticate(req)
			if res.Code != tc.want {
				t.Fatalf("code %#x, want %#x", byte(res.Code), byte(tc.want))
			}
			if res.Username != tc.wantUser {
				t.Fatalf("user name %q, want %q", res.Username, tc.wantUser)
			}
		})
	}

	// exp becomes the connection's deadline; with leeway, exp + leeway.
	res := hs.Authenticate(&broker.AuthRequest{HasPassword: true, Password: []byte(token(t, jwt.SigningMethodHS256, k.secret, "", claims()))})
	if !res.Expiry.Equal(time.Unix(exp, 0)) {
		t.Fatalf("Expiry %v, want %v", res.Expiry, time.Unix(exp, 0))
	}
	res = lax.Authenticate(&broker.AuthRequest{HasPassword: true, Password: []byte(token(t, jwt.SigningMethodHS256, k.secret, "", claims()))})
	if !res.Expiry.Equal(time.Unix(exp, 0).Add(10 * time.Second)) {
		t.Fatalf("Expiry with leeway %v", res.Expiry)
	}
}

// Key files that cannot verify safely are refused at start, naming the file.
func TestJWTKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for _, tc := range []struct {
		cfg  JWTConfig
		want string
	}{
		{JWTConfig{SecretFile: writeFile(t, dir, "short", []byte("too short\n"))}, "at least 32"},
		{JWTConfig{PublicKeyFile: writeFile(t, dir, "small.pem", pemPublic(t, &small.PublicKey))}, "at least 2048"},
		{JWTConfig{PublicKeyFile: writeFile(t, dir, "p384.pem", pemPublic(t, &p384.PublicKey))}, "P-256"},
		{JWTConfig{PublicKeyFile: writeFile(t, dir, "none.pem", []byte("not pem"))}, "no PEM"},
		{JWTConfig{JWKSFile: writeFile(t, dir, "bad.json", []byte(`{"keys": [`))}, "JWKS"},
		{JWTConfig{JWKSFile: writeFile(t, dir, "empty.json", []byte(`{"keys": []}`))}, "no HS256, RS256 or ES256"},
		{JWTConfig{JWKSFile: writeFile(t, dir, "badrsa.json", []byte(`{"keys": [{"kty": "RSA", "n": "!!", "e": "AQAB"}]}`))}, "base64url n and e"},
		{JWTConfig{SecretFile: "a", JWKSFile: "b"}, "exactly one"},
		{JWTConfig{PublicKeyFile: filepath.Join(dir, "missing.pem")}, "missing.pem"},
	} {
		_, err := New(Config{JWT: &tc.cfg, ReloadInterval: -1})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want an error containing %q", tc.cfg, err, tc.want)
			continue
		}
		if file, _ := tc.cfg.keyFile(); file != "" && !strings.Contains(err.Error(), file) {
			t.Errorf("error %q does not name %s", err, file)
		}
	}
}

// looksLikeJWT tells tokens from ordinary passwords.
func TestLooksLikeJWT(t *testing.T) {
	for p, want := range map[string]bool{
		"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln": true,
		"a.b.c":        true,
		"password":     false,
		"a.b":          false,
		"a.b.c.d":      false,
		"a b.c.d":      false,
		"ab+/.cd.ef==": false,
	} {
		if got := looksLikeJWT([]byte(p)); got != want {
			t.Errorf("looksLikeJWT(%q) = %v", p, got)
		}
	}
}
