package guest

import (
	"bufio"
	"errors"
	"math"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/mig2/mig2/test/guest/qbline"
)

// recordedLines returns the QB lines of testdata/lines.txt.
func recordedLines(t testing.TB) []string {
	t.Helper()
	f, err := os.Open("testdata/lines.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		t.Fatal("no lines in testdata/lines.txt")
	}
	return out
}

func TestParseLineTable(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Line
		err  error // sentinel the error must wrap, nil = success
	}{
		{"QB start mem_mib=256 rate=50 fill=text", &StartLine{MemMiB: 256, Rate: 50, Fill: "text"}, nil},
		{"QB ready touched_mib=1024 t=3.25\r", &Ready{TouchedMiB: 1024, T: 3.25}, nil},
		{"QB hb seq=7 t=9.5 dirtied_mib=350.2 rate=49.9", &Heartbeat{Seq: 7, T: 9.5, DirtiedMiB: 350.2, Rate: 49.9}, nil},
		{"QB verify seq=3 bad=2 pages=100 first_bad=17 req=5", &VerifyResult{Seq: 3, Bad: 2, Pages: 100, FirstBad: 17, Req: 5}, nil},
		{"QB verify seq=3 bad=0 pages=100 first_bad=-1 req=0", &VerifyResult{Seq: 3, Pages: 100, FirstBad: -1}, nil},
		{"QB corrupted page=9", &Corrupted{Page: 9}, nil},
		{"QB error out of memory", &GuestError{Msg: "out of memory"}, nil},
		// unknown keys are skipped, field order is free
		{"QB hb rate=1 future=yes seq=2 dirtied_mib=0 t=1", &Heartbeat{Seq: 2, T: 1, Rate: 1}, nil},

		{"", nil, qbline.ErrNotProtocol},
		{"[    0.000000] Linux version 6.1.0", nil, qbline.ErrNotProtocol},
		{"verify 3", nil, qbline.ErrNotProtocol},
		{"QB", nil, qbline.ErrNotProtocol},
		{"QB ", nil, qbline.ErrMalformed},
		{"QB nonsense a=1", nil, qbline.ErrMalformed},
		{"QB error ", nil, qbline.ErrMalformed},
		{"QB corrupted", nil, qbline.ErrMalformed},
		{"QB corrupted page=", nil, qbline.ErrMalformed},
		{"QB corrupted page=-3", nil, qbline.ErrMalformed},
		{"QB corrupted page=x", nil, qbline.ErrMalformed},
		{"QB corrupted page=1 page=1", nil, qbline.ErrMalformed},
		{"QB corrupted  page=1", nil, qbline.ErrMalformed},
		{"QB corrupted page=1 ", nil, qbline.ErrMalformed},
		{"QB corrupted =1", nil, qbline.ErrMalformed},
		{"QB ready touched_mib=1 t=1e3", nil, qbline.ErrMalformed},
		{"QB ready touched_mib=1 t=NaN", nil, qbline.ErrMalformed},
		{"QB ready touched_mib=1 t=1.", nil, qbline.ErrMalformed},
		{"QB ready touched_mib=1 t=.5", nil, qbline.ErrMalformed},
		{"QB verify seq=1 bad=0 pages=10 first_bad=3 req=1", nil, qbline.ErrMalformed},
		{"QB verify seq=1 bad=2 pages=10 first_bad=-1 req=1", nil, qbline.ErrMalformed},
		{"QB verify seq=1 bad=11 pages=10 first_bad=0 req=1", nil, qbline.ErrMalformed},
		{"QB verify seq=1 bad=1 pages=10 first_bad=10 req=1", nil, qbline.ErrMalformed},
		{"QB verify seq=1 bad=0 pages=10 first_bad=-2 req=1", nil, qbline.ErrMalformed},
		{"QB hb seq=99999999999999999999 t=1 dirtied_mib=0 rate=0", nil, qbline.ErrMalformed},
	} {
		got, err := ParseLine(tc.in)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("ParseLine(%q) = %v, %v; want error %v", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseLine(%q) = %#v, %v; want %#v", tc.in, got, err, tc.want)
		}
	}
}

// TestParseLineRoundTrip: every recorded line is canonical, and values
// survive String -> ParseLine.
func TestParseLineRoundTrip(t *testing.T) {
	for _, s := range recordedLines(t) {
		l, err := ParseLine(s)
		if err != nil {
			t.Errorf("ParseLine(%q): %v", s, err)
			continue
		}
		if l.String() != s {
			t.Errorf("ParseLine(%q).String() = %q", s, l.String())
		}
	}
	for _, l := range []Line{
		&StartLine{MemMiB: math.MaxInt32, Rate: 0, Fill: "rand"},
		&Ready{TouchedMiB: 0, T: 0.001},
		&Heartbeat{Seq: 1 << 40, T: 123456.789, DirtiedMiB: 1e-7, Rate: -0.5},
		&VerifyResult{Seq: 0, Bad: 3, Pages: 3, FirstBad: 0, Req: 1 << 50},
		&Corrupted{Page: 0},
		&GuestError{Msg: "x = y  z"},
	} {
		got, err := ParseLine(l.String())
		if err != nil || !reflect.DeepEqual(got, l) {
			t.Errorf("round trip of %#v via %q = %#v, %v", l, l.String(), got, err)
		}
	}
}

// TestParseLineTruncated: no prefix of a valid line parses to the same
// value. Prefixes that end inside the last number may parse (a shorter
// number is a number), but never to the original line.
func TestParseLineTruncated(t *testing.T) {
	for _, s := range recordedLines(t) {
		for n := 0; n < len(s); n++ {
			p := s[:n]
			l, err := ParseLine(p)
			if err != nil {
				continue
			}
			if l.String() == s {
				t.Errorf("prefix %q of %q parses to the full line", p, s)
			}
			lastEq := strings.LastIndexByte(s, '=')
			if !strings.HasPrefix(s, "QB error ") && n <= lastEq+1 {
				t.Errorf("prefix %q of %q (cut before the last value) parsed as %q", p, s, l)
			}
		}
	}
}

func FuzzParseLine(f *testing.F) {
	for _, s := range recordedLines(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLine(s)
		if err != nil {
			if l != nil {
				t.Fatalf("ParseLine(%q) returned %v with error %v", s, l, err)
			}
			if !errors.Is(err, qbline.ErrNotProtocol) && !errors.Is(err, qbline.ErrMalformed) {
				t.Fatalf("ParseLine(%q): unclassified error %v", s, err)
			}
			return
		}
		// A parsed line re-encodes to a line that parses to the same value.
		again, err := ParseLine(l.String())
		if err != nil {
			t.Fatalf("ParseLine(%q) = %#v, but its String %q does not parse: %v", s, l, l.String(), err)
		}
		if !reflect.DeepEqual(again, l) {
			t.Fatalf("ParseLine(%q) = %#v, re-parsed %#v", s, l, again)
		}
		if again.String() != l.String() {
			t.Fatalf("String not stable: %q vs %q", again.String(), l.String())
		}
	})
}
