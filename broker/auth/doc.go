// Package auth authenticates MQTT clients and authorizes what they do, for
// the broker's Authenticator and Authorizer hooks: a password file of
// bcrypt and argon2id hashes, JSON Web Tokens in the CONNECT password
// (HS256, RS256, ES256, a JWKS), and an ACL file of first-match allow and
// deny rules per user, per client id and for everyone. It rereads its files
// when they change and swaps in the new rules atomically; a file that no
// longer parses keeps the previous good rules.
//
// It owns the formats of those files and their meaning. It never speaks
// the MQTT protocol (the broker turns its answers into reason codes),
// never touches sockets or sessions, never writes a file the broker reads
// except through an explicit call (WriteFileAtomic, for the passwd command),
// and never logs a password, a hash or a token.
package auth
