package v2proto

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mig2/mig2/v2proto/testcerts"
)

// pki builds credential directories for the TLS failure tests.
type pki struct {
	t        *testing.T
	ca, evil *testcerts.CA
}

func newPKI(t *testing.T) *pki {
	ca, err := testcerts.NewCA("good CA")
	if err != nil {
		t.Fatal(err)
	}
	evil, err := testcerts.NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	return &pki{t: t, ca: ca, evil: evil}
}

// dir writes a directory trusting trust, with a server cert issued by serverCA (for hosts) and a
// client cert issued by clientCA.
func (p *pki) dir(trust, serverCA, clientCA *testcerts.CA, hosts []string, serverNotAfter, clientNotAfter time.Time) *TLSCredentials {
	p.t.Helper()
	sc, sk, err := serverCA.Issue(testcerts.Options{Subject: "CN=dst.example,O=mig2 test", Hosts: hosts, Server: true, NotAfter: serverNotAfter,
		NotBefore: notBefore(serverNotAfter)})
	if err != nil {
		p.t.Fatal(err)
	}
	cc, ck, err := clientCA.Issue(testcerts.Options{Subject: "CN=src.example,O=mig2 test", Client: true, NotAfter: clientNotAfter,
		NotBefore: notBefore(clientNotAfter)})
	if err != nil {
		p.t.Fatal(err)
	}
	dir := p.t.TempDir()
	if err := testcerts.WriteFiles(dir, map[string][]byte{
		testcerts.CACert: trust.CertPEM, testcerts.ServerCert: sc, testcerts.ServerKey: sk,
		testcerts.ClientCert: cc, testcerts.ClientKey: ck,
	}); err != nil {
		p.t.Fatal(err)
	}
	creds, err := LoadTLSDir(dir)
	if err != nil {
		p.t.Fatal(err)
	}
	return creds
}

func notBefore(notAfter time.Time) time.Time {
	if notAfter.IsZero() {
		return time.Time{}
	}
	return notAfter.Add(-48 * time.Hour)
}

var localhost = []string{"127.0.0.1", "localhost"}

// dialPair dials a listener with the given configs and returns both sides' errors. Neither side
// may get a connection: the failure must come before any protocol message.
func dialPair(t *testing.T, ccfg, scfg *Config) (clientErr, serverErr error) {
	t.Helper()
	l, err := Listen("127.0.0.1:0", scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := testCtx(t)
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := l.Accept(ctx)
		ch <- res{c, err}
	}()
	cc, clientErr := DialConn(ctx, l.Addr().String(), RoleSource, ccfg)
	if cc != nil {
		cc.Close()
		t.Errorf("client got a connection")
	}
	r := <-ch
	if r.c != nil {
		r.c.Close()
		t.Errorf("server got a connection")
	}
	return clientErr, r.err
}

