package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
)

// tlsMaterial is this node's certificate and the cluster CA.
type tlsMaterial struct {
	cert tls.Certificate
	pool *x509.CertPool
}

func loadTLS(c Config) (*tlsMaterial, error) {
	if c.CertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate: %w", ErrInvalidConfig, err)
	}
	ca, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("%w: CA: %w", ErrInvalidConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%w: CA: no PEM certificate in %s", ErrInvalidConfig, c.CAFile)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("%w: certificate: %w", ErrInvalidConfig, err)
	}
	if !slices.Contains(certNames(leaf), c.NodeID) {
		return nil, fmt.Errorf("%w: certificate names %v, not the node id %q", ErrInvalidConfig, certNames(leaf), c.NodeID)
	}
	return &tlsMaterial{cert: cert, pool: pool}, nil
}

// serverConfig requires a client certificate signed by the cluster CA
// (the standard verification, with ExtKeyUsageClientAuth); which node it
// names is checked per call against the caller's metadata.
func (m *tlsMaterial) serverConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{m.cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    m.pool,
		MinVersion:   tls.VersionTLS13,
	}
}

// clientConfig verifies the server's chain against the cluster CA and, when
// wantID is not empty, that the certificate names that node. Peers are
// dialled by address (an IP, a pod DNS name), so the host name is not what
// is checked: the node id is.
func (m *tlsMaterial) clientConfig(wantID string) *tls.Config {
	pool := m.pool
	return &tls.Config{
		Certificates: []tls.Certificate{m.cert},
		MinVersion:   tls.VersionTLS13,
		// The standard verification checks the host name; VerifyConnection
		// below does the chain and the node id instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyChain(cs.PeerCertificates, pool, wantID)
		},
	}
}

var errNoCertificate = errors.New("no certificate")

func verifyChain(certs []*x509.Certificate, pool *x509.CertPool, wantID string) error {
	if len(certs) == 0 {
		return errNoCertificate
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return err
	}
	if wantID != "" && !slices.Contains(certNames(certs[0]), wantID) {
		return fmt.Errorf("certificate names %v, not node %q", certNames(certs[0]), wantID)
	}
	return nil
}

// certNames are the names a node certificate may carry its node id in.
func certNames(c *x509.Certificate) []string {
	names := make([]string, 0, 1+len(c.DNSNames))
	if c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	return append(names, c.DNSNames...)
}

// PeerTLS returns the TLS configurations for another protocol between
// nodes (Raft's): the server's requires a client certificate from the
// cluster CA; the client's verifies the server's chain against it (peers
// are dialled by address, so no node id is checked). Both are nil when c
// has no certificate.
func PeerTLS(c Config) (server, client *tls.Config, err error) {
	m, err := loadTLS(c)
	if err != nil || m == nil {
		return nil, nil, err
	}
	return m.serverConfig(), m.clientConfig(""), nil
}
