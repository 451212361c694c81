package hooks

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"

	"libvirt.org/go/libvirtxml"
)

// MaxXMLSize bounds what the hook reads from stdin: a domain XML is a few KiB to a few hundred;
// anything past 16 MiB is not one.
const MaxXMLSize = 16 << 20

// ErrXMLTooLarge is returned by ReadInput for more than MaxXMLSize bytes.
var ErrXMLTooLarge = errors.New("hooks: domain XML on stdin is larger than 16 MiB")

// ReadInput reads everything libvirt writes to the hook's stdin (the domain XML), up to
// MaxXMLSize. The hook reads it for every call, even one it ignores, so that libvirt's writer
// never meets a closed pipe.
func ReadInput(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxXMLSize+1))
	if err != nil {
		return nil, fmt.Errorf("hooks: read the domain XML from stdin: %w", err)
	}
	if len(b) > MaxXMLSize {
		return nil, ErrXMLTooLarge
	}
	return b, nil
}

// XMLError is a domain XML the hook could not parse.
type XMLError struct {
	Err error
}

func (e *XMLError) Error() string { return fmt.Sprintf("hooks: parse the domain XML: %v", e.Err) }
func (e *XMLError) Unwrap() error { return e.Err }

// ParseDomainXML parses the domain XML libvirt passed on stdin. It must be one <domain> element
// with a name and nothing after it; elements libvirtxml does not model are skipped (a newer
// libvirt may add some).
func ParseDomainXML(b []byte) (*libvirtxml.Domain, error) {
	d := &libvirtxml.Domain{}
	dec := xml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(d); err != nil {
		return nil, &XMLError{Err: err}
	}
	// Nothing but blanks, comments and processing instructions may follow the element.
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, &XMLError{Err: err}
		}
		switch t := tok.(type) {
		case xml.Comment, xml.ProcInst:
		case xml.CharData:
			if strings.Trim(string(t), " \t\r\n") != "" {
				return nil, &XMLError{Err: fmt.Errorf("text after </domain>: %.40q", t)}
			}
		default:
			return nil, &XMLError{Err: fmt.Errorf("more after </domain>: %T", t)}
		}
	}
	if d.XMLName.Local != "domain" {
		return nil, &XMLError{Err: fmt.Errorf("root element is <%s>, not <domain>", d.XMLName.Local)}
	}
	if d.Name == "" {
		return nil, &XMLError{Err: errors.New("the domain has no <name>")}
	}
	return d, nil
}