func TestTLSFailures(t *testing.T) {
	p := newPKI(t)
	good := p.dir(p.ca, p.ca, p.ca, localhost, time.Time{}, time.Time{})
	past := time.Now().Add(-24 * time.Hour)
	for _, tc := range []struct {
		name                   string
		client, server         func() *Config
		clientWant, serverWant error
		clientRemote           bool
		clientText, serverText string
	}{
		{
			name:       "server cert from unknown CA",
			client:     func() *Config { return testConfig(good) },
			server:     func() *Config { return testConfig(p.dir(p.ca, p.evil, p.ca, localhost, time.Time{}, time.Time{})) },
			clientWant: ErrUnknownAuthority, serverWant: ErrBadCertificate,
			clientText: "not signed by a CA in ca-cert.pem", serverText: "the client rejected this agent's certificate",
		},
		{
			name:       "client cert from unknown CA",
			client:     func() *Config { return testConfig(p.dir(p.ca, p.ca, p.evil, localhost, time.Time{}, time.Time{})) },
			server:     func() *Config { return testConfig(good) },
			clientWant: ErrUnknownAuthority, serverWant: ErrUnknownAuthority, clientRemote: true,
			clientText: "does not trust this side's certificate", serverText: "the client's certificate is not signed by a CA",
		},
		{
			name:       "expired server cert",
			client:     func() *Config { return testConfig(good) },
			server:     func() *Config { return testConfig(p.dir(p.ca, p.ca, p.ca, localhost, past, time.Time{})) },
			clientWant: ErrCertificateExpired, serverWant: ErrBadCertificate,
			clientText: "the agent's certificate has expired", serverText: "the client rejected this agent's certificate",
		},
		{
			name:       "expired client cert",
			client:     func() *Config { return testConfig(p.dir(p.ca, p.ca, p.ca, localhost, time.Time{}, past)) },
			server:     func() *Config { return testConfig(good) },
			clientWant: ErrCertificateExpired, serverWant: ErrCertificateExpired, clientRemote: true,
			clientText: "expired", serverText: "the client's certificate has expired",
		},
		{
			name:   "wrong host name",
			client: func() *Config { return testConfig(good) },
			server: func() *Config {
				return testConfig(p.dir(p.ca, p.ca, p.ca, []string{"other.example"}, time.Time{}, time.Time{}))
			},
			clientWant: ErrHostnameMismatch, serverWant: ErrBadCertificate,
			clientText: `does not name the address dialled "127.0.0.1"`, serverText: "names the address the client dialled",
		},
		{
			name:   "client DN not allowed",
			client: func() *Config { return testConfig(good) },
			server: func() *Config {
				c := testConfig(good)
				c.AllowedDNs = []string{"CN=someone-else,O=mig2 test", "C=GB,O=*"}
				return c
			},
			clientWant: ErrNotAuthorized, serverWant: ErrNotAuthorized, clientRemote: true,
			clientText: `"CN=src.example,O=mig2 test" is not in this agent's allow-list`, serverText: `DN "CN=src.example,O=mig2 test" is not in the allow-list`,
		},
		{
			name:       "plaintext client, TLS server",
			client:     func() *Config { return testConfig(nil) },
			server:     func() *Config { return testConfig(good) },
			clientWant: ErrTLSRequired, serverWant: ErrPlaintextPeer, clientRemote: true,
			clientText: "the agent requires TLS but this side is configured for plaintext", serverText: "the client is configured for plaintext",
		},
		{
			name:       "TLS client, plaintext server",
			client:     func() *Config { return testConfig(good) },
			server:     func() *Config { return testConfig(nil) },
			clientWant: ErrPlaintextPeer, serverWant: ErrTLSRequired, clientRemote: true,
			clientText: "this agent is configured for plaintext (insecure) connections", serverText: "the client speaks TLS but this agent is configured for plaintext",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			cerr, serr := dialPair(t, tc.client(), tc.server())
			if el := time.Since(start); el > 3*time.Second {
				t.Errorf("failure took %v; it must be immediate", el)
			}
			var cce, sce *ConnError
			if !errors.As(cerr, &cce) || !errors.Is(cerr, tc.clientWant) {
				t.Errorf("client: want %v, got %v", tc.clientWant, cerr)
			} else if cce.Remote != tc.clientRemote {
				t.Errorf("client: Remote=%v, want %v (%v)", cce.Remote, tc.clientRemote, cerr)
			}
			if !errors.As(serr, &sce) || !errors.Is(serr, tc.serverWant) {
				t.Errorf("server: want %v, got %v", tc.serverWant, serr)
			}
			if cerr != nil && !strings.Contains(cerr.Error(), tc.clientText) {
				t.Errorf("client error does not say %q:\n%v", tc.clientText, cerr)
			}
			if serr != nil && !strings.Contains(serr.Error(), tc.serverText) {
				t.Errorf("server error does not say %q:\n%v", tc.serverText, serr)
			}
			if !strings.HasPrefix(cerr.Error(), "v2proto: ") || !strings.HasPrefix(serr.Error(), "v2proto: ") {
				t.Errorf("errors must start with the package name: %q / %q", cerr, serr)
			}
			t.Logf("client: %v\nserver: %v", cerr, serr)
			if !IsAuthFailure(cerr) && !IsTLSMismatch(cerr) {
				t.Errorf("client error is neither an auth failure nor a TLS mismatch: %v", cerr)
			}
		})
	}
}

