package testcerts

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseDN(t *testing.T) {
	for _, dn := range []string{"CN=client", "CN=client,O=Example,C=GB", `CN=a\,b,O=x`, "UID=u1,DC=example,DC=org"} {
		name, err := ParseDN(dn)
		if err != nil {
			t.Fatalf("%s: %v", dn, err)
		}
		if got := name.ToRDNSequence().String(); got != dn && dn != `CN=a\,b,O=x` && dn[:3] != "UID" {
			t.Errorf("%s renders as %s", dn, got)
		}
	}
	for _, bad := range []string{"", "CN", "XX=1", "CN="} {
		if _, err := ParseDN(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestWriteLoadsAsTLSPairs(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, []string{"192.0.2.7", "dst.example"}, ""); err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]string{{ServerCert, ServerKey}, {ClientCert, ClientKey}} {
		if _, err := tls.LoadX509KeyPair(filepath.Join(dir, pair[0]), filepath.Join(dir, pair[1])); err != nil {
			t.Errorf("%s: %v", pair[0], err)
		}
		data, _ := os.ReadFile(filepath.Join(dir, pair[1]))
		if b, _ := pem.Decode(data); b == nil || b.Type != "PRIVATE KEY" {
			t.Errorf("%s: want a PKCS#8 PEM key", pair[1])
		}
	}
	data, _ := os.ReadFile(filepath.Join(dir, ClientCert))
	b, _ := pem.Decode(data)
	c, _ := x509.ParseCertificate(b.Bytes)
	if c.Subject.CommonName != "mig2-client" {
		t.Errorf("default client DN: %v", c.Subject)
	}
}

func TestIssueValidity(t *testing.T) {
	ca, err := NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour)
	certPEM, _, err := ca.Issue(Options{Subject: "CN=old", Client: true, NotBefore: past.Add(-time.Hour), NotAfter: past})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(certPEM)
	c, _ := x509.ParseCertificate(b.Bytes)
	if !c.NotAfter.Before(time.Now()) {
		t.Error("NotAfter not honoured")
	}
}

func TestWriteWithOptionsValidity(t *testing.T) {
	ca, err := NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	soon := time.Now().Add(5 * time.Second).Truncate(time.Second)
	for _, tc := range []struct {
		name           string
		o              WriteOptions
		server, client bool // which leaf ends soon
	}{
		{"server", WriteOptions{ServerNotAfter: soon}, true, false},
		{"client", WriteOptions{ClientNotAfter: soon, ClientDN: "CN=src,O=x"}, false, true},
		{"neither", WriteOptions{Hosts: []string{"192.0.2.7"}}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := WriteWithOptions(dir, ca, tc.o); err != nil {
				t.Fatal(err)
			}
			for file, short := range map[string]bool{ServerCert: tc.server, ClientCert: tc.client} {
				data, _ := os.ReadFile(filepath.Join(dir, file))
				b, _ := pem.Decode(data)
				c, err := x509.ParseCertificate(b.Bytes)
				if err != nil {
					t.Fatal(err)
				}
				if got := c.NotAfter.Equal(soon); got != short {
					t.Errorf("%s NotAfter %v, want ending soon: %v", file, c.NotAfter, short)
				}
				if !short && c.NotAfter.Before(time.Now().AddDate(0, 11, 0)) {
					t.Errorf("%s NotAfter %v, want about a year", file, c.NotAfter)
				}
			}
			if _, err := tls.LoadX509KeyPair(filepath.Join(dir, ServerCert), filepath.Join(dir, ServerKey)); err != nil {
				t.Error(err)
			}
		})
	}
}
