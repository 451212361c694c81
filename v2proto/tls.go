package v2proto

// TLS credentials in QEMU's/libvirt's directory layout, client authorization by DN allow-list,
// and the mapping of TLS failures to errors that say what went wrong (SPEC §2).

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// File names of the x509 directory layout shared with QEMU's tls-creds-x509 and libvirt
// (SPEC §2.2).
const (
	CACertFile     = "ca-cert.pem"
	ServerCertFile = "server-cert.pem"
	ServerKeyFile  = "server-key.pem"
	ClientCertFile = "client-cert.pem"
	ClientKeyFile  = "client-key.pem"
	// DefaultTLSDir is where QEMU and libvirt look by default.
	DefaultTLSDir = "/etc/pki/qemu"
)

// TLSCredentials are the x509 credentials of one host.
type TLSCredentials struct {
	Dir    string
	CAs    *x509.CertPool
	Server *tls.Certificate // nil when the directory has no server pair (dial-only host)
	Client *tls.Certificate // nil when the directory has no client pair (listen-only host)
}

// LoadTLSDir reads ca-cert.pem and whichever of the server and client pairs are present in dir.
// At least one pair must be present; a certificate without its key (or the reverse) is an error.
func LoadTLSDir(dir string) (*TLSCredentials, error) {
	caPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("v2proto: TLS directory %s: %w", dir, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("v2proto: TLS directory %s: %s holds no PEM certificate", dir, CACertFile)
	}
	creds := &TLSCredentials{Dir: dir, CAs: pool}
	load := func(certFile, keyFile string) (*tls.Certificate, error) {
		cp, kp := filepath.Join(dir, certFile), filepath.Join(dir, keyFile)
		_, cErr := os.Stat(cp)
		_, kErr := os.Stat(kp)
		switch {
		case errors.Is(cErr, os.ErrNotExist) && errors.Is(kErr, os.ErrNotExist):
			return nil, nil
		case cErr != nil:
			return nil, fmt.Errorf("v2proto: TLS directory %s: %w", dir, cErr)
		case kErr != nil:
			return nil, fmt.Errorf("v2proto: TLS directory %s: %w", dir, kErr)
		}
		pair, err := tls.LoadX509KeyPair(cp, kp)
		if err != nil {
			return nil, fmt.Errorf("v2proto: TLS directory %s: %s/%s: %w", dir, certFile, keyFile, err)
		}
		return &pair, nil
	}
	if creds.Server, err = load(ServerCertFile, ServerKeyFile); err != nil {
		return nil, err
	}
	if creds.Client, err = load(ClientCertFile, ClientKeyFile); err != nil {
		return nil, err
	}
	if creds.Server == nil && creds.Client == nil {
		return nil, fmt.Errorf("v2proto: TLS directory %s: neither %s nor %s is present", dir, ServerCertFile, ClientCertFile)
	}
	return creds, nil
}

func (c *Config) serverTLS() (*tls.Config, error) {
	if c.TLS == nil || c.TLS.Server == nil {
		return nil, fmt.Errorf("v2proto: listening with TLS needs %s and %s", ServerCertFile, ServerKeyFile)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{*c.TLS.Server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    c.TLS.CAs,
	}, nil
}

func (c *Config) clientTLS(serverName string) (*tls.Config, error) {
	if c.TLS == nil || c.TLS.Client == nil {
		return nil, fmt.Errorf("v2proto: dialling with TLS needs %s and %s", ClientCertFile, ClientKeyFile)
	}
	cert := c.TLS.Client
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Always present our certificate, even when the server's list of acceptable CAs does
		// not name its issuer: then the server can say precisely what is wrong with it.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil },
		RootCAs:              c.TLS.CAs,
		ServerName:           serverName,
	}, nil
}

