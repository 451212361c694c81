package qbline

import (
	"errors"
	"reflect"
	"testing"
)

// The full parser suite (table, recorded lines, truncation, FuzzParseLine)
// is in package guest, which exposes Parse as ParseLine; this checks that
// every kind round-trips on its own.
func TestRoundTripEveryKind(t *testing.T) {
	for _, l := range []Line{
		&Start{MemMiB: 1024, Rate: 50, Fill: "text"},
		&Ready{TouchedMiB: 1024, T: 3.21},
		&Heartbeat{Seq: 9, T: 10.5, DirtiedMiB: 450.1, Rate: 49.9},
		&Verify{Seq: 9, Bad: 0, Pages: 262144, FirstBad: -1, Req: 4},
		&Corrupted{Page: 77},
		&GuestError{Msg: "mmap: cannot allocate memory"},
	} {
		got, err := Parse(l.String() + "\r")
		if err != nil || !reflect.DeepEqual(got, l) || got.Kind() != l.Kind() {
			t.Errorf("Parse(%q) = %#v, %v", l.String(), got, err)
		}
		if _, err := Parse(l.String()[:len(Prefix)+len(l.Kind())]); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse of the bare kind %q = %v, want ErrMalformed", l.Kind(), err)
		}
	}
}
