package main

import (
	"bytes"
	"compress/flate"
	"testing"
	"time"
	"unsafe"
)

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    config
		wantErr bool
	}{
		{in: "console=ttyS0 quiet", want: defaultConfig()},
		{in: "console=ttyS0 pti=on quiet qb_mem=256 qb_rate=50 qb_fill=text qb_hb=500 qb_corrupt=2 qb_verify=3\n",
			want: config{memMiB: 256, rateMiBps: 50, fill: fillText, heartbeat: 500 * time.Millisecond, corrupt: 2 * time.Second, verify: 3}},
		{in: "qb_mem=0 qb_fill=rand", want: config{memMiB: 0, heartbeat: time.Second}},
		{in: "qb_unknown=7 xqb_mem=5", want: defaultConfig()},
		{in: "qb_mem=abc", wantErr: true},
		{in: "qb_mem=-1", wantErr: true},
		{in: "qb_hb=0", wantErr: true},
		{in: "qb_fill=zeros", wantErr: true},
	} {
		got, err := parseCmdline(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseCmdline(%q) error = %v, wantErr %v", tc.in, err, tc.wantErr)
			continue
		}
		if err == nil && got != tc.want {
			t.Errorf("parseCmdline(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestPageDetectsEveryByte(t *testing.T) {
	for _, mode := range []fillMode{fillRand, fillText} {
		f := newPageFiller(mode)
		w := make([]uint64, pageWords)
		b := unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), pageSize)
		for _, pg := range []struct {
			p uint64
			g uint32
		}{{0, 0}, {1, 0}, {12345, 7}, {1 << 20, 1 << 31}} {
			f.fill(w, pg.p, pg.g)
			if !f.check(w, pg.p, pg.g) {
				t.Fatalf("%v: fresh page %d gen %d does not check", mode, pg.p, pg.g)
			}
			if f.check(w, pg.p, pg.g+1) {
				t.Errorf("%v: page %d gen %d also checks as gen %d", mode, pg.p, pg.g, pg.g+1)
			}
			if f.check(w, pg.p+1, pg.g) {
				t.Errorf("%v: page %d gen %d also checks as page %d", mode, pg.p, pg.g, pg.p+1)
			}
			for i := range b {
				b[i] ^= 0x01
				if f.check(w, pg.p, pg.g) {
					t.Fatalf("%v: flipped bit in byte %d of page %d not detected", mode, i, pg.p)
				}
				b[i] ^= 0x01
			}
		}
	}
}

func fillPages(mode fillMode, n int) []byte {
	f := newPageFiller(mode)
	w := make([]uint64, n*pageWords)
	for p := 0; p < n; p++ {
		f.fill(w[p*pageWords:(p+1)*pageWords], uint64(p), 0)
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&w[0])), n*pageSize)
}

func ratio(t *testing.T, data []byte) float64 {
	var buf bytes.Buffer
	zw, err := flate.NewWriter(&buf, flate.BestSpeed)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(data)
	zw.Close()
	return float64(len(data)) / float64(buf.Len())
}

// TestCompressibility checks the fill modes with deflate (weaker than the
// zstd QEMU uses): text compresses at least 3x, rand not at all, and text
// pages are not all the same block.
func TestCompressibility(t *testing.T) {
	const n = 1024 // 4 MiB
	text := fillPages(fillText, n)
	if r := ratio(t, text); r < 3 {
		t.Errorf("text fill compresses %.2fx, want >= 3x", r)
	} else {
		t.Logf("text fill: deflate ratio %.1fx", r)
	}
	if r := ratio(t, fillPages(fillRand, n)); r > 1.01 {
		t.Errorf("rand fill compresses %.2fx, want ~1x", r)
	}
	distinct := map[string]bool{}
	for p := 0; p < n; p++ {
		distinct[string(text[p*pageSize:(p+1)*pageSize])] = true
	}
	if len(distinct) != n {
		t.Errorf("text fill: %d distinct pages out of %d", len(distinct), n)
	}
	if !bytes.Contains(text, []byte(" migration ")) && !bytes.Contains(text, []byte(" the ")) {
		t.Errorf("text fill does not look like text: %q", text[:200])
	}
}

func BenchmarkFill(b *testing.B) {
	for _, mode := range []fillMode{fillRand, fillText} {
		b.Run(mode.String(), func(b *testing.B) {
			f := newPageFiller(mode)
			w := make([]uint64, pageWords)
			b.SetBytes(pageSize)
			for i := 0; b.Loop(); i++ {
				f.fill(w, uint64(i), 0)
			}
		})
	}
}

func BenchmarkCheck(b *testing.B) {
	for _, mode := range []fillMode{fillRand, fillText} {
		b.Run(mode.String(), func(b *testing.B) {
			f := newPageFiller(mode)
			w := make([]uint64, pageWords)
			f.fill(w, 1, 0)
			b.SetBytes(pageSize)
			for b.Loop() {
				if !f.check(w, 1, 0) {
					b.Fatal("check failed")
				}
			}
		})
	}
}
