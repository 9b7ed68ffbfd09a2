package listener

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ClientAuth says whether a TLS listener asks clients for a certificate.
type ClientAuth string

// The client certificate policies.
const (
	ClientAuthNone     ClientAuth = "none"     // no client certificate asked for
	ClientAuthOptional ClientAuth = "optional" // verified against the CA when given
	ClientAuthRequired ClientAuth = "required" // a certificate the CA signed is required
)

// Identity says what a verified client certificate stands for.
type Identity string

// The identities a client certificate can give.
const (
	IdentityNone Identity = "none"
	// IdentityCNAsUsername and IdentitySANAsUsername make the certificate's
	// subject common name, or its first subject alternative name (DNS
	// name, else email address, else URI), the client's username, in place
	// of the CONNECT's. The certificate is then the client's credential:
	// the broker does not ask its Authenticator; its Authorizer decides.
	IdentityCNAsUsername  Identity = "cn_as_username"
	IdentitySANAsUsername Identity = "san_as_username"
	// IdentityCNAsClientID makes the common name the client identifier.
	IdentityCNAsClientID Identity = "cn_as_client_id"
)

// TLSConfig is the TLS side of a tls or wss listener.
type TLSConfig struct {
	CertFile     string // PEM certificate chain, reloaded when it changes
	KeyFile      string // PEM private key, reloaded with it
	ClientCAFile string // PEM CA certificates that sign client certificates
	ClientAuth   ClientAuth
	// MinVersion is tls.VersionTLS12 (the default when 0) or
	// tls.VersionTLS13.
	MinVersion uint16
	Identity   Identity
}

// Validate checks the settings and that the files load.
func (c *TLSConfig) Validate() error {
	var errs []error
	switch c.ClientAuth {
	case "", ClientAuthNone, ClientAuthOptional, ClientAuthRequired:
	default:
		errs = append(errs, fmt.Errorf("client_auth: %q: want none, optional or required", c.ClientAuth))
	}
	switch c.MinVersion {
	case 0, tls.VersionTLS12, tls.VersionTLS13:
	default:
		errs = append(errs, fmt.Errorf("min_version: %#x: want TLS 1.2 or 1.3", c.MinVersion))
	}
	switch c.Identity {
	case "", IdentityNone:
	case IdentityCNAsUsername, IdentitySANAsUsername, IdentityCNAsClientID:
		if c.ClientAuth == "" || c.ClientAuth == ClientAuthNone {
			errs = append(errs, fmt.Errorf("identity: %s needs client_auth optional or required", c.Identity))
		}
	default:
		errs = append(errs, fmt.Errorf("identity: %q: want none, cn_as_username, san_as_username or cn_as_client_id", c.Identity))
	}
	if c.CertFile == "" {
		errs = append(errs, errors.New("cert_file: required"))
	} else if err := readable(c.CertFile); err != nil {
		errs = append(errs, fmt.Errorf("cert_file: %w", err))
	}
	if c.KeyFile == "" {
		errs = append(errs, errors.New("key_file: required"))
	} else if err := readable(c.KeyFile); err != nil {
		errs = append(errs, fmt.Errorf("key_file: %w", err))
	}
	if len(errs) == 0 {
		if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
			errs = append(errs, fmt.Errorf("cert_file: with key_file: %w", err))
		}
	}
	needCA := c.ClientAuth == ClientAuthOptional || c.ClientAuth == ClientAuthRequired
	switch {
	case c.ClientCAFile != "":
		if _, err := loadCAs(c.ClientCAFile); err != nil {
			errs = append(errs, fmt.Errorf("client_ca_file: %w", err))
		}
	case needCA:
		errs = append(errs, fmt.Errorf("client_ca_file: required by client_auth %s", c.ClientAuth))
	}
	return errors.Join(errs...)
}

// serverConfig builds the tls.Config of the listener.
func (c *TLSConfig) serverConfig(certs *certStore) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: c.MinVersion, GetCertificate: certs.getCertificate}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	switch c.ClientAuth {
	case ClientAuthOptional:
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	case ClientAuthRequired:
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if c.ClientCAFile != "" {
		pool, err := loadCAs(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client_ca_file: %w", err)
		}
		tc.ClientCAs = pool
	}
	return tc, nil
}

// readable reports whether path can be opened for reading.
func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// loadCAs reads a PEM file of CA certificates.
func loadCAs(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New("no PEM certificate in it")
	}
	return pool, nil
}

// tlsConn is a TLS connection whose handshake runs at its first read, in
// the broker's connection goroutine and under its CONNECT deadline.
type tlsConn struct {
	*tls.Conn
	peer
	identity Identity
}

// PeerIdentity implements broker.PeerIdentifier: the names of a client
// certificate that was verified against the listener's CA.
func (c *tlsConn) PeerIdentity() (username, clientID string) {
	return certIdentity(c.identity, c.ConnectionState())
}

// certIdentity returns what a verified client certificate stands for.
func certIdentity(mode Identity, cs tls.ConnectionState) (username, clientID string) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", ""
	}
	leaf := cs.VerifiedChains[0][0]
	switch mode {
	case IdentityCNAsUsername:
		return leaf.Subject.CommonName, ""
	case IdentityCNAsClientID:
		return "", leaf.Subject.CommonName
	case IdentitySANAsUsername:
		switch {
		case len(leaf.DNSNames) > 0:
			return leaf.DNSNames[0], ""
		case len(leaf.EmailAddresses) > 0:
			return leaf.EmailAddresses[0], ""
		case len(leaf.URIs) > 0:
			return leaf.URIs[0].String(), ""
		}
	}
	return "", ""
}