// TestAllowedDNForms: an allow-list entry matches in RFC 4514 order, in gnutls/libvirt order,
// and with wildcards.
func TestAllowedDNForms(t *testing.T) {
	creds, _ := testCreds(t) // client DN "CN=src.example,O=mig2 test"
	for _, allow := range [][]string{
		{"CN=src.example,O=mig2 test"},
		{"O=mig2 test,CN=src.example"},
		{"CN=nobody", "O=mig2 test,CN=*"},
		{"CN=src.*"},
	} {
		scfg := testConfig(creds)
		scfg.AllowedDNs = allow
		c, s := listenerPair(t, RoleSource, testConfig(creds), scfg)
		if s.PeerDN() != "CN=src.example,O=mig2 test" || c.PeerDN() != "CN=127.0.0.1,O=mig2 test" {
			t.Errorf("%v: peer DNs %q / %q", allow, s.PeerDN(), c.PeerDN())
		}
	}
}

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		p, s string
		want bool
	}{
		{"a", "a", true}, {"a", "b", false}, {"*", "", true}, {"*", "abc", true},
		{"a*c", "abc", true}, {"a*c", "ab", false}, {"*b*", "abc", true}, {"C=GB,*", "C=GB,O=x", true},
		{"a*b*c", "aXbYc", true}, {"a*b*c", "aXcYb", false},
	} {
		if got := glob(tc.p, tc.s); got != tc.want {
			t.Errorf("glob(%q, %q) = %v", tc.p, tc.s, got)
		}
	}
}

func TestLoadTLSDir(t *testing.T) {
	_, dir := testCreds(t)
	// Server-only and client-only directories load; a lone certificate does not.
	for _, tc := range []struct {
		remove  []string
		wantErr string
	}{
		{nil, ""},
		{[]string{ClientCertFile, ClientKeyFile}, ""},
		{[]string{ServerCertFile, ServerKeyFile}, ""},
		{[]string{ServerKeyFile}, ServerKeyFile},
		{[]string{CACertFile}, CACertFile},
		{[]string{ServerCertFile, ServerKeyFile, ClientCertFile, ClientKeyFile}, "neither"},
	} {
		d := t.TempDir()
		for _, f := range []string{CACertFile, ServerCertFile, ServerKeyFile, ClientCertFile, ClientKeyFile} {
			data, _ := os.ReadFile(filepath.Join(dir, f))
			if !contains(tc.remove, f) {
				os.WriteFile(filepath.Join(d, f), data, 0o600)
			}
		}
		_, err := LoadTLSDir(d)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("without %v: %v", tc.remove, err)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestTestcertsForQEMU checks the properties gnutls (QEMU's tls-creds-x509) insists on.
func TestTestcertsForQEMU(t *testing.T) {
	dir := t.TempDir()
	if err := testcerts.Write(dir, []string{"dst.example", "192.0.2.7"}, "CN=src.example,O=Example,C=GB"); err != nil {
		t.Fatal(err)
	}
	read := func(name string) *x509.Certificate {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(data)
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ca, srv, cli := read(CACertFile), read(ServerCertFile), read(ClientCertFile)
	if !ca.IsCA || !ca.BasicConstraintsValid || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("CA: want CA:TRUE and keyCertSign")
	}
	for name, c := range map[string]*x509.Certificate{"server": srv, "client": cli} {
		if c.IsCA || !c.BasicConstraintsValid {
			t.Errorf("%s: want CA:FALSE", name)
		}
		if c.KeyUsage&x509.KeyUsageDigitalSignature == 0 || c.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
			t.Errorf("%s: gnutls wants digitalSignature and keyEncipherment", name)
		}
		if err := c.CheckSignatureFrom(ca); err != nil {
			t.Errorf("%s: not signed by the CA: %v", name, err)
		}
	}
	if len(srv.ExtKeyUsage) != 1 || srv.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("server extKeyUsage %v", srv.ExtKeyUsage)
	}
	if len(cli.ExtKeyUsage) != 1 || cli.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("client extKeyUsage %v", cli.ExtKeyUsage)
	}
	for _, h := range []string{"dst.example", "192.0.2.7", "127.0.0.1", "localhost", "::1"} {
		if err := srv.VerifyHostname(h); err != nil {
			t.Errorf("server cert: %v", err)
		}
	}
	if got := SubjectDN(cli); got != "CN=src.example,O=Example,C=GB" {
		t.Errorf("client DN %q", got)
	}
	if got := subjectDNReversed(cli); got != "C=GB,O=Example,CN=src.example" {
		t.Errorf("client DN reversed %q", got)
	}
	if _, err := LoadTLSDir(dir); err != nil {
		t.Error(err)
	}
	for _, f := range []string{ServerKeyFile, ClientKeyFile} {
		st, _ := os.Stat(filepath.Join(dir, f))
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", f, st.Mode())
		}
	}
}
