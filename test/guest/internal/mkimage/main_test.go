package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"strconv"
	"testing"
)

// readCpio is a minimal newc reader for the tests.
func readCpio(t *testing.T, data []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	align := func() { off = (off + 3) &^ 3 }
	for {
		if off+110 > len(data) || string(data[off:off+6]) != "070701" {
			t.Fatalf("bad header at %d", off)
		}
		h := data[off : off+110]
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return uint32(v)
		}
		e := cpioEntry{mode: field(1), nlink: field(4), rmajor: field(9), rmin: field(10)}
		size, namesize := int(field(6)), int(field(11))
		off += 110
		e.name = string(data[off : off+namesize-1])
		off += namesize
		align()
		e.data = data[off : off+size]
		off += size
		align()
		if e.name == "TRAILER!!!" {
			if off != len(data) {
				t.Fatalf("%d bytes after trailer", len(data)-off)
			}
			return out
		}
		out = append(out, e)
	}
}

func TestInitramfsRoundTrip(t *testing.T) {
	init := []byte("\x7fELF pretend init of odd length")
	var buf bytes.Buffer
	if err := writeInitramfs(&buf, init); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	got := readCpio(t, raw)
	want := initramfsEntries(init)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("entries:\n got %v\nwant %v", got, want)
	}
	if got[1].rmajor != 5 || got[1].rmin != 1 || got[1].mode&sIFCHR == 0 {
		t.Errorf("dev/console = %+v, want char device 5:1", got[1])
	}
}

func TestLZ4Payload(t *testing.T) {
	img := append([]byte("MZ bzImage header ..."), append(lz4Magic, 1, 2, 3)...)
	p, err := lz4Payload(img)
	if err != nil || !bytes.Equal(p, append(lz4Magic, 1, 2, 3)) {
		t.Fatalf("lz4Payload = %x, %v", p, err)
	}
	for _, bad := range [][]byte{nil, []byte("no magic here"), append(lz4Magic, 0)} {
		if _, err := lz4Payload(bad); err == nil {
			t.Errorf("lz4Payload(%q) succeeded", bad)
		}
	}
}
