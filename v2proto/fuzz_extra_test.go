package v2proto

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"strings"
	"testing"
	"time"

	"github.com/mig2/mig2/v2proto/testcerts"
)

// FuzzErrLine: the plaintext error line of SPEC §2.4 ("MIG2-ERR token text\n"), as written by
// errLine, read back by readLine and parsed by parseErrLine. Whatever is written fits the limit
// and parses to what was written (when it was not cut); whatever is read stops at the first
// newline and the limit; parseErrLine accepts only lines with the prefix and a token.
func FuzzErrLine(f *testing.F) {
	f.Add(ErrLineTLSRequired, "this agent requires TLS")
	f.Add(ErrLinePlaintextOnly, "this agent is configured for plaintext (insecure) connections")
	f.Add(ErrLineNotAuthorized, `client certificate DN "CN=client,O=Example,C=GB" is not in this agent's allow-list`)
	f.Add(ErrLineBadPreamble, "expected the mig2 v2 preamble")
	f.Add(ErrLineBusy, "a migration of g1 is in progress")
	f.Add(ErrLineShuttingDown, "")
	f.Add("", "no token")
	f.Add("MIG2-ERR busy x\r\nMIG2-ERR", "two\nlines")
	f.Fuzz(func(t *testing.T, token, text string) {
		enc := errLine(token, text)
		if len(enc) > maxErrLine || !strings.HasPrefix(string(enc), errLinePrefix) || enc[len(enc)-1] != '\n' {
			t.Fatalf("errLine(%q, %q) = %q", token, text, enc)
		}
		tok, txt, ok := parseErrLine(string(enc))
		clean := token != "" && !strings.ContainsAny(token, " \r\n") && !strings.ContainsAny(text, "\r\n") &&
			len(errLinePrefix+token+" "+text) <= maxErrLine-1
		if clean && (!ok || tok != token || txt != text) {
			t.Fatalf("errLine(%q, %q) = %q parses to %q, %q, %v", token, text, enc, tok, txt, ok)
		}
		if ok && (tok == "" || strings.Contains(tok, " ")) {
			t.Fatalf("parseErrLine(%q) token %q", enc, tok)
		}

		// Any bytes as the stream: readLine stops at the first newline and at max.
		stream := token + text
		for _, max := range []int{1, 16, maxErrLine} {
			line := readLine(strings.NewReader(stream), max, time.Now().Add(time.Second))
			want := stream
			if i := strings.IndexByte(want, '\n'); i >= 0 {
				want = want[:i+1]
			}
			if len(want) > max {
				want = want[:max]
			}
			if line != want {
				t.Fatalf("readLine(%q, %d) = %q, want %q", stream, max, line, want)
			}
		}
		tok, _, ok = parseErrLine(stream)
		if ok != (strings.HasPrefix(stream, errLinePrefix) && tok != "") || strings.Contains(tok, " ") {
			t.Fatalf("parseErrLine(%q) = %q, %v", stream, tok, ok)
		}
	})
}

// globRef is the reference for glob: '*' is any run of bytes, every other byte is literal
// (dynamic programming over bytes; no backtracking, any bytes).
func globRef(pattern, s string) bool {
	// m[j]: pattern[:i] matches s[:j]
	m := make([]bool, len(s)+1)
	m[0] = true
	for i := 0; i < len(pattern); i++ {
		next := make([]bool, len(s)+1)
		for j := 0; j <= len(s); j++ {
			if pattern[i] == '*' {
				next[j] = m[j] || j > 0 && next[j-1]
			} else {
				next[j] = j > 0 && m[j-1] && s[j-1] == pattern[i]
			}
		}
		m = next
	}
	return m[len(s)]
}

// certWithDN returns a certificate that carries only a subject, encoded in the order given, or
// nil if the name has no DER encoding (ParseDN does not check that values are UTF-8; creating
// the certificate would fail).
func certWithDN(name pkix.Name) *x509.Certificate {
	raw, err := asn1.Marshal(name.ToRDNSequence())
	if err != nil {
		return nil
	}
	return &x509.Certificate{RawSubject: raw, Subject: name}
}

// FuzzMatchDN: client authorization by DN allow-list (SPEC §2.3). A DN that testcerts.ParseDN
// accepts is put in a certificate; MatchDN must then admit the certificate's own DN in both
// orders and "*", must treat a pattern without '*' as plain equality, and must agree with a
// byte-level reference matcher for any pattern.
func FuzzMatchDN(f *testing.F) {
	for _, dn := range []string{"CN=client,O=Example,C=GB", "CN=mig2-agent.dst,O=mig2 lab,L=London,C=GB", "CN=a\\,b,OU=x", "UID=42,DC=example,DC=org"} {
		f.Add(dn, dn)
		f.Add(dn, "*")
		f.Add(dn, "CN=*,O=Example,C=GB")
		f.Add(dn, "C=GB,O=Example,CN=client")
	}
	f.Add("CN=client", "C=GB,O=Example,CN=*")
	f.Add("CN=x", "**")
	f.Add("CN=", "")
	f.Add("", "")
	f.Add("BOGUS=1", "*")
	f.Fuzz(func(t *testing.T, dn, pattern string) {
		// globRef recurses: bound its work (an allow-list entry is short and has few stars).
		if len(pattern) > 128 || strings.Count(pattern, "*") > 3 || len(dn) > 256 {
			return
		}
		name, err := testcerts.ParseDN(dn)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "testcerts: ") {
				t.Fatalf("ParseDN(%q): error %q", dn, err)
			}
			return
		}
		if len(name.ExtraNames) == 0 {
			t.Fatalf("ParseDN(%q) accepted an empty DN", dn)
		}
		cert := certWithDN(name)
		if cert == nil {
			return
		}
		own, rev := SubjectDN(cert), subjectDNReversed(cert)
		if own == "" || rev == "" {
			t.Fatalf("ParseDN(%q): no subject DN in the certificate (%q, %q)", dn, own, rev)
		}
		for _, p := range []string{own, rev, "*"} {
			if !MatchDN(p, cert) {
				t.Fatalf("MatchDN(%q) refused the certificate of %q (DN %q / %q)", p, dn, own, rev)
			}
		}
		got := MatchDN(pattern, cert)
		if want := globRef(pattern, own) || globRef(pattern, rev); got != want {
			t.Fatalf("MatchDN(%q) on %q / %q = %v, reference %v", pattern, own, rev, got, want)
		}
		if !strings.Contains(pattern, "*") && got != (pattern == own || pattern == rev) {
			t.Fatalf("MatchDN(%q) without '*' on %q / %q = %v", pattern, own, rev, got)
		}
		// The DN parsed back from its own RFC 4514 text admits the same certificate.
		if again, err := testcerts.ParseDN(own); err == nil && certWithDN(again) != nil && !MatchDN(own, certWithDN(again)) {
			t.Fatalf("%q → %q → %v no longer matches", dn, own, again)
		}
	})
}