// serverNameFor returns the name to check the server certificate against: cfg.ServerName, or
// the host part of the address dialled (SPEC §2.3).
func (c *Config) serverNameFor(addr string) string {
	if c.ServerName != "" {
		return c.ServerName
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// SubjectDN returns a certificate's subject DN in RFC 4514 order (most specific first, e.g.
// "CN=client,O=Example,C=GB"), from its raw encoding.
func SubjectDN(cert *x509.Certificate) string {
	var seq pkix.RDNSequence
	if rest, err := asn1.Unmarshal(cert.RawSubject, &seq); err != nil || len(rest) > 0 {
		return cert.Subject.String()
	}
	return seq.String()
}

// subjectDNReversed returns the DN in encoding order ("C=GB,O=Example,CN=client"), as gnutls
// and libvirt print it.
func subjectDNReversed(cert *x509.Certificate) string {
	var seq pkix.RDNSequence
	if rest, err := asn1.Unmarshal(cert.RawSubject, &seq); err != nil || len(rest) > 0 {
		return ""
	}
	slices.Reverse(seq)
	return seq.String()
}

// MatchDN reports whether an allow-list entry matches a certificate (SPEC §2.3): equal to its
// DN in RFC 4514 order or in reverse order, with '*' matching any run of characters.
func MatchDN(pattern string, cert *x509.Certificate) bool {
	for _, dn := range []string{SubjectDN(cert), subjectDNReversed(cert)} {
		if dn != "" && glob(pattern, dn) {
			return true
		}
	}
	return false
}

// glob matches s against pattern, where '*' matches any run of characters.
func glob(pattern, s string) bool {
	// Iterative, backtracking only to the last '*': time O(len(pattern)·len(s)) whatever the
	// number of stars (a recursive matcher is exponential in them).
	p, i, star, mark := 0, 0, -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case p < len(pattern) && pattern[p] == s[i]:
			p++
			i++
		case star >= 0:
			p, mark = star+1, mark+1
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// authorize checks the verified client certificate against cfg.AllowedDNs.
func (c *Config) authorize(state tls.ConnectionState) (dn string, ok bool) {
	if len(state.PeerCertificates) == 0 {
		return "", false
	}
	leaf := state.PeerCertificates[0]
	dn = SubjectDN(leaf)
	if len(c.AllowedDNs) == 0 {
		return dn, true
	}
	for _, p := range c.AllowedDNs {
		if MatchDN(p, leaf) {
			return dn, true
		}
	}
	return dn, false
}

// remoteAlert returns the text of a TLS alert the peer sent ("bad certificate"), if err is one.
func remoteAlert(err error) (string, bool) {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" && oe.Err != nil {
		return strings.TrimPrefix(oe.Err.Error(), "tls: "), true
	}
	return "", false
}

// classifyTLS turns a TLS handshake (or first read) error into a *ConnError whose Reason is a
// sentinel and whose Detail says what to check. server is true on the listening side.
func classifyTLS(op, peer string, server bool, err error) *ConnError {
	ce := &ConnError{Op: op, Peer: peer, Err: err}
	whose, them := "the agent's", "the agent"
	if server {
		whose, them = "the client's", "the client"
	}
	var unknownCA x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	switch {
	case errors.As(err, &unknownCA):
		ce.Reason = ErrUnknownAuthority
		ce.Detail = fmt.Sprintf("%s certificate is not signed by a CA in %s (%s)", whose, CACertFile, ErrUnknownAuthority)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		ce.Reason = ErrCertificateExpired
		ce.Detail = fmt.Sprintf("%s certificate has expired or is not yet valid", whose)
	case errors.As(err, &host):
		ce.Reason = ErrHostnameMismatch
		ce.Detail = fmt.Sprintf("the agent's certificate does not name the address dialled %q (%s)", host.Host, ErrHostnameMismatch)
	default:
		if alert, ok := remoteAlert(err); ok {
			ce.Remote = true
			switch alert {
			case "unknown certificate authority":
				ce.Reason = ErrUnknownAuthority
				ce.Detail = fmt.Sprintf("%s does not trust this side's certificate: it is not signed by a CA in %s's %s", them, them, CACertFile)
			case "expired certificate":
				ce.Reason = ErrCertificateExpired
				ce.Detail = fmt.Sprintf("%s says this side's certificate has expired or is not yet valid", them)
			case "bad certificate", "certificate unknown", "unsupported certificate", "certificate required":
				ce.Reason = ErrBadCertificate
				if server {
					ce.Detail = fmt.Sprintf("the client rejected this agent's certificate (%s): check that it trusts our CA, that our certificate is valid, and that it names the address the client dialled", alert)
				} else {
					ce.Detail = fmt.Sprintf("the agent rejected this client's certificate (%s)", alert)
				}
			case "protocol version not supported":
				ce.Reason = ErrBadCertificate
				ce.Detail = fmt.Sprintf("%s does not speak TLS 1.3", them)
			default:
				ce.Reason = ErrBadCertificate
				ce.Detail = fmt.Sprintf("%s aborted the TLS handshake: %s", them, alert)
			}
			return ce
		}
		if server && strings.Contains(err.Error(), "didn't provide a certificate") {
			ce.Reason = ErrBadCertificate
			ce.Detail = "the client sent no certificate (mutual TLS is required)"
		}
	}
	return ce
}
