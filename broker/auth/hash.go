package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Algorithm names a password hashing scheme of the password file.
type Algorithm string

// The hashing schemes a password file may use.
const (
	// Argon2id is RFC 9106 Argon2id in the PHC string format
	// $argon2id$v=19$m=65536,t=3,p=2$<salt>$<hash>, salt and hash in
	// unpadded standard base64. The default of HashPassword.
	Argon2id Algorithm = "argon2id"
	// Bcrypt is bcrypt ($2a$, $2b$ or $2y$), cost 12 when this package hashes.
	Bcrypt Algorithm = "bcrypt"
)

// Parameters of new argon2id hashes: 64 MiB, three passes, two lanes, a
// 16-byte salt and a 32-byte key (the RFC 9106 second recommendation,
// adjusted to a small server).
const (
	argonMemory  = 64 * 1024
	argonTime    = 3
	argonThreads = 2
	argonSaltLen = 16
	argonKeyLen  = 32
	bcryptCost   = 12
)

// Bounds on the parameters of a stored argon2id hash: a hash in the file
// must not make one CONNECT take gigabytes or minutes.
const (
	argonMaxMemory  = 1 << 20 // KiB: 1 GiB
	argonMaxTime    = 64
	argonMaxKeyLen  = 128
	argonMinKeyLen  = 16
	argonMinSaltLen = 8
)

// ErrHashFormat is returned for a stored hash this package cannot read.
var ErrHashFormat = errors.New("auth: unrecognised password hash")

// HashPassword hashes password with alg (Argon2id when alg is empty) and a
// fresh random salt, in the form the password file stores.
func HashPassword(alg Algorithm, password []byte) (string, error) {
	switch alg {
	case Argon2id, "":
		return hashArgon2id(password, argonParams{memory: argonMemory, time: argonTime, threads: argonThreads})
	case Bcrypt:
		return hashBcrypt(password, bcryptCost)
	}
	return "", fmt.Errorf("auth: unknown hash algorithm %q", alg)
}

func hashArgon2id(password []byte, p argonParams) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey(password, salt, p.time, p.memory, p.threads, argonKeyLen)
	return formatArgon2id(p, salt, key), nil
}

func hashBcrypt(password []byte, cost int) (string, error) {
	if len(password) > 72 {
		// bcrypt reads 72 bytes; refusing longer ones keeps two passwords
		// with the same first 72 bytes from being one.
		return "", errors.New("auth: bcrypt passwords are limited to 72 bytes; use argon2id")
	}
	h, err := bcrypt.GenerateFromPassword(password, cost)
	return string(h), err
}

// VerifyPassword reports whether password matches the stored hash. The
// comparison of the derived keys is constant-time. A hash it cannot read
// is an error wrapping ErrHashFormat.
func VerifyPassword(hash string, password []byte) (bool, error) {
	switch {
	case strings.HasPrefix(hash, "$argon2id$"):
		p, salt, key, err := parseArgon2id(hash)
		if err != nil {
			return false, err
		}
		got := argon2.IDKey(password, salt, p.time, p.memory, p.threads, uint32(len(key)))
		return subtle.ConstantTimeCompare(got, key) == 1, nil
	case isBcrypt(hash):
		err := bcrypt.CompareHashAndPassword([]byte(hash), password)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword):
			return false, nil
		}
		return false, fmt.Errorf("%w: %v", ErrHashFormat, err)
	}
	return false, ErrHashFormat
}

// checkHash validates a stored hash without computing anything.
func checkHash(hash string) error {
	switch {
	case strings.HasPrefix(hash, "$argon2id$"):
		_, _, _, err := parseArgon2id(hash)
		return err
	case isBcrypt(hash):
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return fmt.Errorf("%w: %v", ErrHashFormat, err)
		}
		return nil
	}
	return fmt.Errorf("%w: want $argon2id$ or $2a$/$2b$/$2y$ (bcrypt)", ErrHashFormat)
}

func isBcrypt(hash string) bool {
	return strings.HasPrefix(hash, "$2a$") || strings.HasPrefix(hash, "$2b$") || strings.HasPrefix(hash, "$2y$")
}

type argonParams struct {
	memory, time uint32
	threads      uint8
}

var b64 = base64.RawStdEncoding

func formatArgon2id(p argonParams, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.memory, p.time, p.threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// parseArgon2id reads $argon2id$v=19$m=..,t=..,p=..$salt$hash.
func parseArgon2id(s string) (argonParams, []byte, []byte, error) {
	var p argonParams
	bad := func(why string) (argonParams, []byte, []byte, error) {
		return p, nil, nil, fmt.Errorf("%w: argon2id: %s", ErrHashFormat, why)
	}
	f := strings.Split(s, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" {
		return bad("want $argon2id$v=19$m=..,t=..,p=..$salt$hash")
	}
	if f[2] != "v="+strconv.Itoa(argon2.Version) {
		return bad("version " + f[2] + " is not v=19")
	}
	var m, t, th uint64
	for _, kv := range strings.Split(f[3], ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return bad("parameter " + kv)
		}
		switch k {
		case "m":
			m = n
		case "t":
			t = n
		case "p":
			th = n
		default:
			return bad("unknown parameter " + k)
		}
	}
	switch {
	case th < 1 || th > 255:
		return bad("p out of range")
	case t < 1 || t > argonMaxTime:
		return bad("t out of range")
	case m < 8*th || m > argonMaxMemory:
		return bad("m out of range")
	}
	salt, err := b64.DecodeString(f[4])
	if err != nil || len(salt) < argonMinSaltLen {
		return bad("salt")
	}
	key, err := b64.DecodeString(f[5])
	if err != nil || len(key) < argonMinKeyLen || len(key) > argonMaxKeyLen {
		return bad("hash")
	}
	p = argonParams{memory: uint32(m), time: uint32(t), threads: uint8(th)}
	return p, salt, key, nil
}
