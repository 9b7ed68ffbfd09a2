package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
)

// jwk is the part of a JSON Web Key (RFC 7517, RFC 7518 section 6) this
// package reads.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	// RSA
	N string `json:"n"`
	E string `json:"e"`
	// EC
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	// symmetric
	K string `json:"k"`
}

// parseJWKS reads a key set {"keys": [...]}. Keys for encryption ("use":
// "enc") and keys for algorithms other than HS256, RS256 and ES256 are
// skipped, as identity providers publish those alongside signing keys; a
// malformed key of a supported type, two keys with one kid, or a set with
// no usable key is an error.
func parseJWKS(name string, data []byte) (*keySet, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, &FileError{File: name, Err: fmt.Errorf("JWKS: %w", err)}
	}
	ks := &keySet{byKid: make(map[string]jwtKey)}
	for i, k := range set.Keys {
		if k.Use == "enc" {
			continue
		}
		key, ok, err := k.parse()
		if err != nil {
			return nil, &FileError{File: name, Err: fmt.Errorf("JWKS key %d (kid %q): %w", i, k.Kid, err)}
		}
		if !ok {
			continue
		}
		if _, dup := ks.byKid[k.Kid]; dup {
			return nil, &FileError{File: name, Err: fmt.Errorf("JWKS key %d: kid %q used twice", i, k.Kid)}
		}
		ks.byKid[k.Kid] = key
	}
	if len(ks.byKid) == 0 {
		return nil, &FileError{File: name, Err: errors.New("JWKS has no HS256, RS256 or ES256 signing key")}
	}
	return ks, nil
}

// parse builds the key; ok is false for a key of a type or algorithm this
// package does not verify.
func (k *jwk) parse() (jwtKey, bool, error) {
	want := map[string]string{"RSA": "RS256", "EC": "ES256", "oct": "HS256"}[k.Kty]
	if want == "" || k.Alg != "" && k.Alg != want {
		return jwtKey{}, false, nil
	}
	switch k.Kty {
	case "RSA":
		n, err1 := b64url(k.N)
		e, err2 := b64url(k.E)
		if err1 != nil || err2 != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return jwtKey{}, false, errors.New("RSA key needs base64url n and e")
		}
		exp := int(new(big.Int).SetBytes(e).Int64())
		if exp < 3 || exp%2 == 0 {
			return jwtKey{}, false, errors.New("RSA exponent is not an odd number above 1")
		}
		key, err := publicKey(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp})
		return key, err == nil, err
	case "EC":
		if k.Crv != "P-256" {
			if k.Alg == "" {
				return jwtKey{}, false, nil // another curve, another algorithm
			}
			return jwtKey{}, false, fmt.Errorf("ES256 key on curve %q", k.Crv)
		}
		x, err1 := b64url(k.X)
		y, err2 := b64url(k.Y)
		if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
			return jwtKey{}, false, errors.New("P-256 key needs 32-byte base64url x and y")
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return jwtKey{}, false, err
		}
		return jwtKey{alg: "ES256", key: pub}, true, nil
	default: // oct
		s, err := b64url(k.K)
		if err != nil {
			return jwtKey{}, false, errors.New("symmetric key needs base64url k")
		}
		if len(s) < minSecret {
			return jwtKey{}, false, fmt.Errorf("HS256 key of %d bytes; at least %d are needed", len(s), minSecret)
		}
		return jwtKey{alg: "HS256", key: s}, true, nil
	}
}

func b64url(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(s)
}
