package qbline

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Prefix starts every protocol line.
const Prefix = "QB "

// Kind words, the second token of a line.
const (
	KindStart     = "start"
	KindReady     = "ready"
	KindHeartbeat = "hb"
	KindVerify    = "verify"
	KindCorrupted = "corrupted"
	KindError     = "error"
)

// ErrNotProtocol is returned by Parse for a line that does not start with
// Prefix (kernel messages, echoed input, noise). Callers usually ignore it.
var ErrNotProtocol = errors.New("qbline: not a QB line")

// ErrMalformed is wrapped by every *ParseError.
var ErrMalformed = errors.New("qbline: malformed QB line")

// ParseError describes a QB line that could not be parsed.
type ParseError struct {
	Line   string // the input
	Reason string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("qbline: %s in %q", e.Reason, e.Line)
}

// Unwrap makes errors.Is(err, ErrMalformed) true.
func (e *ParseError) Unwrap() error { return ErrMalformed }

// Line is one parsed protocol line: *Start, *Ready, *Heartbeat, *Verify,
// *Corrupted or *GuestError. String gives the exact wire text (no newline).
type Line interface {
	Kind() string
	String() string
}

// Start is printed once when /init has read its configuration.
type Start struct {
	MemMiB int    // qb_mem: MiB to fill
	Rate   int    // qb_rate: MiB/s to dirty
	Fill   string // qb_fill: "rand" or "text"
}

// Ready is printed once the memory is filled.
type Ready struct {
	TouchedMiB int
	T          float64 // seconds since /init started
}

// Heartbeat is printed every qb_hb milliseconds.
type Heartbeat struct {
	Seq        int
	T          float64 // seconds since /init started
	DirtiedMiB float64 // cumulative MiB rewritten by the dirtier
	Rate       float64 // MiB/s dirtied since the previous heartbeat
}

// Verify reports a full verification of every byte of every touched page.
type Verify struct {
	Seq      int // heartbeat sequence number when the verify ran
	Bad      int // pages whose content differs from what the guest wrote
	Pages    int // pages checked
	FirstBad int // lowest bad page index, -1 when Bad == 0
	Req      int // request number ("verify K" on the console), 0 when automatic
}

// OK reports whether the verify found no bad page.
func (v Verify) OK() bool { return v.Bad == 0 }

// Corrupted is printed when the guest deliberately damaged a page (qb_corrupt).
type Corrupted struct {
	Page int
}

// GuestError is a fatal error inside the guest; the guest stops working after it.
type GuestError struct {
	Msg string
}

func (*Start) Kind() string      { return KindStart }
func (*Ready) Kind() string      { return KindReady }
func (*Heartbeat) Kind() string  { return KindHeartbeat }
func (*Verify) Kind() string     { return KindVerify }
func (*Corrupted) Kind() string  { return KindCorrupted }
func (*GuestError) Kind() string { return KindError }

// Error makes a GuestError usable as an error value.
func (e *GuestError) Error() string { return "guest error: " + e.Msg }

func (l *Start) String() string {
	return fmt.Sprintf("QB start mem_mib=%d rate=%d fill=%s", l.MemMiB, l.Rate, l.Fill)
}

func (l *Ready) String() string {
	return fmt.Sprintf("QB ready touched_mib=%d t=%s", l.TouchedMiB, ff(l.T))
}

func (l *Heartbeat) String() string {
	return fmt.Sprintf("QB hb seq=%d t=%s dirtied_mib=%s rate=%s", l.Seq, ff(l.T), ff(l.DirtiedMiB), ff(l.Rate))
}

func (l *Verify) String() string {
	return fmt.Sprintf("QB verify seq=%d bad=%d pages=%d first_bad=%d req=%d", l.Seq, l.Bad, l.Pages, l.FirstBad, l.Req)
}

func (l *Corrupted) String() string { return fmt.Sprintf("QB corrupted page=%d", l.Page) }

func (l *GuestError) String() string { return "QB error " + l.Msg }

