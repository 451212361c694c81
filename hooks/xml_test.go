package hooks

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// recordedXML reads testdata/xml/*.xml: domain XML as libvirt wrote it (virsh dumpxml
// --migratable, and the stdin a real libvirtd gave a qemu hook at migrate begin).
func recordedXML(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/xml/*.xml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/xml/*.xml: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = b
	}
	return out
}

func TestParseDomainXMLRecorded(t *testing.T) {
	for name, b := range recordedXML(t) {
		d, err := ParseDomainXML(b)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if d.Name == "" || d.UUID == "" || d.Devices == nil {
			t.Errorf("%s: parsed without name, uuid or devices: %+v", name, d)
		}
	}
}

// TestParseDomainXMLRoundTrip: what parses, marshals to XML that parses to the same domain.
func TestParseDomainXMLRoundTrip(t *testing.T) {
	for name, b := range recordedXML(t) {
		d, err := ParseDomainXML(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out, err := d.Marshal()
		if err != nil {
			t.Fatalf("%s: marshal: %v", name, err)
		}
		again, err := ParseDomainXML([]byte(out))
		if err != nil || !reflect.DeepEqual(again, d) {
			t.Errorf("%s: round trip changed the domain (%v)", name, err)
		}
	}
}

// TestParseDomainXMLTruncation: every proper prefix of a recorded XML (ignoring the trailing
// newline) is refused.
func TestParseDomainXMLTruncation(t *testing.T) {
	for name, b := range recordedXML(t) {
		b = bytes.TrimRight(b, " \t\r\n")
		for n := 0; n < len(b); n++ {
			if _, err := ParseDomainXML(b[:n]); err == nil {
				t.Errorf("%s: prefix of %d bytes parsed", name, n)
				break
			}
		}
	}
}

func TestParseDomainXMLRefuses(t *testing.T) {
	good := "<domain type='kvm'><name>g1</name><uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid></domain>"
	if _, err := ParseDomainXML([]byte(good + "\n<!-- c -->\n")); err != nil {
		t.Fatalf("a comment after </domain>: %v", err)
	}
	for what, s := range map[string]string{
		"empty":           "",
		"not xml":         "{\"json\": true}",
		"another root":    "<network><name>default</name></network>",
		"no name":         "<domain type='kvm'><uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid></domain>",
		"text after":      good + "garbage",
		"second element":  good + "<domain/>",
		"unclosed":        "<domain type='kvm'><name>g1</name>",
		"a stray < after": "<domain type='kvm'><name>g1</name></domain><",
	} {
		_, err := ParseDomainXML([]byte(s))
		var xe *XMLError
		if !errors.As(err, &xe) || !strings.HasPrefix(err.Error(), "hooks: ") {
			t.Errorf("%s: ParseDomainXML(%q) = %v; want an *XMLError", what, s, err)
		}
	}
}

func TestReadInput(t *testing.T) {
	b, err := ReadInput(strings.NewReader("<domain/>"))
	if err != nil || string(b) != "<domain/>" {
		t.Fatalf("ReadInput = %q, %v", b, err)
	}
	if _, err := ReadInput(bytes.NewReader(make([]byte, MaxXMLSize+1))); !errors.Is(err, ErrXMLTooLarge) {
		t.Fatalf("ReadInput(16 MiB + 1) = %v; want ErrXMLTooLarge", err)
	}
	if b, err := ReadInput(bytes.NewReader(make([]byte, MaxXMLSize))); err != nil || len(b) != MaxXMLSize {
		t.Fatalf("ReadInput(16 MiB) = %d bytes, %v", len(b), err)
	}
	if _, err := ReadInput(iotest.ErrReader(errors.New("boom"))); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("ReadInput(failing reader) = %v", err)
	}
}

// FuzzParseDomainXML: no panic; what parses has a name and survives a marshal round trip.
func FuzzParseDomainXML(f *testing.F) {
	for _, b := range recordedXML(f) {
		f.Add(b)
	}
	f.Add([]byte("<domain><name>x</name></domain>"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDomainXML(b)
		if err != nil {
			var xe *XMLError
			if !errors.As(err, &xe) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		if d.Name == "" {
			t.Fatalf("parsed a domain without a name from %q", b)
		}
		out, err := d.Marshal()
		if err != nil {
			return // libvirtxml cannot marshal every value it parsed (e.g. odd attributes); not ours
		}
		if _, err := ParseDomainXML([]byte(out)); err != nil {
			t.Fatalf("%q parsed, but its re-marshalled form %q does not: %v", b, out, err)
		}
	})
}
