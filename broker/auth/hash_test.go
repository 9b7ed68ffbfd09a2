package auth

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Hashes verify their password and no other, and two hashes of one
// password differ (a fresh salt each time). Cheap parameters here; the
// defaults are checked once in TestHashDefaults.
func TestHashRoundTrip(t *testing.T) {
	for alg, hash := range map[Algorithm]func([]byte) (string, error){
		Argon2id: func(pw []byte) (string, error) { return hashArgon2id(pw, argonParams{memory: 64, time: 1, threads: 1}) },
		Bcrypt:   func(pw []byte) (string, error) { return hashBcrypt(pw, bcrypt.MinCost) },
	} {
		t.Run(string(alg), func(t *testing.T) {
			pw := []byte("correct horse battery staple")
			h1, err := hash(pw)
			if err != nil {
				t.Fatal(err)
			}
			if ok, err := VerifyPassword(h1, pw); !ok || err != nil {
				t.Fatalf("right password: %v, %v", ok, err)
			}
			for _, wrong := range []string{"", "correct horse battery stapl", "Correct horse battery staple", "correct horse battery staple "} {
				if ok, err := VerifyPassword(h1, []byte(wrong)); ok || err != nil {
					t.Fatalf("wrong password %q: %v, %v", wrong, ok, err)
				}
			}
			h2, _ := hash(pw)
			if h1 == h2 {
				t.Fatal("two hashes of one password are equal: no salt")
			}
		})
	}
}

// HashPassword uses argon2id (64 MiB, t=3, p=2) by default, or bcrypt
// cost 12, and what it makes verifies.
func TestHashDefaults(t *testing.T) {
	for _, tc := range []struct {
		alg    Algorithm
		prefix string
	}{
		{"", "$argon2id$v=19$m=65536,t=3,p=2$"},
		{Bcrypt, "$2a$12$"},
	} {
		h, err := HashPassword(tc.alg, []byte("pw"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(h, tc.prefix) {
			t.Fatalf("hash %q does not start with %q", h, tc.prefix)
		}
		if ok, err := VerifyPassword(h, []byte("pw")); !ok || err != nil {
			t.Fatalf("%s: %v, %v", h, ok, err)
		}
	}
}

// Hashes made by other implementations verify: the reference argon2
// command line tool (echo -n password | argon2 somesalt -id -t 2 -m 16 -p 4
// -l 32 -e), PHP's password_hash ($2y$), and bcrypt's $2a$/$2b$.
func TestVerifyForeignHashes(t *testing.T) {
	b, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	b2b := "$2b$" + string(b[4:])
	for _, tc := range []struct{ hash, password string }{
		{"$argon2id$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo", "password"},
		{"$2y$10$.vGA1O9wmRjrwAVXD98HNOgsNpDczlqm3Jq7KnEd1rVAGv3Fykk1a", "rasmuslerdorf"},
		{string(b), "s3cret"},
		{b2b, "s3cret"},
	} {
		if ok, err := VerifyPassword(tc.hash, []byte(tc.password)); !ok || err != nil {
			t.Errorf("%s: right password refused: %v", tc.hash, err)
		}
		if ok, _ := VerifyPassword(tc.hash, []byte(tc.password+"x")); ok {
			t.Errorf("%s: wrong password accepted", tc.hash)
		}
		if err := checkHash(tc.hash); err != nil {
			t.Errorf("%s: checkHash: %v", tc.hash, err)
		}
	}
}

// Hashes this package cannot or will not compute are errors, never a
// match: other schemes, plain text, and argon2id parameters that would
// cost a CONNECT gigabytes or minutes.
func TestVerifyRejectsUnreadableHashes(t *testing.T) {
	for _, h := range []string{
		"",
		"password",
		"$1$salt$hash",             // md5-crypt
		"$6$rounds=5000$salt$hash", // sha512-crypt
		"$7$101$salt$hash",         // mosquitto's PBKDF2
		"$argon2i$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
		"$argon2id$v=16$m=65536,t=2,p=4$c29tZXNhbHQ$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo",
		"$argon2id$v=19$m=4194304,t=2,p=4$c29tZXNhbHQ$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo",
		"$argon2id$v=19$m=65536,t=1000,p=4$c29tZXNhbHQ$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo",
		"$argon2id$v=19$m=65536,t=2,p=0$c29tZXNhbHQ$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo",
		"$argon2id$v=19$m=65536,t=2,p=4,x=1$c29tZXNhbHQ$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo",
		"$argon2id$v=19$m=65536,t=2,p=4$c2FsdA$GpZ3sK/oH9p7VIiV56G/64Zo/8GaUw434IimaPqxwCo", // 4-byte salt
		"$argon2id$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$!!!",
		"$argon2id$v=19$m=65536,t=2,p=4$c29tZXNhbHQ",
		"$2a$10$short",
		"$2a$99$.vGA1O9wmRjrwAVXD98HNOgsNpDczlqm3Jq7KnEd1rVAGv3Fykk1a",
	} {
		ok, err := VerifyPassword(h, []byte("password"))
		if ok || !errors.Is(err, ErrHashFormat) {
			t.Errorf("%q: got %v, %v; want ErrHashFormat", h, ok, err)
		}
		if err := checkHash(h); !errors.Is(err, ErrHashFormat) {
			t.Errorf("%q: checkHash: %v", h, err)
		}
	}
}

// bcrypt reads only 72 bytes; a longer password is refused rather than
// silently truncated.
func TestBcryptRefusesLongPasswords(t *testing.T) {
	if _, err := HashPassword(Bcrypt, []byte(strings.Repeat("x", 73))); err == nil {
		t.Fatal("73-byte bcrypt password accepted")
	}
	if _, err := HashPassword("md5", []byte("x")); err == nil {
		t.Fatal("unknown algorithm accepted")
	}
}

// cheapHash is an argon2id hash with the smallest parameters the file
// format admits, so that tests that connect many times stay fast.
func cheapHash(t testing.TB, password string) string {
	t.Helper()
	salt := []byte("test-salt-16byte")
	p := argonParams{memory: 64, time: 1, threads: 1}
	return formatArgon2id(p, salt, argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, 32))
}