func ff(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// Parse parses one console line (without its line terminator; trailing
// "\r" characters are dropped). A line without the QB prefix yields ErrNotProtocol;
// a malformed QB line yields a *ParseError.
func Parse(s string) (Line, error) {
	s = strings.TrimRight(s, "\r")
	if !strings.HasPrefix(s, Prefix) {
		return nil, ErrNotProtocol
	}
	rest := s[len(Prefix):]
	kind, body, _ := strings.Cut(rest, " ")
	bad := func(format string, a ...any) error {
		return &ParseError{Line: s, Reason: fmt.Sprintf(format, a...)}
	}
	if kind == KindError {
		if strings.TrimSpace(body) == "" {
			return nil, bad("empty error message")
		}
		return &GuestError{Msg: body}, nil
	}
	var want []string
	switch kind {
	case KindStart:
		want = []string{"mem_mib", "rate", "fill"}
	case KindReady:
		want = []string{"touched_mib", "t"}
	case KindHeartbeat:
		want = []string{"seq", "t", "dirtied_mib", "rate"}
	case KindVerify:
		want = []string{"seq", "bad", "pages", "first_bad", "req"}
	case KindCorrupted:
		want = []string{"page"}
	default:
		return nil, bad("unknown kind %q", kind)
	}
	f := map[string]string{}
	for _, tok := range strings.Split(body, " ") {
		if tok == "" {
			return nil, bad("empty field")
		}
		k, v, ok := strings.Cut(tok, "=")
		if !ok || k == "" {
			return nil, bad("field %q is not key=value", tok)
		}
		if v == "" {
			return nil, bad("field %q has an empty value", k)
		}
		if _, dup := f[k]; dup {
			return nil, bad("duplicate field %q", k)
		}
		f[k] = v
	}
	p := fieldParser{f: f}
	for _, k := range want {
		if _, ok := f[k]; !ok {
			return nil, bad("missing field %q", k)
		}
	}
	var l Line
	switch kind {
	case KindStart:
		l = &Start{MemMiB: p.nat("mem_mib"), Rate: p.nat("rate"), Fill: p.word("fill")}
	case KindReady:
		l = &Ready{TouchedMiB: p.nat("touched_mib"), T: p.float("t")}
	case KindHeartbeat:
		l = &Heartbeat{Seq: p.nat("seq"), T: p.float("t"), DirtiedMiB: p.float("dirtied_mib"), Rate: p.float("rate")}
	case KindVerify:
		v := &Verify{Seq: p.nat("seq"), Bad: p.nat("bad"), Pages: p.nat("pages"), FirstBad: p.int("first_bad"), Req: p.nat("req")}
		if p.err == nil {
			switch {
			case v.FirstBad < -1:
				p.err = fmt.Errorf("first_bad %d below -1", v.FirstBad)
			case v.Bad > v.Pages:
				p.err = fmt.Errorf("bad %d exceeds pages %d", v.Bad, v.Pages)
			case (v.Bad == 0) != (v.FirstBad == -1):
				p.err = fmt.Errorf("bad=%d inconsistent with first_bad=%d", v.Bad, v.FirstBad)
			case v.FirstBad >= v.Pages && v.Pages > 0:
				p.err = fmt.Errorf("first_bad %d outside %d pages", v.FirstBad, v.Pages)
			}
		}
		l = v
	case KindCorrupted:
		l = &Corrupted{Page: p.nat("page")}
	}
	if p.err != nil {
		return nil, bad("%v", p.err)
	}
	return l, nil
}

type fieldParser struct {
	f   map[string]string
	err error
}

func (p *fieldParser) int(k string) int {
	n, err := strconv.ParseInt(p.f[k], 10, 64)
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("field %s: %w", k, err)
	}
	return int(n)
}

func (p *fieldParser) nat(k string) int {
	n := p.int(k)
	if n < 0 && p.err == nil {
		p.err = fmt.Errorf("field %s: negative value %d", k, n)
	}
	return n
}

func (p *fieldParser) float(k string) float64 {
	v := p.f[k]
	// Only plain decimal numbers: no exponents, infinities or NaN, so that
	// String reproduces the input for every canonical line.
	ok := v != ""
	dot := false
	for i, c := range v {
		switch {
		case c >= '0' && c <= '9':
		case c == '.' && !dot && i > 0 && i < len(v)-1:
			dot = true
		case c == '-' && i == 0 && len(v) > 1:
		default:
			ok = false
		}
	}
	if !ok {
		if p.err == nil {
			p.err = fmt.Errorf("field %s: %q is not a decimal number", k, v)
		}
		return 0
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil && p.err == nil {
		p.err = fmt.Errorf("field %s: %w", k, err)
	}
	return n
}

func (p *fieldParser) word(k string) string { return p.f[k] }
