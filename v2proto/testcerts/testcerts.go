// Package testcerts writes x509 test credentials in the directory layout shared by QEMU's
// tls-creds-x509, libvirt and mig2 (ca-cert.pem, server-cert.pem, server-key.pem,
// client-cert.pem, client-key.pem).
//
// The certificates are ECDSA P-256 with PKCS#8 keys, and carry what gnutls (QEMU) checks: the CA
// has basicConstraints CA:TRUE and keyUsage keyCertSign; leaves have CA:FALSE, keyUsage
// digitalSignature+keyEncipherment, and extKeyUsage serverAuth (server) or clientAuth (client).
// They are for tests and labs only.
package testcerts

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File names of the layout.
const (
	CACert     = "ca-cert.pem"
	ServerCert = "server-cert.pem"
	ServerKey  = "server-key.pem"
	ClientCert = "client-cert.pem"
	ClientKey  = "client-key.pem"
)

// CA is a certificate authority that can issue certificates.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
}

// NewCA makes a self-signed CA valid from an hour ago for ten years.
func NewCA(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("testcerts: CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"mig2 test"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("testcerts: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("testcerts: CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Options describe a leaf certificate.
type Options struct {
	Subject   string   // DN in RFC 4514 order, e.g. "CN=client,O=mig2"; empty: CN=first host
	Hosts     []string // subjectAltNames: IP addresses and DNS names
	Server    bool     // extKeyUsage serverAuth
	Client    bool     // extKeyUsage clientAuth
	NotBefore time.Time
	NotAfter  time.Time // zero: one year after NotBefore
}

// Issue signs a new leaf certificate and returns its PEM certificate and PKCS#8 PEM key.
func (ca *CA) Issue(o Options) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("testcerts: key: %w", err)
	}
	subject := o.Subject
	if subject == "" && len(o.Hosts) > 0 {
		subject = "CN=" + o.Hosts[0]
	}
	name, err := ParseDN(subject)
	if err != nil {
		return nil, nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	nb := o.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-time.Hour)
	}
	na := o.NotAfter
	if na.IsZero() {
		na = nb.AddDate(1, 0, 0)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               name,
		NotBefore:             nb,
		NotAfter:              na,
		BasicConstraintsValid: true,
		IsCA:                  false,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
	}
	if o.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if o.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	for _, h := range o.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("testcerts: certificate: %w", err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("testcerts: key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("testcerts: serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// Write creates dir (if needed) and writes a fresh CA, a server certificate valid for hosts plus
// 127.0.0.1, ::1 and localhost, and a client certificate with subject clientDN (default
// "CN=mig2-client,O=mig2 test"), in the standard layout.
func Write(dir string, hosts []string, clientDN string) error {
	ca, err := NewCA("mig2 test CA")
	if err != nil {
		return err
	}
	return WriteWithCA(dir, ca, hosts, clientDN)
}

// WriteWithCA is Write with a given CA, so that several directories (hosts) share one CA.
func WriteWithCA(dir string, ca *CA, hosts []string, clientDN string) error {
	return WriteWithOptions(dir, ca, WriteOptions{Hosts: hosts, ClientDN: clientDN})
}

// WriteOptions are the choices WriteWithOptions offers beyond WriteWithCA's.
type WriteOptions struct {
	Hosts    []string // the server certificate's names, besides 127.0.0.1, ::1 and localhost
	ClientDN string   // default "CN=mig2-client,O=mig2 test"
	// ServerNotAfter and ClientNotAfter end the leaves' validity (zero: a year from now), e.g. a
	// few seconds ahead to test a certificate that expires between two commands.
	ServerNotAfter time.Time
	ClientNotAfter time.Time
}

// WriteWithOptions is WriteWithCA with the leaves' validity chosen.
func WriteWithOptions(dir string, ca *CA, o WriteOptions) error {
	all := slices.Clone(o.Hosts)
	for _, h := range []string{"127.0.0.1", "::1", "localhost"} {
		if !slices.Contains(all, h) {
			all = append(all, h)
		}
	}
	clientDN := o.ClientDN
	if clientDN == "" {
		clientDN = "CN=mig2-client,O=mig2 test"
	}
	serverCert, serverKey, err := ca.Issue(Options{Subject: "CN=" + all[0] + ",O=mig2 test", Hosts: all, Server: true, NotAfter: o.ServerNotAfter})
	if err != nil {
		return err
	}
	clientCert, clientKey, err := ca.Issue(Options{Subject: clientDN, Client: true, NotAfter: o.ClientNotAfter})
	if err != nil {
		return err
	}
	return WriteFiles(dir, map[string][]byte{
		CACert: ca.CertPEM, ServerCert: serverCert, ServerKey: serverKey, ClientCert: clientCert, ClientKey: clientKey,
	})
}

// WriteFiles writes the named files into dir (keys 0600, certificates 0644).
func WriteFiles(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("testcerts: %w", err)
	}
	for name, data := range files {
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, "-key.pem") {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, mode); err != nil {
			return fmt.Errorf("testcerts: %w", err)
		}
	}
	return nil
}

var dnOIDs = map[string]asn1.ObjectIdentifier{
	"CN":           {2, 5, 4, 3},
	"SERIALNUMBER": {2, 5, 4, 5},
	"C":            {2, 5, 4, 6},
	"L":            {2, 5, 4, 7},
	"ST":           {2, 5, 4, 8},
	"STREET":       {2, 5, 4, 9},
	"O":            {2, 5, 4, 10},
	"OU":           {2, 5, 4, 11},
	"POSTALCODE":   {2, 5, 4, 17},
	"DC":           {0, 9, 2342, 19200300, 100, 1, 25},
	"UID":          {0, 9, 2342, 19200300, 100, 1, 1},
	"EMAILADDRESS": {1, 2, 840, 113549, 1, 9, 1},
}

// ParseDN parses a DN in RFC 4514 order ("CN=client,O=Example,C=GB"; '\' escapes a comma) into
// a pkix.Name whose encoding keeps that order, so the certificate's DN prints back the same.
func ParseDN(s string) (pkix.Name, error) {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s):
			cur.WriteByte(s[i+1])
			i++
		case c == ',':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	parts = append(parts, cur.String())
	var name pkix.Name
	for i := len(parts) - 1; i >= 0; i-- { // encoding order is the reverse of RFC 4514's
		k, v, ok := strings.Cut(strings.TrimSpace(parts[i]), "=")
		oid, known := dnOIDs[strings.ToUpper(strings.TrimSpace(k))]
		if !ok || !known || v == "" {
			return pkix.Name{}, fmt.Errorf("testcerts: bad DN component %q in %q", parts[i], s)
		}
		name.ExtraNames = append(name.ExtraNames, pkix.AttributeTypeAndValue{Type: oid, Value: v})
	}
	return name, nil
}
